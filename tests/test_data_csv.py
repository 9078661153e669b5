"""CSV files are read strictly (issue #23 item 14): no value lands in the wrong column silently.

The same reader serves the ``csv`` task and ``mlx-distill answer --in FILE.csv``; both are checked.
Also: the teacher's batch size has one default (issue #23, "Defaults that disagree").
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from mlx_distill.commands import generate as generate_command
from mlx_distill.config import TeacherConfig
from mlx_distill.data import load_task
from mlx_distill.errors import DistillError
from mlx_distill.serve.questions import read_questions
from mlx_distill.teacher import generate_rationales

def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# Each was read before this change: the extra field was dropped (so "question, with a comma" kept
# its first half as input and " with a comma" as label), a short row got None, the open quote
# swallowed the rest of the file into one value, and the second "label" column won.
@pytest.mark.parametrize("text, message", [
    ("id,input,label\n0,a,yes\n1,b,no\nx,question, with a comma,yes\n",
     r"q\.csv:4: 4 fields but the header names 3 columns \(more\).*quote"),
    ("id,input,label\n0,a,yes\n1,only input\n", r"q\.csv:3: 2 fields but the header names 3 columns \(fewer\)"),
    ("id,input,label\n0,a,yes\n1,\"b,yes\n2,c,no\n", r"q\.csv:3: broken CSV \(a quote is never closed\)"),
    ("id,input,label,label\n0,a,yes,no\n", r"q\.csv:1: the header names column 'label' twice"),
], ids=["extra field", "missing field", "open quote", "duplicate header"])
def test_a_csv_that_would_shift_or_swallow_values_is_refused_with_its_line(tmp_path, text, message):
    path = write(tmp_path / "q.csv", text)
    with pytest.raises(DistillError, match=message) as task_error:
        load_task("csv", path)
    with pytest.raises(DistillError) as answer_error:  # answer --in reads through the same reader
        read_questions(path, {"input": "input", "label": "label", "id": "id"})
    assert str(answer_error.value) == str(task_error.value)


def test_quoted_commas_newlines_and_blank_lines_still_read(tmp_path):
    path = write(tmp_path / "q.csv", 'id,input,label\n0,"a, b",yes\n\n1,"line one\nline two",no\n2,c,yes\n')
    questions = read_questions(path)
    assert [(q.id, q.input, q.label) for q in questions] == [
        ("0", "a, b", "yes"), ("1", "line one\nline two", "no"), ("2", "c", "yes")]
    assert questions[2].where.endswith("q.csv:6")  # the line the record starts on, after the 2-line record


def test_the_teacher_batch_size_has_one_default():
    default = TeacherConfig().batch_size
    parser = __import__("argparse").ArgumentParser()
    generate_command.add_arguments(parser)
    args = parser.parse_args(["--task", "svamp", "--data", "x", "--teacher", "t", "--out", "o"])
    assert args.batch_size == default
    assert inspect.signature(generate_rationales).parameters["batch_size"].default == default
