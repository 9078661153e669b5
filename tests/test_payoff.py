"""The payoff through the CLI (#18): candidates trained on the same rows, the validation winner
exported, every candidate scored once on test, step-by-step against finetune with a paired
interval and a verdict in metrics.json, report.md and the CLI's last lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tomli_w

from mlx_distill.config import parse_config
from mlx_distill.errors import DistillError
from mlx_distill.share import model_card_text
from mlx_distill.testing.cli_runner import run_cli
from mlx_distill.train import choose, plan_candidates, verdict

VERDICT = re.compile(r"The teacher's rationales (helped by [\d.]+ points|cost [\d.]+ points|made no measurable "
                     r"difference) \(|The teacher's rationales made no measurable difference")


def _config(tmp_path: Path, student: Path, task: Path, **train) -> Path:
    config = {
        "name": "payoff",
        "runs_dir": str(tmp_path / "runs"),
        "task": {"name": "jsonl", "data": str(task)},
        "train": {"student": str(student), "rationale_source": "human", "lr": 3e-3, "batch_size": 16,
                  "max_steps": 16, "eval_every": 8, "log_every": 4, "warmup_steps": 4, "eval_max_tokens": 8,
                  **train},
    }
    path = tmp_path / "payoff.toml"
    path.write_text(tomli_w.dumps(config))
    return path


@pytest.fixture(scope="module")
def payoff_run(tmp_path_factory, small_synthetic_task, tiny_student_without_dropout):
    tmp_path = tmp_path_factory.mktemp("payoff")
    result = run_cli("run", _config(tmp_path, tiny_student_without_dropout, small_synthetic_task, alphas=[0.3, 0.7]),
                     "--quiet")
    assert result.returncode == 0, result.stderr
    return tmp_path / "runs" / "payoff", result


def test_metrics_carry_every_candidate_the_winner_and_the_payoff(payoff_run):
    run, _ = payoff_run
    metrics = json.loads((run / "metrics.json").read_text())
    candidates = metrics["candidates"]
    assert [c["name"] for c in candidates] == ["step-by-step-a0.3", "step-by-step-a0.5", "step-by-step-a0.7", "finetune"]
    assert all(c["steps"] == 16 and c["test_total"] == 8 and c["examples"] == 64 for c in candidates)
    assert all(c["rationale_rows"] == 64 for c in candidates if c["method"] == "step-by-step")
    [chosen] = [c for c in candidates if c["chosen"]]
    assert chosen["best_validation_accuracy"] == max(c["best_validation_accuracy"] for c in candidates)
    assert metrics["selection"]["chosen"] == chosen["name"] == metrics["student_candidate"]
    # Scripts read these two where they always were.
    assert metrics["student_test_accuracy"] == chosen["test_accuracy"]
    assert metrics["baselines"]["finetune"]["test_accuracy"] == candidates[-1]["test_accuracy"]
    payoff = metrics["payoff"]
    assert payoff["questions"] == 8 and payoff["finetune_accuracy"] == candidates[-1]["test_accuracy"]
    assert payoff["low"] <= payoff["difference"] <= payoff["high"]
    assert payoff["difference"] == pytest.approx(payoff["step_by_step_accuracy"] - payoff["finetune_accuracy"])
    assert VERDICT.match(payoff["verdict"])
    # The step-by-step side of the payoff is the step-by-step candidate best on validation.
    sbs = [c for c in candidates if c["method"] == "step-by-step"]
    assert payoff["step_by_step"] in {c["name"] for c in sbs
                                      if c["best_validation_accuracy"] == max(s["best_validation_accuracy"] for s in sbs)}


def test_the_exported_student_is_the_validation_winner(payoff_run):
    run, _ = payoff_run
    metrics = json.loads((run / "metrics.json").read_text())
    [chosen] = [c for c in metrics["candidates"] if c["chosen"]]
    exported = (run / "student" / "model.safetensors").read_bytes()
    assert exported == (run / chosen["folder"] / "student" / "model.safetensors").read_bytes()
    assert json.loads((run / "student" / "mlx_distill.json").read_text())["method"] == chosen["method"]
    winner_predictions = (run / chosen["folder"] / "predictions_test.jsonl").read_text()
    assert (run / "predictions_test.jsonl").read_text() == winner_predictions


def test_no_test_question_is_scored_before_the_choice(payoff_run):
    run, _ = payoff_run
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    chosen_at = next(i for i, e in enumerate(events) if e["kind"] == "CandidateChosen")
    assert not [e for e in events[:chosen_at] if e["kind"] == "EvalResult" and e["split"] == "test"]
    assert len([e for e in events[chosen_at:] if e["kind"] == "EvalResult" and e["split"] == "test"]) == 4
    # Validation scoring happened per candidate, on validation ids only.
    test_ids = {json.loads(line)["id"] for line in (run / "predictions_test.jsonl").read_text().splitlines()}
    for folder in ("train", "candidates/step-by-step-a0.3", "candidates/step-by-step-a0.7", "baselines/finetune"):
        ids = {json.loads(line)["id"] for line in (run / folder / "predictions_validation.jsonl").read_text().splitlines()}
        assert ids and not ids & test_ids


def test_report_and_last_lines_put_both_methods_side_by_side(payoff_run):
    run, result = payoff_run
    metrics = json.loads((run / "metrics.json").read_text())
    payoff = metrics["payoff"]
    report = (run / "report.md").read_text()
    assert payoff["verdict"] in report and "**exported**" in report
    assert all(c["label"] in report for c in metrics["candidates"])
    assert payoff["verdict"] in result.stdout and "exported: " in result.stdout
    assert f"vs finetune {payoff['finetune_accuracy'] * 100:.1f}%" in result.stdout
    assert result.stdout.strip().splitlines()[-2].startswith("student test accuracy:")


def test_select_none_trains_the_configured_method_and_its_baselines_only(tmp_path, small_synthetic_task, tiny_student):
    result = run_cli("run", _config(tmp_path, tiny_student, small_synthetic_task, select="none", max_steps=4,
                                    eval_every=4), "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "runs" / "payoff" / "metrics.json").read_text())
    assert [(c["name"], c["chosen"]) for c in metrics["candidates"]] == [("step-by-step-a0.5", True), ("finetune", False)]
    assert "payoff" in metrics and not (tmp_path / "runs" / "payoff" / "candidates").exists()


def test_choice_rules():
    candidates = plan_candidates("step-by-step", 0.5, [0.3, 0.5, 0.7], ["finetune"])
    assert [c.name for c in candidates] == ["step-by-step-a0.3", "step-by-step-a0.5", "step-by-step-a0.7", "finetune"]
    best, reason = choose(candidates, {"step-by-step-a0.3": 0.8, "step-by-step-a0.5": 0.7, "finetune": 0.9,
                                       "step-by-step-a0.7": None}, by_validation=True)
    assert best.name == "finetune" and reason.startswith("best validation accuracy: 90.0%")
    # A tie goes to the configured method, then to the α nearest the configured one.
    tie = {c.name: 0.9 for c in candidates}
    assert choose(candidates, tie, by_validation=True)[0].name == "step-by-step-a0.5"
    assert choose(candidates, {**tie, "step-by-step-a0.5": 0.5}, by_validation=True)[0].name == "step-by-step-a0.3"
    assert choose(candidates, {"finetune": 0.99}, by_validation=False)[0].name == "step-by-step-a0.5"
    assert verdict(0.05, 0.01, 0.09).startswith("The teacher's rationales helped by 5.0 points")
    assert verdict(-0.05, -0.09, -0.01).startswith("The teacher's rationales cost 5.0 points")
    assert verdict(0.01, -0.03, 0.05).startswith("The teacher's rationales made no measurable difference (+1.0 points")


def test_the_model_card_says_which_candidate_it_is_and_why(payoff_run):
    run, _ = payoff_run
    metrics = json.loads((run / "metrics.json").read_text())
    [chosen] = [c for c in metrics["candidates"] if c["chosen"]]
    card = model_card_text(run, "you/student")
    assert "## Why this student" in card and f"| {chosen['label']} **(this student)** |" in card
    assert metrics["payoff"]["verdict"] in card
    assert f"| method | {chosen['method']}" in card


@pytest.mark.parametrize("train, words", [
    ({"select": "test"}, "train.select must be one of validation, none, got 'test'"),
    ({"alphas": [0.5, 1.5]}, "train.alphas [0.5, 1.5] must be a non-empty list of numbers between 0 and 1"),
    ({"alphas": ["a"]}, "train.alphas = ['a'] must be a list of numbers"),
])
def test_bad_selection_settings_are_one_line_errors(train, words):
    with pytest.raises(DistillError, match=re.escape(words)):
        parse_config({"task": {"name": "jsonl", "data": "x"}, "train": train})


def test_defaults_train_the_finetune_baseline_and_choose_on_validation():
    config = parse_config({"task": {"name": "jsonl", "data": "x"}})
    assert (config.train.baselines, config.train.select, config.train.candidate_alphas) == (
        ["finetune"], "validation", [0.3, 0.5, 0.7])
