"""Loaders for each task's own published files; each returns ``{split: [(Example, "file:line")]}``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mlx_distill.data.readers import (SPLIT_NAMES, content_id, dev_beside, find_one, find_split_file,
                                      get_field, read_csv, read_json_array, read_jsonl, require_rows)
from mlx_distill.data.records import Example, Row
from mlx_distill.errors import DistillError

NLI_LABELS = ("entailment", "neutral", "contradiction")
_NLI_LABEL_ALIASES = {
    "e": "entailment", "n": "neutral", "c": "contradiction",
    "0": "entailment", "1": "neutral", "2": "contradiction",
    **{word: word for word in NLI_LABELS},
}
COLUMN_KEYS = ("input", "label", "rationale", "id")
Splits = dict[str, list[Row]]


def nli_input(premise: str, hypothesis: str) -> str:
    """The student input for a premise/hypothesis pair (esnli, anli)."""
    return f"Premise: {premise}\nHypothesis: {hypothesis}"


def multiple_choice_input(question: str, choices: list[str] | tuple[str, ...]) -> str:
    """The paper's CQA input: ``question\\nAnswer Choices:\\n(a) c0\\n(b) c1...``."""
    lines = [f"({chr(ord('a') + i)}) {choice}" for i, choice in enumerate(choices)]
    return f"{question}\nAnswer Choices:\n" + "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Built-in datasets


def load_svamp(root: Path, notes: list[str]) -> Splits:
    """SVAMP.json -> the paper's 800/200 train/test split (numpy RandomState(0) permutation)."""
    path = find_one(root, ["SVAMP.json", "svamp.json"], "svamp", "the SVAMP.json file")
    rows = [svamp_example(rec, f"{path}:{line_no}") for line_no, rec in read_json_array(path)]
    require_rows(rows, path)
    return svamp_paper_split(rows, notes)


def svamp_example(rec: dict, where: str) -> Row:
    """One SVAMP problem (``ID``, ``Body``, ``Question``, ``Equation``) as the paper builds it."""
    body, question = get_field(rec, "Body", where), get_field(rec, "Question", where)
    # Exactly the paper's f"{Body}\n{Question}", even where Body has no final period.
    ex = Example(id=str(get_field(rec, "ID", where)), input=f"{body}\n{question}",
                 label=str(get_field(rec, "Equation", where)).strip())
    return ex, where


def svamp_paper_split(rows: list[Row], notes: list[str]) -> Splits:
    """The paper's 80/20 train/test split of all problems in SVAMP.json order."""
    order = np.random.RandomState(seed=0).permutation(len(rows))
    n_train = round(len(rows) * 0.8)
    notes.append(f"train/test: the paper's {n_train}/{len(rows) - n_train} split "
                 "(numpy RandomState(0) permutation)")
    return {"train": [rows[i] for i in order[:n_train]], "test": [rows[i] for i in order[n_train:]]}


def load_cqa(root: Path, notes: list[str]) -> Splits:
    """CommonsenseQA jsonl; the dev file (when present) is the test split, as in the paper."""
    train_path = find_split_file(root, "train", ".jsonl", exclude="cose")
    if train_path is None:
        raise DistillError(f"{root}: no CommonsenseQA train file (e.g. train_rand_split.jsonl) found")
    splits = {"train": _read_cqa_file(train_path)}
    dev_path = dev_beside(train_path)
    if dev_path is not None:
        splits["test"] = _read_cqa_file(dev_path)
        notes.append(f"test: the dataset's dev split ({dev_path.name}), as in the paper")
    return splits


def _read_cqa_file(path: Path) -> list[Row]:
    rows = []
    for line_no, rec in read_jsonl(path):
        where = f"{path}:{line_no}"
        question = get_field(rec, "question", where)
        if not isinstance(question, dict):
            raise DistillError(f"{where}: 'question' must be an object with 'stem' and 'choices'")
        stem = get_field(question, "stem", where, "question.stem")
        choices = get_field(question, "choices", where, "question.choices")
        if not isinstance(choices, list) or len(choices) < 2:
            raise DistillError(f"{where}: 'question.choices' must list at least two choices")
        texts = [str(get_field(c, "text", where, "question.choices[].text")) for c in choices]
        keys = [str(get_field(c, "label", where, "question.choices[].label")) for c in choices]
        answer_key = get_field(rec, "answerKey", where,
                               fix="every example needs its answer (the unlabeled test file cannot be used)")
        rows.append(cqa_example(str(get_field(rec, "id", where)), str(stem), keys, texts, str(answer_key), where))
    require_rows(rows, path)
    return rows


def cqa_example(ex_id: str, stem: str, keys: list[str], texts: list[str], answer_key: str, where: str) -> Row:
    """One CommonsenseQA question: the paper's multiple-choice input, the answer's text as label."""
    if answer_key not in keys:
        raise DistillError(f"{where}: answerKey {answer_key!r} is not one of the choice labels {keys}")
    choices = tuple(texts)
    ex = Example(id=ex_id, input=multiple_choice_input(stem, choices), label=choices[keys.index(answer_key)],
                 choices=choices)
    return ex, where


