"""Answer a file of questions: the ``jsonl`` / ``csv`` tasks' format, resumable, scored when labelled.

Rows have ``input`` and optionally ``id`` and ``label`` (names mappable as ``--columns`` maps a
task's). Answers are appended to the output JSONL one batch at a time, so a stopped run resumes
where it stopped: ids already answered are skipped.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from mlx_distill.data import read_csv
from mlx_distill.errors import DistillError
from mlx_distill.events import ShouldStop, never_stop
from mlx_distill.files import JsonlWriter, read_jsonl_records
from mlx_distill.metrics import is_correct
from mlx_distill.serve.answers import Question, answer_batch

FORMATS = ("jsonl", "csv")


@dataclass(frozen=True)
class QuestionRow:
    """One question of the file, and where it came from ("file:line")."""

    id: str
    input: str
    label: str | None
    where: str


@dataclass(frozen=True)
class FileSummary:
    """What `answer_file` did."""

    answered: int  # this time
    skipped: int  # already in the output file
    total: int
    labelled: int  # rows of the output with a label (all runs)
    correct: int
    truncated: int  # questions cut to the student's input limit (this time)
    stopped: bool
    seconds: float

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


def _text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DistillError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8") from None


def _records(path: Path, fmt: str) -> Iterator[tuple[str, Any]]:
    if fmt == "csv":
        yield from read_csv(path)  # the tasks' strict reader: no value lands in the wrong column
        return
    try:
        text = _text(path, path.read_bytes())
    except OSError as error:
        raise DistillError(f"{path}: cannot read ({error.strerror or error}); give a readable file") from None
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(line)
        except json.JSONDecodeError as error:
            raise DistillError(f"{path}:{number}: broken JSON line ({error.msg}); fix or remove the line") from None


def _check_text(value: Any, field: str, where: str) -> None:
    # JSON may escape a lone surrogate ("\ud800"): no tokenizer reads it and no UTF-8 file holds it.
    if not isinstance(value, str):
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise DistillError(f"{where}: field {field!r} holds a character that is not text ({error.reason} at "
                           f"{error.start}); fix the line") from None


def file_format(path: Path) -> str:
    """``jsonl`` or ``csv`` from the file name."""
    fmt = path.suffix.lower().lstrip(".")
    fmt = "jsonl" if fmt in ("jsonl", "ndjson") else fmt
    if fmt not in FORMATS:
        raise DistillError(f"{path}: give a .jsonl or .csv file of questions (one per line/row)")
    return fmt


def read_questions(path: str | Path, columns: dict[str, str] | None = None) -> list[QuestionRow]:
    """The questions of a ``.jsonl`` / ``.csv`` file (``input``, optional ``id`` and ``label``).

    Raises:
        DistillError: an unreadable file, a bad line, a row without its input, two rows with one id.
    """
    path = Path(path)
    names = {"input": "input", "label": "label", "id": "id", **(columns or {})}
    rows: list[QuestionRow] = []
    seen: dict[str, str] = {}
    repeats: dict[str, int] = {}
    for where, record in _records(path, file_format(path)):
        if not isinstance(record, dict):
            raise DistillError(f"{where}: expected a JSON object per line, got {type(record).__name__}")
        text = record.get(names["input"])
        if not isinstance(text, (str, int, float)) or isinstance(text, bool) or not str(text).strip():
            raise DistillError(f"{where}: missing field {names['input']!r}; add the question, or map your column "
                               f"with --columns input=<your column>")
        label = record.get(names["label"])
        label = None if label in (None, "") else str(label)
        ident = record.get(names["id"])
        for name, value in (("input", text), ("label", label), ("id", ident)):
            _check_text(value, names[name], where)
        if ident in (None, ""):
            base = "h-" + hashlib.sha1(str(text).encode()).hexdigest()[:12]
            repeats[base] = repeats.get(base, 0) + 1
            # The same question twice gets distinct ids that are still the same on every run.
            ident = base if repeats[base] == 1 else f"{base}-{repeats[base]}"
        ident = str(ident)
        if ident in seen:
            raise DistillError(f"{where}: id {ident!r} is also at {seen[ident]}; give each question its own id")
        seen[ident] = where
        rows.append(QuestionRow(ident, str(text), label, where))
    if not rows:
        raise DistillError(f"{path}: no questions; give a file with one question per line/row")
    return rows


def answer_file(model: Any, tokenizer: Any, rows: list[QuestionRow], out: str | Path, *, method: str,
                task: str | None = None, batch_size: int = 32, max_tokens: int = 64, explain: bool = False,
                on_progress: Callable[[int, int], None] = lambda done, total: None,
                should_stop: ShouldStop = never_stop) -> FileSummary:
    """Answer every row not yet in ``out`` and append one JSON line per answer there.

    Args:
        model: The T5 student.
        tokenizer: Its tokenizer.
        rows: The questions (`read_questions`).
        out: The answers file (JSONL); its ids are skipped, a torn last line is healed.
        method: The student's training method.
        task: The student's task, which picks how a label is compared (svamp: by value).
        batch_size: Questions answered together. Default: ``32``.
        max_tokens: Most tokens per answer. Default: ``64``.
        explain: Also write the student's rationale. Default: ``False``.
        on_progress: Called with (answered, to answer) after each batch.
        should_stop: Polled between batches; what is answered is kept.

    Returns:
        A `FileSummary`; accuracy covers every labelled answer in ``out``.
    """
    start = time.perf_counter()
    done = {str(r.get("id")) for r in read_jsonl_records(out)}
    todo = [row for row in rows if row.id not in done]
    answered = truncated = 0
    stopped = False
    with JsonlWriter(out) as writer:
        for first in range(0, len(todo), batch_size):
            if should_stop():
                stopped = True
                break
            chunk = todo[first : first + batch_size]
            answers = answer_batch(model, tokenizer, method,
                                   [Question(row.input, explain=explain, max_tokens=max_tokens) for row in chunk])
            lines = []
            for row, answer in zip(chunk, answers):
                record: dict[str, Any] = {"id": row.id, "question": row.input, "answer": answer.text}
                if explain:
                    record["rationale"] = answer.rationale
                if row.label is not None:
                    record["label"] = row.label
                    record["correct"] = is_correct(task or "", answer.text, row.label)
                if answer.truncated:
                    record["truncated"] = True
                    truncated += 1
                lines.append(json.dumps(record, ensure_ascii=False))
            writer.write_lines(lines)
            answered += len(chunk)
            on_progress(answered, len(todo))
    ids = {row.id for row in rows}
    scored = [r for r in read_jsonl_records(out) if str(r.get("id")) in ids and "correct" in r]
    return FileSummary(answered, len(rows) - len(todo), len(rows), len(scored),
                       sum(bool(r["correct"]) for r in scored), truncated, stopped, time.perf_counter() - start)
