"""The built-in tasks read from the Hugging Face hub (issue #20).

Only the hub is mocked: each test fills a temporary HF cache (HF_HOME / HF_HUB_CACHE in tmp,
HF_HUB_OFFLINE=1) with small parquet files in each dataset's real hub layout and column names
(from the dataset cards), and the loader goes through the real ``huggingface_hub.snapshot_download``.
Sizes are the paper's splits scaled down.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlx_distill.data import load_task, parse_hub_spec
from mlx_distill.data.hub import HubSource
from mlx_distill.errors import DistillError
from mlx_distill.testing.cli_runner import assert_one_line_error, run_cli_process
from mlx_distill.testing.hub_cache import offline_hf_cache, put_cqa, put_dataset, put_svamp, svamp_record

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LABELS = ("entailment", "neutral", "contradiction")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    return offline_hf_cache(tmp_path / "hf", monkeypatch)


def test_svamp_from_the_hub_is_the_papers_split_whatever_the_hub_ships(hf_cache):
    put_svamp(hf_cache, [svamp_record(i) for i in range(1, 51)])
    data = load_task("svamp", None, seed=0)
    order = np.random.RandomState(0).permutation(50)
    assert [e.id for e in data.test] == [f"chal-{i + 1}" for i in order[40:]]
    assert sorted(e.id for e in data.train + data.validation) == sorted(f"chal-{i + 1}" for i in order[:40])
    assert (len(data.train), len(data.validation), len(data.test)) == (36, 4, 10)
    first = next(e for e in data.test if e.id == data.test[0].id)
    number = int(first.id.split("-")[1])
    assert first.input == f"Jack had {number} apples.\nHow many now{number}?"
    assert first.label == f"( {number}.0 + 1.0 )"
    assert any("hf:ChilleD/SVAMP" in note for note in data.notes)


def test_cqa_from_the_hub_uses_dev_as_test_and_joins_cose(hf_cache):
    put_cqa(hf_cache)
    data = load_task("cqa", "", seed=0)
    assert (len(data.train), len(data.validation), len(data.test)) == (18, 2, 8)
    assert [e.id for e in data.test] == [f"v{i}" for i in range(8)]
    example = data.test[3]
    assert example.input == ("Where is thing 3?\nAnswer Choices:\n(a) place 3a\n(b) place 3b\n(c) place 3c\n"
                             "(d) place 3d\n(e) place 3e")
    assert example.label == "place 3d" and len(example.choices) == 5
    assert all(e.rationale == f"because {e.id}" for e in data.train + data.validation + data.test)


def test_esnli_from_the_hub_parquet_branch_with_shards(hf_cache):
    def rows(prefix: str, n: int) -> list[dict]:
        return [{"premise": f"{prefix} premise {i}", "hypothesis": f"{prefix} hypothesis {i}", "label": i % 3,
                 "explanation_1": f"{prefix} why {i}", "explanation_2": "", "explanation_3": ""} for i in range(n)]

    train = rows("train", 30) + [{"premise": "p", "hypothesis": "h", "label": -1, "explanation_1": "",
                                   "explanation_2": "", "explanation_3": ""}]
    put_dataset(hf_cache, "esnli", {"plain_text/train/0000.parquet": train[:16], "plain_text/train/0001.parquet": train[16:],
                                    "plain_text/validation/0000.parquet": rows("dev", 5),
                                    "plain_text/test/0000.parquet": rows("test", 5)},
                revision="refs/convert/parquet")
    data = load_task("esnli", None)
    assert (len(data.train), len(data.validation), len(data.test)) == (30, 5, 5)
    assert data.train[4].input == "Premise: train premise 4\nHypothesis: train hypothesis 4"
    assert data.train[4].label == "neutral" and data.train[4].rationale == "train why 4"
    assert any("1 pairs without a gold label" in note for note in data.notes)


def test_anli_from_the_hub_reads_round_one_only_by_default(hf_cache):
    def rows(prefix: str, n: int) -> list[dict]:
        return [{"uid": f"{prefix}-{i}", "premise": f"P {prefix} {i}", "hypothesis": f"H {i}", "label": i % 3,
                 "reason": f"reason {i}"} for i in range(n)]

    put_dataset(hf_cache, "facebook/anli", {f"plain_text/{split}-00000-of-00001.parquet": rows(split, n)
                                            for split, n in (("train_r1", 20), ("dev_r1", 4), ("test_r1", 4),
                                                             ("train_r2", 9), ("dev_r2", 3), ("test_r2", 3))})
    data = load_task("anli", None)
    assert (len(data.train), len(data.validation), len(data.test)) == (20, 4, 4)
    assert data.test[2].id == "test_r1-2" and data.test[2].label == LABELS[2] and data.test[2].rationale == "reason 2"
    both = load_task("anli", "hf:facebook/anli:r1,r2")
    assert (len(both.train), len(both.validation), len(both.test)) == (29, 7, 7)


def test_offline_with_nothing_cached_is_one_line_naming_the_dataset_and_the_fetch_command(hf_cache):
    with pytest.raises(DistillError) as error:
        load_task("svamp")
    message = str(error.value)
    assert "hf:ChilleD/SVAMP" in message and "HF_HUB_OFFLINE" in message and "mlx-distill fetch-data svamp" in message
    assert "\n" not in message
    with pytest.raises(DistillError, match=r"fetch-data anli --data hf:facebook/anli:r2"):
        load_task("anli", "hf:facebook/anli:r2")


def test_fetch_data_offline_from_the_command_line(hf_cache):
    # A fresh process reads HF_HOME / HF_HUB_OFFLINE from the environment, as a user's shell sets them.
    assert_one_line_error(run_cli_process("fetch-data", "cqa"), "hf:tau/commonsense_qa", "mlx-distill fetch-data cqa")
    put_cqa(hf_cache)
    done = run_cli_process("fetch-data", "cqa")
    assert done.returncode == 0, done.stderr
    assert "18 train / 2 validation / 8 test" in done.stdout


def test_hub_specs_and_local_paths_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_hub_spec("hf:facebook/anli:r1@abc") == HubSource("facebook/anli", "r1", "abc")
    assert parse_hub_spec("ChilleD/SVAMP") == HubSource("ChilleD/SVAMP")
    assert parse_hub_spec("hf:esnli@refs/convert/parquet") == HubSource("esnli", "", "refs/convert/parquet")
    (tmp_path / "my" / "data").mkdir(parents=True)
    assert parse_hub_spec("my/data") is None  # a folder here wins
    assert parse_hub_spec("./x/y") is None and parse_hub_spec("train.jsonl") is None
    with pytest.raises(DistillError, match="hf:ORG/NAME"):
        parse_hub_spec("hf:not a repo")


@pytest.mark.skipif(not (SHARED / "svamp" / "SVAMP.json").is_file(), reason="needs /work/shared/data (build machines)")
def test_shared_svamp_gives_the_same_examples_locally_and_through_the_hub_layout(hf_cache):
    records = json.loads((SHARED / "svamp" / "SVAMP.json").read_text())
    put_svamp(hf_cache, records)
    local, hub = load_task("svamp", SHARED / "svamp"), load_task("svamp")
    for split in ("train", "validation", "test"):
        assert getattr(local, split) == getattr(hub, split)
    assert (len(local.train) + len(local.validation), len(local.test)) == (800, 200)


@pytest.mark.skipif(not (SHARED / "cqa_v1.0" / "train_rand_split.jsonl").is_file(),
                    reason="needs /work/shared/data (build machines)")
def test_shared_cqa_gives_the_same_examples_locally_and_through_the_hub_layout(hf_cache):
    folder = SHARED / "cqa_v1.0"
    lines = [json.loads(line) for line in (folder / "train_rand_split.jsonl").read_text().splitlines() if line.strip()]
    rows = [{"id": r["id"], "question": r["question"]["stem"], "question_concept": "",
             "choices": {"label": [c["label"] for c in r["question"]["choices"]],
                         "text": [c["text"] for c in r["question"]["choices"]]}, "answerKey": r["answerKey"]}
            for r in lines]
    put_dataset(hf_cache, "tau/commonsense_qa", {"data/train-00000-of-00001.parquet": rows[:-500],
                                                 "data/validation-00000-of-00001.parquet": rows[-500:]})
    cose = [json.loads(line) for line in (folder / "cose_train_v1.0.jsonl").read_text().splitlines() if line.strip()]
    put_dataset(hf_cache, "Salesforce/cos_e", {"v1.0/train-00000-of-00001.parquet": [
        {"id": c["id"], "question": "", "choices": [], "answer": "", "abstractive_explanation": c["explanation"]["open-ended"],
         "extractive_explanation": c["explanation"]["selected"]} for c in cose],
        "v1.0/validation-00000-of-00001.parquet": [{"id": "none", "question": "", "choices": [], "answer": "",
                                                    "abstractive_explanation": "", "extractive_explanation": ""}]})
    local = load_task("cqa", folder)
    hub = load_task("cqa", "hf:tau/commonsense_qa", human_rationales="hf:Salesforce/cos_e:v1.0")
    by_id = lambda data: {e.id: e for e in data.train + data.validation + data.test}  # noqa: E731
    assert by_id(local) == by_id(hub) and len(by_id(hub)) == len(lines)
    assert sum(1 for e in by_id(hub).values() if e.rationale) > 7000

