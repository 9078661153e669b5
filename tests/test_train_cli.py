"""`mlx-distill train` / `eval` end to end in subprocesses: a tiny T5 learns a synthetic task;
SIGKILL mid-run and resume; Ctrl-C writes a checkpoint and says how to resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if Path(OPENBLAS).exists():
        env.setdefault("LD_PRELOAD", OPENBLAS)
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlx_distill", *args]


def _train_args(task_dir: Path, student: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--task", "jsonl", "--data", str(task_dir), "--student", str(student), "--out", str(out),
        "--human-rationales", "--lr", "3e-3", "--batch-size", "16", "--warmup-steps", "10", *extra,
    ]


@pytest.mark.slow
def test_tiny_student_learns_the_task_through_the_cli(synthetic_task, tiny_student_without_dropout, tmp_path):
    out = tmp_path / "run"
    started = time.monotonic()
    done = subprocess.run(
        _command(*_train_args(synthetic_task, tiny_student_without_dropout, out, "--max-steps", "250", "--eval-every", "50")),
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "student" / "mlx_distill.json").read_text())
    # Four kinds: chance is 25%; validation sentences use frames never seen in training.
    assert meta["best_validation_accuracy"] >= 0.6, done.stderr
    assert meta["method"] == "step-by-step"
    assert "validation accuracy" in done.stderr and "rationale" in done.stderr
    lines = (out / "predictions_test.jsonl").read_text().splitlines()
    assert len(lines) == 48 and {"id", "prediction", "gold", "correct"} <= set(json.loads(lines[0]))
    print(f"train CLI run: {time.monotonic() - started:.1f}s, best validation {meta['best_validation_accuracy']}")

    predictions = tmp_path / "eval.jsonl"
    scored = subprocess.run(
        _command("eval", "--task", "jsonl", "--data", str(synthetic_task), "--student", str(out / "student"),
                 "--split", "validation", "--out", str(predictions)),
        env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert scored.returncode == 0, scored.stderr
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    accuracy = sum(r["correct"] for r in records) / len(records)
    assert f"validation accuracy: {accuracy * 100:.1f}%" in scored.stdout
    # The exported student is the best checkpoint, so eval gives the best validation accuracy.
    assert accuracy == pytest.approx(meta["best_validation_accuracy"])


def _latest_step(out: Path) -> int:
    try:
        return json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1


def _wait_for_checkpoint(process: subprocess.Popen, out: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _latest_step(out) < step:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_then_resume_finishes(synthetic_task, tiny_student_without_dropout, tmp_path):
    out = tmp_path / "run"
    args = _train_args(synthetic_task, tiny_student_without_dropout, out, "--max-steps", "120", "--save-every", "5", "--eval-every", "0",
                       "--max-eval-examples", "8")
    process = subprocess.Popen(_command(*args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(process, out, 10)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    killed_at = _latest_step(out)
    assert 10 <= killed_at < 120

    resumed = subprocess.run(_command(*args, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {out / 'checkpoints'}" in resumed.stderr
    assert "trained 120 steps" in resumed.stdout
    assert _latest_step(out) == 120 and (out / "student" / "model.safetensors").exists()


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_and_says_how_to_resume(synthetic_task, tiny_student_without_dropout, tmp_path):
    out = tmp_path / "run"
    args = _train_args(synthetic_task, tiny_student_without_dropout, out, "--max-steps", "5000", "--save-every", "5", "--eval-every", "0")
    process = subprocess.Popen(_command(*args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(process, out, 5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    stopped_at = _latest_step(out)
    assert 5 <= stopped_at < 5000
    assert f"stopped at step {stopped_at}" in stderr
    assert "resume with: mlx-distill train" in stderr and "--resume" in stderr
    assert not (out / "student").exists()
