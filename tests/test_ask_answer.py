"""`mlx-distill ask` (one answer for scripts) and `mlx-distill answer` (a file, resumable, scored)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlx_distill.files import read_jsonl_records
from mlx_distill.methods import RATIONALE_MAX_TOKENS, explain_prompt, predict_prompt
from mlx_distill.student import generate, load_student
from mlx_distill.train import STUDENT_META
from mlx_distill.testing.cli_runner import assert_one_line_error, run_cli

QUESTIONS = ["Is a dog a mammal?", "Is a tuna a fish?", "Is an eagle a bird?", "Is a bat a bird?",
             "Is a herring a mammal?"]


@pytest.fixture(scope="module")
def student(demo_models):
    return demo_models["student"]


@pytest.fixture(scope="module")
def reference(student):
    model, tokenizer = load_student(student)

    def answer(prompts: list[str], max_tokens: int = 64) -> list[str]:
        return [text.strip() for text in generate(model, tokenizer, prompts, max_tokens=max_tokens)]

    return answer


def test_ask_prints_the_answer_generate_gives(student, reference):
    result = run_cli("ask", student, QUESTIONS[0])
    assert result.returncode == 0, result.stderr
    assert result.stdout == reference([predict_prompt(QUESTIONS[0])])[0] + "\n"


def test_ask_json_with_explain(student, reference):
    result = run_cli("ask", student, QUESTIONS[1], "--json", "--explain", "--max-tokens", "12")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["question"] == QUESTIONS[1]
    assert record["answer"] == reference([predict_prompt(QUESTIONS[1])], 12)[0]
    assert record["rationale"] == reference([explain_prompt(QUESTIONS[1])], RATIONALE_MAX_TOKENS)[0]
    assert record["truncated"] is False


def test_ask_refuses_explain_for_a_finetune_student(student, tmp_path):
    folder = shutil.copytree(student, tmp_path / "finetuned")
    (folder / STUDENT_META).write_text(json.dumps({"method": "finetune", "task": "jsonl"}))
    assert_one_line_error(run_cli("ask", folder, "hi", "--explain"), "finetune", "rationale")
    assert_one_line_error(run_cli("ask", folder, "  "), "empty")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_answer_a_file_with_labels_then_resume(student, reference, tmp_path):
    predicted = reference([predict_prompt(q) for q in QUESTIONS])
    # Two labels are the student's own answers, so the accuracy is known: 2 of 4 labelled rows.
    rows = [{"id": f"q{i}", "input": q} for i, q in enumerate(QUESTIONS)]
    rows[0]["label"], rows[1]["label"] = predicted[0], predicted[1]
    rows[2]["label"], rows[3]["label"] = predicted[2] + " not", "nothing like it"
    questions = _write_jsonl(tmp_path / "questions.jsonl", rows)
    out = tmp_path / "answers.jsonl"
    # An earlier run answered q0 and was killed in the middle of its next line.
    out.write_text(json.dumps({"id": "q0", "question": QUESTIONS[0], "answer": predicted[0], "label": predicted[0],
                               "correct": True}) + "\n" + '{"id": "q1", "quest')
    result = run_cli("answer", student, "--in", questions, "--out", out, "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "1 already answered" in result.stderr
    assert "accuracy 50.0% (2/4 labelled answers)" in result.stdout
    records = read_jsonl_records(out)
    assert [r["id"] for r in records] == ["q0", "q1", "q2", "q3", "q4"]
    assert [r["answer"] for r in records] == predicted
    assert "label" not in records[4] and "correct" not in records[4]
    again = run_cli("answer", student, "--in", questions, "--out", out)
    assert again.returncode == 0 and "5 already answered" in again.stderr
    assert len(read_jsonl_records(out)) == 5


def test_answer_csv_with_columns_and_explain(student, reference, tmp_path):
    questions = tmp_path / "questions.csv"
    questions.write_text("qid,question\n" + "".join(f"{i},{q}\n" for i, q in enumerate(QUESTIONS[:3])))
    out = tmp_path / "out" / "answers.jsonl"
    result = run_cli("answer", student, "--in", questions, "--out", out, "--columns", "input=question,id=qid",
                     "--explain", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "accuracy" not in result.stdout
    records = read_jsonl_records(out)
    assert [r["id"] for r in records] == ["0", "1", "2"]
    assert [r["answer"] for r in records] == reference([predict_prompt(q) for q in QUESTIONS[:3]])
    assert [r["rationale"] for r in records] == reference([explain_prompt(q) for q in QUESTIONS[:3]],
                                                           RATIONALE_MAX_TOKENS)


def test_answer_refuses_bad_files_in_one_line(student, tmp_path):
    no_input = _write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "input": "fine"}, {"id": "b", "text": "x"}])
    assert_one_line_error(run_cli("answer", student, "--in", no_input, "--out", tmp_path / "a.jsonl"),
                          "q.jsonl:2", "input", "--columns")
    twice = _write_jsonl(tmp_path / "t.jsonl", [{"id": "a", "input": "x"}, {"id": "a", "input": "y"}])
    assert_one_line_error(run_cli("answer", student, "--in", twice, "--out", tmp_path / "a.jsonl"), "id 'a'")
    text = tmp_path / "q.txt"
    text.write_text("what?\n")
    assert_one_line_error(run_cli("answer", student, "--in", text, "--out", tmp_path / "a.jsonl"), ".jsonl or .csv")
    assert_one_line_error(run_cli("answer", student, "--in", no_input, "--out", tmp_path), "folder")
    assert not (tmp_path / "a.jsonl").exists()