def load_esnli(root: Path, notes: list[str]) -> Splits:
    """e-SNLI CSVs: esnli_train_*.csv, esnli_dev.csv (validation), esnli_test.csv (test)."""
    if root.is_file():
        return {"train": _read_esnli_file(root)}
    train_files = sorted(root.glob("esnli_train*.csv"))
    if not train_files:
        raise DistillError(f"{root}: no e-SNLI files (esnli_train_1.csv, esnli_dev.csv, esnli_test.csv) found")
    splits = {"train": [row for p in train_files for row in _read_esnli_file(p)]}
    for split, name in (("validation", "esnli_dev.csv"), ("test", "esnli_test.csv")):
        if (root / name).is_file():
            splits[split] = _read_esnli_file(root / name)
    return splits


def _read_esnli_file(path: Path) -> list[Row]:
    rows = []
    for where, rec in read_csv(path):
        premise, hypothesis = get_field(rec, "Sentence1", where), get_field(rec, "Sentence2", where)
        rows.append(nli_example(premise, hypothesis, get_field(rec, "gold_label", where), rec.get("Explanation_1"),
                                rec.get("pairID"), where))
    require_rows(rows, path)
    return rows


def nli_example(premise: Any, hypothesis: Any, label: Any, rationale: Any, ex_id: Any, where: str) -> Row:
    """One NLI pair (esnli, anli); an example without an id gets one from its content."""
    word = nli_label(label, where)
    text = nli_input(str(premise), str(hypothesis))
    rationale = (rationale.strip() or None) if isinstance(rationale, str) else None
    return Example(id=str(ex_id or content_id(text, word)), input=text, label=word, rationale=rationale), where


def load_anli(root: Path, notes: list[str]) -> Splits:
    """ANLI jsonl: a round folder (train/dev/test.jsonl) or a root with R1/R2/R3 (combined)."""
    if root.is_file():
        return {"train": _read_anli_file(root)}
    rounds = sorted(p for p in root.iterdir() if p.is_dir() and p.name.upper() in ("R1", "R2", "R3"))
    if rounds:
        notes.append(f"rounds {', '.join(p.name for p in rounds)} combined (the paper uses R1 only: "
                     "give the R1 folder for that)")
    splits: Splits = {}
    for folder in rounds or [root]:
        for split, names in SPLIT_NAMES.items():
            found = next((folder / f"{n}.jsonl" for n in names if (folder / f"{n}.jsonl").is_file()), None)
            if found is not None:
                splits.setdefault(split, []).extend(_read_anli_file(found))
    if "train" not in splits:
        raise DistillError(f"{root}: no ANLI train.jsonl found (expected R1/train.jsonl or train.jsonl)")
    return splits


def _read_anli_file(path: Path) -> list[Row]:
    rows = []
    for line_no, rec in read_jsonl(path):
        where = f"{path}:{line_no}"
        if "context" in rec:
            premise = rec["context"]
        else:
            premise = get_field(rec, "premise", where, "premise (or context)")
        rows.append(nli_example(premise, get_field(rec, "hypothesis", where), get_field(rec, "label", where),
                                rec.get("reason"), rec.get("uid"), where))
    require_rows(rows, path)
    return rows


def nli_label(value: Any, where: str) -> str:
    """The NLI label word for ``value`` (a word, e/n/c, or 0/1/2)."""
    word = _NLI_LABEL_ALIASES.get(str(value).strip().lower())
    if word is None:
        raise DistillError(f"{where}: unknown NLI label {value!r}; use one of {', '.join(NLI_LABELS)} "
                           "(or e/n/c, 0/1/2)")
    return word


# ---------------------------------------------------------------------------------------------
# The user's own data (jsonl / csv)


def load_user(root: Path, notes: list[str], columns: dict[str, str] | None, fmt: str) -> Splits:
    """A user's jsonl/csv file, or a folder with train/validation/test files."""
    names = dict(zip(COLUMN_KEYS, COLUMN_KEYS))
    for key, value in (columns or {}).items():
        if key not in COLUMN_KEYS:
            raise DistillError(f"columns: unknown key {key!r}; map any of {', '.join(COLUMN_KEYS)} "
                               "to your column names (--columns or task.columns)")
        names[key] = value
    ext = f".{fmt}"
    if root.is_file():
        return {"train": _read_user_file(root, names, fmt)}
    splits = {}
    for split in SPLIT_NAMES:
        found = find_split_file(root, split, ext)
        if found is not None:
            splits[split] = _read_user_file(found, names, fmt)
    if "train" not in splits:
        raise DistillError(f"{root}: no train{ext} found; put train{ext} (and optionally "
                           f"validation{ext}, test{ext}) in the folder, or give one {fmt} file")
    if len(splits) > 1:
        notes.append(f"splits from files: {', '.join(splits)}")
    return splits


