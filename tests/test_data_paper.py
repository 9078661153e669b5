"""The paper authors' own teacher rationales (datasets.zip of distilling-step-by-step) as a source.

The archive does not reach the machines these tests run on: every test writes a small archive in
its published layout (``datasets/<name>/<name>_<split>.json``, ``datasets/<name>/llm/<split>_CoT_<i>.json``,
``datasets/gpt-neox/<name>/<split>.json``), with outputs written in the style of the authors' PaLM
outputs (few-shot continuations that run on into the next invented example).
"""

from __future__ import annotations

import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from mlx_distill.config import parse_config
from mlx_distill.data import Example, fetch_paper_archive, load_paper_rationales, parse_paper_output
from mlx_distill.errors import DistillError
from mlx_distill.pipeline import run_pipeline
from mlx_distill.testing.hub_cache import offline_hf_cache, put_cqa
from mlx_distill.testing.paper_archive import write_copy, write_gpt_neox, write_palm

CQA_OUTPUT = ("The answer must be a place where beavers live. Of the above choices, only canada has beavers. "
              "So the answer is (d) canada.\n\nQ: What is the best way to rest?\nAnswer Choices:\n(a) sleep")


def cqa_archive(root: Path, n: int = 5, batch: int = 2) -> list[Example]:
    """Archive rows c0..c{n-1} in the authors' order; ours come back in another order."""
    rows = [{"id": f"c{i}", "question": f"Where do beavers {i} live?", "choices": ["a", "b", "c", "canada", "e"],
             "answer": "canada" if i % 2 == 0 else "e", "abstractive_explanation": "", "extractive_explanation": ""}
            for i in range(n)]
    write_copy(root / "datasets", "cqa", "train", rows)
    write_palm(root / "datasets", "cqa", "train", [CQA_OUTPUT if i != 3 else "I am not sure about this one."
                                                   for i in range(n)], batch=batch)
    write_gpt_neox(root / "datasets", "cqa", "train",
                   ["  Beavers build dams in rivers. So the answer is (e) e.\n\nQ: next" for _ in range(n)])
    return [Example(id=r["id"], input=f"q{r['id']}", label=r["answer"]) for r in reversed(rows)]


def test_parsers_follow_the_authors_cuts():
    assert parse_paper_output("cqa", CQA_OUTPUT) == (
        "The answer must be a place where beavers live. Of the above choices, only canada has beavers.", "canada")
    svamp = "Jack had 8 pens and gave 3 away. 8 - 3 = 5. The answer is ( 8.0 - 3.0 ).\n\nQ: Tom had ( 2 ) cats"
    assert parse_paper_output("svamp", svamp) == ("Jack had 8 pens and gave 3 away. 8 - 3 = 5.", "( 8.0 - 3.0 )")
    esnli = "A man cannot sleep and run at once. Answer: contradiction\n\nPremise: A dog runs.\nHypothesis: x"
    assert parse_paper_output("esnli", esnli) == ("A man cannot sleep and run at once.", "contradiction")
    anli = "The premise says he was born in 1950. So the answer is entailment.\n\nPremise: Another one"
    assert parse_paper_output("anli", anli) == ("The premise says he was born in 1950.", "entailment")
    neox = "He was born in 1950. The answer is neutral.\n\nPremise: x"
    assert parse_paper_output("anli", neox, "paper-palm") == ("", "")
    assert parse_paper_output("anli", neox, "paper-gpt-neox") == ("He was born in 1950.", "neutral")
    assert parse_paper_output("cqa", "no answer phrase here") == ("", "")


def test_palm_rationales_are_matched_to_our_examples_by_id_across_batches(tmp_path):
    examples = cqa_archive(tmp_path)
    records = load_paper_rationales(tmp_path, "cqa", "paper-palm", examples)
    assert sorted(records) == ["c0", "c1", "c2", "c3", "c4"]
    assert records["c4"].rationale.startswith("The answer must be") and records["c4"].answer == "canada"
    assert records["c4"].agrees and records["c4"].accepted and records["c4"].teacher == "paper-palm"
    # c1's gold is "e": PaLM's "canada" disagrees but the paper trains on it (filter all) ...
    assert records["c1"].accepted and not records["c1"].agrees
    # ... and c3's output has no answer phrase: no rationale, not accepted.
    assert not records["c3"].accepted and not records["c3"].parse_ok
    gold = load_paper_rationales(tmp_path / "datasets", "cqa", "paper-palm", examples, filter="gold")
    assert [k for k, r in sorted(gold.items()) if r.accepted] == ["c0", "c2", "c4"]


