"""Task loaders on the real SVAMP/CQA files, on small files in the real e-SNLI/ANLI formats,
and on broken files (every error names file:line)."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from mlx_distill.data import TASKS, Example, TaskData, load_rationales, load_task
from mlx_distill.errors import DistillError

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SVAMP_DIR = SHARED_DATA / "svamp"
CQA_DIR = SHARED_DATA / "cqa_v1.0"
needs_svamp = pytest.mark.skipif(not (SVAMP_DIR / "SVAMP.json").is_file(), reason="shared/data/svamp absent")
needs_cqa = pytest.mark.skipif(not (CQA_DIR / "train_rand_split.jsonl").is_file(), reason="shared/data/cqa_v1.0 absent")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def all_ids(data: TaskData) -> list[str]:
    return [e.id for e in data.train + data.validation + data.test]


# --- SVAMP ------------------------------------------------------------------------------------

@needs_svamp
def test_svamp_follows_the_papers_split_and_input_format():
    records = json.loads((SVAMP_DIR / "SVAMP.json").read_text())
    order = np.random.RandomState(0).permutation(len(records))  # the paper's split, recomputed here
    paper_train = [records[i]["ID"] for i in order[:800]]
    paper_test = [records[i]["ID"] for i in order[800:]]
    assert paper_train[:3] == ["chal-994", "chal-860", "chal-299"]  # ANCHORS.md
    assert paper_test[:3] == ["chal-153", "chal-529", "chal-697"]

    data = load_task("svamp", SVAMP_DIR)
    assert [e.id for e in data.test] == paper_test
    train_ids = [e.id for e in data.train]
    assert sorted(train_ids + [e.id for e in data.validation]) == sorted(paper_train)
    assert len(data.validation) == 80
    # train keeps the permutation's order (validation removed)
    position = {id_: i for i, id_ in enumerate(paper_train)}
    assert [position[i] for i in train_ids] == sorted(position[i] for i in train_ids)

    by_id = {r["ID"]: r for r in records}
    for ex in data.train + data.test:
        rec = by_id[ex.id]
        assert ex.input == f"{rec['Body']}\n{rec['Question']}"
        assert ex.label == rec["Equation"]
    assert not set(all_ids(data)) - set(by_id)


@needs_svamp
def test_svamp_validation_depends_on_seed_test_does_not():
    a, b = load_task("svamp", SVAMP_DIR, seed=0), load_task("svamp", SVAMP_DIR, seed=1)
    assert [e.id for e in a.test] == [e.id for e in b.test]
    assert [e.id for e in a.validation] != [e.id for e in b.validation]
    assert load_task("svamp", SVAMP_DIR, seed=0) == a


@needs_svamp
def test_subsample_applies_to_train_only():
    full = load_task("svamp", SVAMP_DIR)
    half = load_task("svamp", SVAMP_DIR, subsample=0.5, seed=0)
    assert len(half.train) == 360
    assert set(e.id for e in half.train) < set(e.id for e in full.train)
    assert half.validation == full.validation and half.test == full.test
    assert half == load_task("svamp", SVAMP_DIR, subsample=0.5, seed=0)


# --- CommonsenseQA ----------------------------------------------------------------------------

@needs_cqa
def test_cqa_labels_are_choice_texts_with_cose_rationales():
    rows = [json.loads(line) for line in (CQA_DIR / "train_rand_split.jsonl").read_text().splitlines()]
    cose = {}
    for line in (CQA_DIR / "cose_train_v1.0.jsonl").read_text().splitlines():
        rec = json.loads(line)
        cose[rec["id"]] = rec["explanation"]["open-ended"].strip()
    by_id = {r["id"]: r for r in rows}

    data = load_task("cqa", CQA_DIR)
    assert len(data.train) + len(data.validation) + len(data.test) == len(rows)
    assert data.test and data.validation
    assert any("carved" in note and "test" in note for note in data.notes)
    for ex in data.train[:200] + data.test[:200]:
        rec = by_id[ex.id]
        texts = [c["text"] for c in rec["question"]["choices"]]
        gold = next(c["text"] for c in rec["question"]["choices"] if c["label"] == rec["answerKey"])
        assert ex.label == gold and ex.label in ex.choices and list(ex.choices) == texts
        assert ex.input == (f"{rec['question']['stem']}\nAnswer Choices:\n"
                            + "\n".join(f"({'abc'[i]}) {t}" for i, t in enumerate(texts)))
        assert ex.rationale == cose[ex.id]  # original case, not the _processed lower-case copy


def make_cqa_v111(folder: Path, n_train: int = 12, n_dev: int = 4) -> Path:
    """A CommonsenseQA v1.11-shaped folder (5 choices, train + dev) with CoS-E v1.11 files."""
    folder.mkdir(parents=True, exist_ok=True)

    def question(i, split):
        return {"answerKey": "ABCDE"[i % 5], "id": f"{split}{i:03d}",
                "question": {"question_concept": "x", "stem": f"Question {split} {i}?",
                             "choices": [{"label": k, "text": f"{split}{i}-{k.lower()}"} for k in "ABCDE"]}}

    write_jsonl(folder / "train_rand_split.jsonl", [question(i, "t") for i in range(n_train)])
    write_jsonl(folder / "dev_rand_split.jsonl", [question(i, "d") for i in range(n_dev)])
    write_jsonl(folder / "test_rand_split_no_answers.jsonl",
                [{"id": "x", "question": {"stem": "?", "choices": []}}])
    write_jsonl(folder / "cose_train_v1.11_processed.jsonl",
                [{"id": f"t{i:03d}", "explanation": {"open-ended": f"because {i}"}} for i in range(n_train)])
    write_jsonl(folder / "cose_dev_v1.11_processed.jsonl",
                [{"id": "d000", "explanation": {"open-ended": "dev reason"}}])
    return folder


def test_cqa_v111_uses_dev_as_test_and_five_choices(tmp_path):
    data = load_task("cqa", make_cqa_v111(tmp_path / "cqa"))
    assert [e.id for e in data.test] == ["d000", "d001", "d002", "d003"]
    assert len(data.train) + len(data.validation) == 12 and len(data.validation) == 1
    ex = next(e for e in data.train + data.validation if e.id == "t003")
    assert ex.label == "t3-d" and len(ex.choices) == 5 and ex.input.endswith("\n(e) t3-e")
    assert ex.rationale == "because 3"
    assert data.test[0].rationale == "dev reason" and data.test[1].rationale is None


# --- e-SNLI and ANLI (small files in the real formats) ----------------------------------------

ESNLI_COLUMNS = ["pairID", "gold_label", "Sentence1", "Sentence2", "Explanation_1",
                 "Sentence1_marked_1", "Sentence2_marked_1", "Sentence1_Highlighted_1",
                 "Sentence2_Highlighted_1"]


def write_esnli(path: Path, rows: list[tuple[str, str, str, str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(ESNLI_COLUMNS)
        for pair_id, label, s1, s2, expl in rows:
            writer.writerow([pair_id, label, s1, s2, expl, s1, s2, "{}", "{}"])
    return path


def test_esnli_loader_reads_the_csv_splits(tmp_path):
    labels = ["entailment", "neutral", "contradiction"]
    write_esnli(tmp_path / "esnli_train_1.csv", [(f"a{i}", labels[i % 3], f"A man, \"quoted\" {i}.",
                                                  f"He is {i}.", f"Because {i}.") for i in range(6)])
    write_esnli(tmp_path / "esnli_train_2.csv", [(f"b{i}", labels[i % 3], f"P{i}", f"H{i}", "") for i in range(4)])
    write_esnli(tmp_path / "esnli_dev.csv", [("v0", "neutral", "P", "H", "dev")])
    write_esnli(tmp_path / "esnli_test.csv", [("t0", "contradiction", "P", "H", "test"),
                                              ("t1", "entailment", "P2", "H2", "t")])
    data = load_task("esnli", tmp_path)
    assert [e.id for e in data.train] == [f"a{i}" for i in range(6)] + [f"b{i}" for i in range(4)]
    assert [e.id for e in data.validation] == ["v0"] and [e.id for e in data.test] == ["t0", "t1"]
    first = data.train[0]
    assert first.input == 'Premise: A man, "quoted" 0.\nHypothesis: He is 0.'
    assert first.label == "entailment" and first.rationale == "Because 0."
    assert data.train[6].rationale is None


def test_esnli_unknown_label_word_names_file_and_line(tmp_path):
    write_esnli(tmp_path / "esnli_train_1.csv", [("a", "entailment", "P", "H", "x"), ("b", "maybe", "P", "H", "x")])
    with pytest.raises(DistillError, match=r"esnli_train_1\.csv:3: unknown NLI label 'maybe'"):
        load_task("esnli", tmp_path)


def anli_row(uid, label, reason="", key="context"):
    return {"uid": uid, key: f"Premise {uid}.", "hypothesis": f"Hyp {uid}.", "label": label,
            "model_label": "n", "emturk": False, "genre": "wiki", "reason": reason, "tag": ""}


def test_anli_round_folder_and_rounds_root(tmp_path):
    for rnd in ("R1", "R2"):
        folder = tmp_path / "anli_v1.0" / rnd
        folder.mkdir(parents=True)
        write_jsonl(folder / "train.jsonl", [anli_row(f"{rnd}t{i}", "enc"[i % 3], f"reason {i}" if i else "")
                                             for i in range(5)])
        write_jsonl(folder / "dev.jsonl", [anli_row(f"{rnd}d0", "n")])
        write_jsonl(folder / "test.jsonl", [anli_row(f"{rnd}x0", "c", key="premise")])
    r1 = load_task("anli", tmp_path / "anli_v1.0" / "R1")
    assert [e.label for e in r1.train] == ["entailment", "neutral", "contradiction", "entailment", "neutral"]
    assert r1.train[0].rationale is None and r1.train[1].rationale == "reason 1"
    assert r1.train[0].input == "Premise: Premise R1t0.\nHypothesis: Hyp R1t0."
    assert [e.id for e in r1.validation] == ["R1d0"] and [e.id for e in r1.test] == ["R1x0"]
    both = load_task("anli", tmp_path / "anli_v1.0")
    assert len(both.train) == 10 and len(both.validation) == 2 and len(both.test) == 2
    assert any("R1, R2" in note for note in both.notes)


# --- the user's own data ----------------------------------------------------------------------

def test_jsonl_with_columns_and_derived_ids(tmp_path):
    rows = [{"question": f"q{i}", "answer": i % 2, "why": f"w{i}"} for i in range(20)]
    rows.append({"question": "q0", "answer": 0, "why": "again"})  # identical content -> distinct id
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    cols = {"input": "question", "label": "answer", "rationale": "why"}
    data = load_task("jsonl", path, columns=cols)
    assert len(data.train) == 17 and len(data.validation) == 2 and len(data.test) == 2
    ids = all_ids(data)
    assert len(set(ids)) == 21 and all(re.fullmatch(r"h-[0-9a-f]{12}(-2)?", i) for i in ids)
    assert load_task("jsonl", path, columns=cols) == data  # deterministic
    ex = next(e for e in data.train + data.validation + data.test if e.input == "q3")
    assert ex.label == "1" and ex.rationale == "w3"


def test_csv_folder_with_split_files(tmp_path):
    for split, n in (("train", 5), ("validation", 2), ("test", 3)):
        with (tmp_path / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "input", "label", "rationale"])
            for i in range(n):
                writer.writerow([f"{split}-{i}", f"text, with comma {i}", "yes", ""])
    data = load_task("csv", tmp_path)
    assert [len(data.train), len(data.validation), len(data.test)] == [5, 2, 3]
    assert data.train[0] == Example(id="train-0", input="text, with comma 0", label="yes")


def test_demo_task_loads():
    data = load_task("jsonl", REPO / "examples" / "demo")
    assert [len(data.train), len(data.validation), len(data.test)] == [600, 100, 100]
    assert all(e.rationale and e.label in e.input for e in data.train)


# --- bad files --------------------------------------------------------------------------------

def test_broken_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"input": "a", "label": "b"}\n{"input": "c", "label": \n{"input": "d", "label": "e"}\n')
    with pytest.raises(DistillError, match=r"train\.jsonl:2: broken JSON line"):
        load_task("jsonl", path)


def test_users_last_line_without_newline_is_read_or_named_never_dropped(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [json.dumps({"id": f"x{i}", "input": f"q{i}", "label": "b"}) for i in range(20)]
    path.write_text("\n".join(rows))  # an editor that does not end the file with a newline
    data = load_task("jsonl", path)
    assert "x19" in all_ids(data) and len(all_ids(data)) == 20
    path.write_text("\n".join(rows) + '\n{"id": "x20", "input": "q20", "lab')
    with pytest.raises(DistillError, match=r"train\.jsonl:21: broken JSON line"):
        load_task("jsonl", path)


def test_missing_field_names_field_line_and_fix(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"input": "a", "label": "b"}, {"input": "c", "answer": "d"}])
    with pytest.raises(DistillError, match=r"d\.jsonl:2: missing field 'label'; .*--columns label=.*task\.columns"):
        load_task("jsonl", path)
    cqa = tmp_path / "cqa"
    cqa.mkdir()
    write_jsonl(cqa / "train_rand_split.jsonl", [{"id": "1", "question": {"stem": "s"}, "answerKey": "A"}])
    with pytest.raises(DistillError, match=r"train_rand_split\.jsonl:1: missing field 'question\.choices'"):
        load_task("cqa", cqa)


def test_svamp_missing_field_and_broken_json_name_the_line(tmp_path):
    path = tmp_path / "SVAMP.json"
    path.write_text('[\n  {"ID": "a", "Body": "b", "Question": "q", "Equation": "( 1.0 )"},\n'
                    '  {"ID": "b", "Body": "b",\n   "Question": "q"}\n]\n')
    with pytest.raises(DistillError, match=r"SVAMP\.json:3: missing field 'Equation'"):
        load_task("svamp", tmp_path)
    path.write_text('[\n  {"ID": "a", "Body": "b", "Question": "q", "Equation": "( 1.0 )"},\n  {"ID": \n]\n')
    with pytest.raises(DistillError, match=r"SVAMP\.json:4: broken JSON"):
        load_task("svamp", tmp_path)


def test_empty_dataset_and_unknown_task(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DistillError, match=r"empty\.jsonl:1: empty dataset"):
        load_task("jsonl", tmp_path / "empty.jsonl")
    with pytest.raises(DistillError, match=r"unknown task 'gsm8k'; known tasks: " + ", ".join(TASKS)):
        load_task("gsm8k", tmp_path)
    with pytest.raises(DistillError, match="no such file"):
        load_task("svamp", tmp_path / "nowhere")


def test_duplicate_ids_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "x", "input": "a", "label": "b"},
                                              {"id": "y", "input": "c", "label": "d"},
                                              {"id": "x", "input": "e", "label": "f"}])
    with pytest.raises(DistillError, match=r"d\.jsonl:3: duplicate id 'x' \(first at .*d\.jsonl:1\)"):
        load_task("jsonl", path, validation_fraction=0.0)


# --- rationale files --------------------------------------------------------------------------

def rationale(id_, text="r", answer="a", **extra):
    return {"id": id_, "teacher": "t", "prompt_hash": "h", "raw": "raw", "rationale": text, "answer": answer,
            "agrees": True, "accepted": True, "parse_ok": True, "prompt_tokens": 10,
            "generated_tokens": 5, "seconds": 0.5, **extra}


def test_load_rationales_tolerates_torn_last_line_and_later_wins(tmp_path):
    path = tmp_path / "rationales.jsonl"
    lines = [json.dumps(rationale("1", "first")), json.dumps(rationale("2")), json.dumps(rationale("1", "second"))]
    path.write_text("\n".join(lines) + "\n" + '{"id": "3", "rationa')
    records = load_rationales(path)
    assert set(records) == {"1", "2"}
    assert records["1"].rationale == "second" and records["1"].generated_tokens == 5
    path.write_text("\n".join(lines))  # a whole last record without its newline is kept
    assert set(load_rationales(path)) == {"1", "2"} and load_rationales(path)["1"].rationale == "second"
    path.write_text(json.dumps({"id": 7, "rationale": None, "answer": "x"}) + "\n")
    minimal = load_rationales(path)["7"]
    assert minimal.rationale == "" and minimal.accepted and minimal.agrees is None


def test_load_rationales_bad_middle_line_and_missing_field(tmp_path):
    path = tmp_path / "rationales.jsonl"
    path.write_text(json.dumps(rationale("1")) + "\n{broken\n" + json.dumps(rationale("2")) + "\n")
    with pytest.raises(DistillError, match=r"rationales\.jsonl:2: broken JSON line"):
        load_rationales(path)
    path.write_text(json.dumps({"id": "1", "rationale": "r"}) + "\n")
    with pytest.raises(DistillError, match=r"rationales\.jsonl:1: rationale record has no 'answer'"):
        load_rationales(path)
    with pytest.raises(DistillError, match="not found"):
        load_rationales(tmp_path / "missing.jsonl")
