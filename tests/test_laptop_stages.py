"""The standalone stages `mlx-distill generate` and `mlx-distill train` on a (faked) laptop: the
sleep assertion is held while the stage works and let go after, one notification at the end, and
--allow-sleep / --no-notify turn both off, as for `mlx-distill run`.

Only the macOS tools caffeinate, pmset and osascript are fake (``mlx_distill.testing.mac_tools``:
they cannot run on Linux). The CLI, the stages and the machine module are the real ones, with the
tiny demo models.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from mlx_distill.testing.cli_runner import run_cli
from mlx_distill.testing.mac_tools import FakeMacTools


@pytest.fixture
def fake_mac(tmp_path, monkeypatch) -> FakeMacTools:
    return FakeMacTools.install(tmp_path / "bin").activate(monkeypatch)


def _generate(teacher: Path, task: Path, out: Path, *flags: str):
    return run_cli("generate", "--task", "jsonl", "--data", task, "--teacher", teacher, "--out", out,
                   "--limit", "4", "--batch-size", "4", "--max-tokens", "8", "--filter", "all", *flags)


def _train(student: Path, task: Path, out: Path, *flags: str):
    return run_cli("train", "--task", "jsonl", "--data", task, "--student", student, "--out", out,
                   "--method", "finetune", "--max-steps", "2", "--batch-size", "8", "--eval-every", "0",
                   "--max-eval-examples", "8", "--log-every", "1", *flags)


def _assert_held_while_written(fake_mac: FakeMacTools, written: Path, returned: float, said: str) -> None:
    (span,) = fake_mac.assertions()
    assert span["args"] == ["-i", "-w", str(os.getpid())]
    assert span["start"] <= written.stat().st_mtime <= span["end"] <= returned
    (note,) = fake_mac.notifications()
    assert said in note


def test_generate_holds_the_assertion_while_the_teacher_writes_and_lets_go_after(
        tmp_path, demo_models, small_synthetic_task, fake_mac):
    out = tmp_path / "r.jsonl"
    result = _generate(demo_models["teacher"], small_synthetic_task, out)
    assert result.returncode == 0, result.stderr
    # every record was written while the assertion was held; let go before the command returned
    _assert_held_while_written(fake_mac, out, time.time(), "mlx-distill generate (r.jsonl) finished")
    assert len(out.read_text().splitlines()) == 4
    assert "MLX memory limit" in result.stderr


def test_train_holds_the_assertion_while_training_and_lets_go_after(
        tmp_path, demo_models, small_synthetic_task, fake_mac):
    out = tmp_path / "student-out"
    result = _train(demo_models["student"], small_synthetic_task, out)
    assert result.returncode == 0, result.stderr
    # the test predictions are the stage's last work
    _assert_held_while_written(fake_mac, out / "predictions_test.jsonl", time.time(),
                               "mlx-distill train (student-out) finished")


def test_allow_sleep_and_no_notify_for_the_standalone_stages(tmp_path, demo_models, small_synthetic_task,
                                                             fake_mac):
    flags = ("--allow-sleep", "--no-notify")
    assert _generate(demo_models["teacher"], small_synthetic_task, tmp_path / "r.jsonl", *flags).returncode == 0
    assert _train(demo_models["student"], small_synthetic_task, tmp_path / "out", *flags).returncode == 0
    assert fake_mac.assertions() == [] and fake_mac.notifications() == []


def test_a_teacher_failing_in_generate_lets_go_and_says_so_once(tmp_path, demo_models, small_synthetic_task,
                                                                fake_mac):
    # Passes the checks before the stage, but mlx-lm cannot build it: the stage fails after it started.
    odd = tmp_path / "odd-teacher"
    shutil.copytree(demo_models["teacher"], odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "model_type": "nosucharch"}))
    result = _generate(odd, small_synthetic_task, tmp_path / "r.jsonl")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ") and "nosucharch" in result.stderr
    # The assertion was let go by the run (signal), not left to end with it. On a loaded machine the
    # run can fail and let go before the fake caffeinate (a shell script) has set its traps: it then
    # dies at once, recording nothing, as a real caffeinate killed that early would hold nothing.
    spans = fake_mac.assertions()
    assert len(spans) <= 1 and all(span["end"] is not None and span["reason"] == "signal" for span in spans)
    (note,) = fake_mac.notifications()
    assert "failed in teacher" in note and "nosucharch" in note