def test_gpt_neox_outputs_come_from_their_own_folder(tmp_path):
    examples = cqa_archive(tmp_path)
    records = load_paper_rationales(tmp_path, "cqa", "paper-gpt-neox", examples)
    assert records["c1"].rationale == "Beavers build dams in rivers." and records["c1"].answer == "e"
    assert records["c1"].agrees and not records["c0"].agrees


def test_svamp_esnli_anli_are_matched_through_the_authors_copy(tmp_path):
    datasets = tmp_path / "datasets"
    write_copy(datasets, "svamp", "train", [{"input": "Body 1\nQ 1", "label": "( 1.0 + 2.0 )"},
                                            {"input": "Body 2\nQ 2", "label": "( 2.0 * 3.0 )"}])
    write_palm(datasets, "svamp", "train", ["1 + 2 = 3. The answer is ( 1.0 + 2.0 ).\n\nQ: x",
                                            "2 * 3 = 6. The answer is ( 2.0 * 3.0 )."])
    svamp = load_paper_rationales(tmp_path, "svamp", "paper-palm",
                                  [Example("chal-7", "Body 2\nQ 2", "( 2.0 * 3.0 )"),
                                   Example("chal-9", "Body 1\nQ 1", "( 1.0 + 2.0 )")])
    assert svamp["chal-7"].rationale == "2 * 3 = 6." and svamp["chal-9"].answer == "( 1.0 + 2.0 )"
    assert all(r.agrees for r in svamp.values())

    write_copy(datasets, "esnli", "valid", [{"premise": "A dog runs.", "hypothesis": "A dog sleeps.", "label": 2,
                                             "explanation_1": ""}])
    write_palm(datasets, "esnli", "valid", ["Running is not sleeping. Answer: contradiction"])
    ours = Example("h-1", "Premise: A dog runs.\nHypothesis: A dog sleeps.", "contradiction")
    esnli = load_paper_rationales(tmp_path, "esnli", "paper-palm", [ours], split="validation")
    assert esnli["h-1"].rationale == "Running is not sleeping." and esnli["h-1"].agrees

    write_copy(datasets, "anli1", "test", [{"uid": "u1", "premise": "p", "hypothesis": "h", "label": 1, "reason": ""}])
    write_palm(datasets, "anli1", "test", ["Nothing says so. So the answer is neutral."])
    anli = load_paper_rationales(tmp_path, "anli", "paper-palm", [Example("u1", "x", "neutral")], split="test")
    assert anli["u1"].answer == "neutral" and anli["u1"].rationale == "Nothing says so."


def test_bad_archives_are_refused_in_one_line(tmp_path):
    with pytest.raises(DistillError, match="not the unzipped datasets.zip"):
        load_paper_rationales(tmp_path, "cqa", "paper-palm", [])
    examples = cqa_archive(tmp_path)
    (tmp_path / "datasets" / "cqa" / "llm" / "train_CoT_2.json").unlink()
    with pytest.raises(DistillError, match=r"4 outputs for the 5 examples of cqa_train\.json"):
        load_paper_rationales(tmp_path, "cqa", "paper-palm", examples)
    with pytest.raises(DistillError, match="gpt-neox/svamp/train.json: not found"):
        write_copy(tmp_path / "datasets", "svamp", "train", [{"input": "x", "label": "y"}])
        load_paper_rationales(tmp_path, "svamp", "paper-gpt-neox", [])