def _read_user_file(path: Path, names: dict[str, str], fmt: str) -> list[Row]:
    if fmt == "jsonl":
        records: Iterator[tuple[str, dict]] = ((f"{path}:{n}", r) for n, r in read_jsonl(path))
    else:
        records = read_csv(path)
    rows, seen_content = [], {}
    for where, rec in records:
        text = _text(get_field(rec, names["input"], where, fix=_column_fix("input")), where, "input")
        label = _text(get_field(rec, names["label"], where, fix=_column_fix("label")), where, "label")
        rationale = rec.get(names["rationale"])
        rationale = (_text(rationale, where, "rationale").strip() or None) if rationale is not None else None
        ex_id = rec.get(names["id"])
        if ex_id in (None, ""):
            base = content_id(text, label)
            seen_content[base] = seen_content.get(base, 0) + 1
            # Identical rows get distinct ids that are still deterministic.
            ex_id = base if seen_content[base] == 1 else f"{base}-{seen_content[base]}"
        rows.append((Example(id=str(ex_id), input=text, label=label, rationale=rationale), where))
    require_rows(rows, path)
    return rows


def _column_fix(key: str) -> str:
    return (f"add it, or map your column: --columns {key}=<your column> on the command line, "
            f"task.columns = {{ {key} = \"<your column>\" }} in a TOML config")


def parse_columns(text: str) -> dict[str, str]:
    """``input=question,label=answer`` (the ``--columns`` flag) as the dict ``task.columns`` gives.

    Raises:
        DistillError: a part without ``=``, an unknown key, an empty column name, or a key twice.
    """
    columns: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = (piece.strip() for piece in part.partition("="))
        if not sep or not key or not value:
            raise DistillError(f"--columns {text!r}: {part.strip()!r} is not KEY=COLUMN; write e.g. "
                               "--columns input=question,label=answer")
        if key not in COLUMN_KEYS:
            raise DistillError(f"--columns: unknown key {key!r}; map any of {', '.join(COLUMN_KEYS)} "
                               "to your column names, e.g. --columns input=question,label=answer")
        if key in columns:
            raise DistillError(f"--columns {text!r} names {key!r} twice; give each key once")
        columns[key] = value
    return columns


def _text(value: Any, where: str, what: str) -> str:
    if isinstance(value, (dict, list)):
        raise DistillError(f"{where}: {what} must be text or a number, not {type(value).__name__}")
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# Human rationales joined by id


def join_human_rationales(root: Path, source: str | Path | None, splits: Splits, notes: list[str]) -> Splits:
    """Set ``Example.rationale`` from CoS-E-style files (``source``, else ``cose_*.jsonl`` beside the data)."""
    if source is not None:
        source = Path(source).expanduser()
        if not source.exists():
            raise DistillError(f"{source}: human rationale file not found")
        files = cose_files(source) if source.is_dir() else [source]
        if not files:
            raise DistillError(f"{source}: no rationale files (cose_*.jsonl) in this folder")
    else:
        files = cose_files(root if root.is_dir() else root.parent)
    if not files:
        return splits
    by_id: dict[str, str] = {}
    for path in files:
        for line_no, rec in read_jsonl(path):
            where = f"{path}:{line_no}"
            explanation = rec.get("explanation")
            if isinstance(explanation, dict):
                text = get_field(explanation, "open-ended", where, "explanation.open-ended")
            else:
                text = get_field(rec, "rationale", where, "rationale (or explanation.open-ended)")
            by_id[str(get_field(rec, "id", where))] = str(text or "").strip()
    return join_rationales_by_id(by_id, splits, notes, ", ".join(p.name for p in files))


def join_rationales_by_id(by_id: dict[str, str], splits: Splits, notes: list[str], source: str) -> Splits:
    """Set ``Example.rationale`` from ``by_id`` (example id -> text); ``source`` names where they came from."""
    joined, total, out = 0, 0, {}
    for split, rows in splits.items():
        new_rows = []
        for ex, where in rows:
            total += 1
            text = by_id.get(ex.id)
            if text:
                joined += 1
                ex = Example(ex.id, ex.input, ex.label, text, ex.choices)
            new_rows.append((ex, where))
        out[split] = new_rows
    notes.append(f"human rationales from {source} joined for {joined} of {total} examples")
    return out


def cose_files(folder: Path) -> list[Path]:
    """CoS-E files in a folder, preferring original case over the lower-cased ``_processed`` copies."""
    files = sorted(folder.glob("cose_*.jsonl"))
    names = {p.name for p in files}
    return [p for p in files if not (p.name.endswith("_processed.jsonl")
                                     and p.name.replace("_processed", "") in names)]