def test_config_takes_the_paper_sources_for_the_papers_tasks_only(tmp_path):
    config = parse_config({"task": {"name": "cqa"}, "teacher": {"enabled": False},
                           "train": {"rationale_source": "paper-palm", "paper_rationales": "dss"}}, base_dir=tmp_path)
    assert config.train.paper_rationales == str(tmp_path / "dss")
    assert config.task.data.startswith("hf:tau/commonsense_qa@")
    with pytest.raises(DistillError, match="paper-gpt-neox.*not 'jsonl'"):
        parse_config({"task": {"name": "jsonl", "data": "d"}, "teacher": {"enabled": False},
                      "train": {"rationale_source": "paper-gpt-neox"}}, base_dir=tmp_path)


@pytest.fixture
def loopback_server(tmp_path):
    """A plain HTTP server on 127.0.0.1 serving ``tmp_path/www``: GitHub stands in for nothing else."""
    www = tmp_path / "www"
    www.mkdir()
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(www))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_archive_is_downloaded_once_and_unzipped_whole(tmp_path, loopback_server):
    www, url = loopback_server
    source = tmp_path / "source"
    examples = cqa_archive(source)
    with zipfile.ZipFile(www / "datasets.zip", "w") as archive:
        for path in sorted(source.rglob("*")):
            archive.write(path, path.relative_to(source))
    cache = tmp_path / "cache"
    folder = fetch_paper_archive(cache, url=f"{url}/datasets.zip")
    assert folder == cache / "datasets" and not list(cache.glob(".unpack-*")) and not (cache / "datasets.zip.part").exists()
    assert len(load_paper_rationales(cache, "cqa", "paper-palm", examples)) == 5
    (www / "datasets.zip").unlink()
    assert fetch_paper_archive(cache, url=f"{url}/datasets.zip") == folder  # no second download
    with pytest.raises(DistillError, match="download failed.*fetch-data paper-rationales"):
        fetch_paper_archive(tmp_path / "other", url=f"{url}/datasets.zip")
    (www / "datasets.zip").write_text("not a zip")
    with pytest.raises(DistillError, match="not a zip archive"):
        fetch_paper_archive(tmp_path / "third", url=f"{url}/datasets.zip")
    assert not (tmp_path / "third" / "datasets").exists()


@pytest.mark.slow
def test_a_run_trains_on_the_papers_rationales_without_a_teacher(tmp_path, monkeypatch, demo_models):
    cache = offline_hf_cache(tmp_path / "hf", monkeypatch)
    put_cqa(cache, n_train=20, n_dev=4, n_test=2)
    ids = [f"t{i}" for i in range(20)]
    write_copy(tmp_path / "dss" / "datasets", "cqa", "train",
               [{"id": i, "question": "", "choices": [], "answer": ""} for i in reversed(ids)])
    write_palm(tmp_path / "dss" / "datasets", "cqa", "train",
               [f"It is where thing {i[1:]} is. So the answer is (a) place {i[1:]}a.\n\nQ: next" for i in reversed(ids)])
    config = parse_config({"name": "paper", "runs_dir": str(tmp_path / "runs"), "task": {"name": "cqa"},
                           "teacher": {"enabled": False, "filter": "all"},
                           "train": {"student": str(demo_models["student"]), "rationale_source": "paper-palm",
                                     "paper_rationales": str(tmp_path / "dss"), "max_steps": 2, "eval_every": 2,
                                     "batch_size": 4, "lr": 1e-3}}, base_dir=tmp_path)
    events = []
    run_pipeline(config, on_event=events.append)
    said = [getattr(e, "message", "") for e in events]
    assert "18 training examples, 18 with a rationale" in said, said


def test_runs_made_before_paper_rationales_existed_are_not_taken_as_changed(tmp_path):
    from mlx_distill.pipeline.resume import stage_inputs  # the resume fingerprint's inputs

    plain = parse_config({"task": {"name": "jsonl", "data": "d"}, "teacher": {"enabled": False},
                          "train": {"rationale_source": "human"}}, base_dir=tmp_path)
    assert "paper_rationales" not in stage_inputs(plain)["train"]["train"]
    paper = parse_config({"task": {"name": "cqa"}, "teacher": {"enabled": False},
                          "train": {"rationale_source": "paper-palm", "paper_rationales": "dss"}}, base_dir=tmp_path)
    assert stage_inputs(paper)["train"]["train"]["paper_rationales"] == str(tmp_path / "dss")
