"""A whole run on a (faked) laptop: the sleep assertion's lifetime (normal end, exception, Ctrl-C,
SIGKILL), the pause on a low battery in the teacher and in training, one notification per end,
the MLX memory limit set before the teacher loads, the teacher's prefill steps, and the dashboard
while paused.

Only the macOS tools caffeinate, pmset and osascript are fake (``mlx_distill.testing.mac_tools``:
they cannot run on Linux), plus MLX's report of a Metal device's size in the memory test (no
Metal here). The pipeline, the machine module and the CLI are the real ones.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlx.core as mx
import pytest
import tomli_w
from textual.widgets import Static

from mlx_distill.config import load_config
from mlx_distill.data import load_task
from mlx_distill.errors import DistillError
from mlx_distill.events import Paused, Resumed, StageStarted, TeacherProgress, TrainStep, event_from_json
from mlx_distill.machine import CONTINUE_FILE, power, prefill_step_size
from mlx_distill.pipeline import run_pipeline
from mlx_distill.teacher import generate_rationales
from mlx_distill.testing.cli_runner import run_cli
from mlx_distill.testing.mac_tools import FakeMacTools
from mlx_distill.testing.ui_fakes import ScriptedStarter, sample_events
from mlx_distill.tui.app import DistillApp

TEACHER_LIMIT = 12


@pytest.fixture
def fake_mac(tmp_path, monkeypatch) -> FakeMacTools:
    return FakeMacTools.install(tmp_path / "bin").activate(monkeypatch)


def _config(tmp_path: Path, models: dict[str, Path], task: Path, teacher: Path | None = None,
            no_teacher: bool = False, **run) -> Path:
    config = {
        "name": "laptop",
        "runs_dir": str(tmp_path / "runs"),
        "task": {"name": "jsonl", "data": str(task)},
        "teacher": {"model": str(teacher or models["teacher"]), "batch_size": 4, "max_tokens": 8,
                    "limit": TEACHER_LIMIT},
        "train": {"student": str(models["student"]), "rationale_source": "teacher", "lr": 3e-3, "batch_size": 8,
                  "max_steps": 4, "eval_every": 0, "max_eval_examples": 8, "log_every": 1,
                  "baselines": [], "select": "none"},  # one student: these tests are about the machine
        "run": run,
    }
    if no_teacher:  # for the CLI tests: no mlx-lm import (seconds) before the run can stop
        config["teacher"]["enabled"] = False
        config["train"].update(method="finetune", rationale_source="none")
    path = tmp_path / "laptop.toml"
    path.write_text(tomli_w.dumps(config))
    return path


@pytest.fixture
def unknown_arch_teacher(tmp_path, demo_models) -> Path:
    """A teacher folder that passes the checks before a run but that mlx-lm cannot load: the run
    fails inside the teacher stage, after the first stage started."""
    folder = tmp_path / "odd-teacher"
    shutil.copytree(demo_models["teacher"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "nosucharch"}))
    return folder


def _wait(condition, timeout: float = 120.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process is None or process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def _events(run_dir: Path) -> list:
    return [event_from_json(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line]


def test_a_run_holds_the_assertion_from_the_first_stage_to_its_end_and_says_so_once(
        tmp_path, demo_models, small_synthetic_task, fake_mac):
    run_pipeline(load_config(_config(tmp_path, demo_models, small_synthetic_task)))
    ended = time.time()
    events = _events(tmp_path / "runs" / "laptop")
    first_stage = next(e for e in events if isinstance(e, StageStarted))
    (span,) = fake_mac.assertions()  # one assertion over every stage
    assert span["args"] == ["-i", "-w", str(os.getpid())]
    assert first_stage.time <= span["start"] < first_stage.time + 1.0
    assert span["end"] is not None and span["end"] - ended < 1.0
    (note,) = fake_mac.notifications()
    assert "run laptop finished" in note
    assert events[0].kind == "Log" and events[0].message.startswith("MLX memory limit ")


def test_an_exception_in_a_stage_releases_the_assertion_and_says_so_once(
        tmp_path, demo_models, small_synthetic_task, unknown_arch_teacher, fake_mac):
    config = load_config(_config(tmp_path, demo_models, small_synthetic_task, teacher=unknown_arch_teacher))
    with pytest.raises(DistillError, match="nosucharch"):
        run_pipeline(config)
    raised = time.time()
    (span,) = fake_mac.assertions()
    assert span["end"] is not None and span["end"] - raised < 1.0
    (note,) = fake_mac.notifications()
    assert "failed in teacher" in note and "nosucharch" in note


def test_allow_sleep_and_no_notify_through_the_cli(tmp_path, demo_models, small_synthetic_task,
                                                   unknown_arch_teacher, fake_mac):
    config = _config(tmp_path, demo_models, small_synthetic_task, teacher=unknown_arch_teacher)
    for flags in (["--allow-sleep", "--no-notify"], []):
        result = run_cli("run", config, *flags)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.splitlines()[-1].startswith("error: ") and "nosucharch" in result.stderr
        if flags:
            assert fake_mac.assertions() == [] and fake_mac.notifications() == []
    assert len(fake_mac.assertions()) == len(fake_mac.notifications()) == 1


def _start_cli_run(config: Path, fake_mac: FakeMacTools) -> subprocess.Popen:
    # Its own process group, as a command started in a terminal: Ctrl-C goes to the whole group.
    return subprocess.Popen([sys.executable, "-m", "mlx_distill", "run", str(config)], env=fake_mac.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.slow  # a real process that reaches training: seconds of imports before it can stop
def test_ctrl_c_releases_the_assertion_when_the_run_has_stopped(tmp_path, demo_models, small_synthetic_task,
                                                                fake_mac):
    process = _start_cli_run(_config(tmp_path, demo_models, small_synthetic_task, no_teacher=True), fake_mac)
    try:
        _wait(lambda: fake_mac.assertions(), process=process)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal
        _, stderr = process.communicate(timeout=300)
        exited = time.time()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    (span,) = fake_mac.assertions()
    assert span["args"] == ["-i", "-w", str(process.pid)]
    # Held while the run stopped cleanly (the terminal's Ctrl-C does not reach caffeinate), let go after.
    stopped = next(e for e in _events(tmp_path / "runs" / "laptop") if e.kind == "Finished" and e.stage == "run")
    assert stopped.stopped and stopped.time <= span["end"] and span["end"] - exited < 1.0
    (note,) = fake_mac.notifications()
    assert "stopped; finished work is kept" in note


def test_sigkill_of_the_run_ends_the_assertion_with_it(tmp_path, demo_models, small_synthetic_task, fake_mac):
    process = _start_cli_run(_config(tmp_path, demo_models, small_synthetic_task, no_teacher=True), fake_mac)
    try:
        _wait(lambda: fake_mac.assertions(), process=process)
        process.kill()
        killed = time.time()
        process.wait()
        _wait(lambda: fake_mac.assertions()[0]["end"] is not None, timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
    (span,) = fake_mac.assertions()
    assert span["end"] - killed < 1.0 and span["reason"] == "watched process ended"
    assert fake_mac.notifications() == []  # a killed run says nothing


def test_a_low_battery_pauses_the_teacher_and_training_until_power_returns(
        tmp_path, demo_models, small_synthetic_task, fake_mac, monkeypatch):
    monkeypatch.setattr(power, "BATTERY_CHECK_SECONDS", 0.2)
    events = []
    unplugged_in: list[str] = []

    def on_event(event) -> None:
        events.append(event)
        stage = "teacher" if isinstance(event, TeacherProgress) else "train" if isinstance(event, TrainStep) else None
        if stage and stage not in unplugged_in:
            unplugged_in.append(stage)  # unplugged once in each stage, at 10%
            fake_mac.set_power(on_battery=True, percent=10)
        if isinstance(event, Paused):
            threading.Timer(1.0, fake_mac.set_power, kwargs={"on_battery": False, "percent": 11}).start()

    metrics = run_pipeline(load_config(_config(tmp_path, demo_models, small_synthetic_task)), on_event=on_event)
    ended = time.time()
    assert not metrics.get("stopped")

    pauses = [i for i, e in enumerate(events) if isinstance(e, Paused)]
    resumes = [i for i, e in enumerate(events) if isinstance(e, Resumed)]
    assert len(pauses) == len(resumes) == 2
    stages = [next(e.stage for e in reversed(events[:i]) if isinstance(e, StageStarted)) for i in pauses]
    assert stages == ["teacher", "train"]
    for pause, resume in zip(pauses, resumes):
        assert resume == pause + 1  # nothing was made while paused
        assert events[resume].time - events[pause].time >= 0.9
        assert events[resume].reason == "power" and events[pause].battery_percent == 10

    rows = load_task("jsonl", str(small_synthetic_task)).train
    records = [json.loads(line) for line in (tmp_path / "runs" / "laptop" / "rationales.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == TEACHER_LIMIT and set(ids) <= {e.id for e in rows}
    assert [e.step for e in events if isinstance(e, TrainStep)] == [1, 2, 3, 4]

    spans = fake_mac.assertions()  # held, let go while paused (the Mac may sleep), held again after
    assert len(spans) == 3 and all(s["end"] is not None for s in spans)
    for span, pause, resume in zip(spans, pauses, resumes):
        assert events[pause].time <= span["end"] < events[resume].time
    assert spans[-1]["end"] - ended < 1.0
    notes = fake_mac.notifications()
    assert len(notes) == 3 and all("paused: on battery at 10%" in n for n in notes[:2])
    assert "run laptop finished" in notes[2]


def test_the_memory_limit_is_set_before_the_teacher_loads_and_a_bigger_teacher_is_refused_in_one_line(
        tmp_path, demo_models, small_synthetic_task, monkeypatch):
    # No Metal device here: MLX's report of one with a 1 MB recommended working set is faked.
    monkeypatch.setattr(mx, "device_info", lambda *a: {"device_name": "Apple M9", "memory_size": 16 * 1000**3,
                                                        "max_recommended_working_set_size": 1000**2})
    before = mx.get_memory_limit()
    seen = []
    config = load_config(_config(tmp_path, demo_models, small_synthetic_task))
    with pytest.raises(DistillError) as raised:
        run_pipeline(config, on_event=lambda e: seen.append((e, mx.get_memory_limit())))
    message = str(raised.value)
    assert "\n" not in message and "but only 1.0 MB is available to MLX" in message
    assert seen[0][0].message == "MLX memory limit 1.0 MB (the GPU's recommended working set); device Apple M9 (Metal)"
    teacher_started = next(limit for e, limit in seen if isinstance(e, StageStarted) and e.stage == "teacher")
    assert teacher_started == 1000**2
    assert not any(e.kind == "TeacherLoaded" for e, _ in seen)
    assert mx.get_memory_limit() == before  # restored when the run ends


def test_the_teacher_prefills_in_the_given_steps_with_the_same_records(tmp_path, demo_models, small_synthetic_task,
                                                                      monkeypatch):
    mlx_lm_generate = importlib.import_module("mlx_lm.generate")  # the package's `generate` is a function
    steps = []
    real = mlx_lm_generate.BatchGenerator

    class RecordingBatchGenerator(real):  # the real mlx-lm generator; only the step size is noted
        def __init__(self, *args, **kwargs):
            steps.append(kwargs.get("prefill_step_size"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(mlx_lm_generate, "BatchGenerator", RecordingBatchGenerator)
    rows = load_task("jsonl", str(small_synthetic_task)).train[:6]
    outputs = {}
    for step in (None, 4):
        out = tmp_path / f"rationales-{step}.jsonl"
        generate_rationales(rows, "jsonl", str(demo_models["teacher"]), out, batch_size=3, max_tokens=6,
                            prefix_cache=False, prefill_step_size=step)
        outputs[step] = {r["id"]: r["raw"] for r in map(json.loads, out.read_text().splitlines())}
    assert steps == [prefill_step_size(3), 4]  # the device's default, then the one asked for
    assert outputs[4] == outputs[None]


async def test_the_dashboard_shows_a_battery_pause_and_r_tells_the_run_to_go_on(tmp_path):
    events = sample_events()
    paused = Paused(message="paused: on battery at 12% (below 20%)", level="warning", battery_percent=12,
                    time=events[9].time)
    resumed = Resumed(message="resumed: AC Power", reason="power", time=events[9].time + 5)
    starter = ScriptedStarter(script=events[:10] + [paused, resumed] + events[10:], block_after=11)
    app = DistillApp(tmp_path, starter=starter, poll_interval=60, available_memory=lambda: 16 * 1000**3)
    async with app.run_test(size=(100, 36)) as pilot:
        app.action_start_demo()
        app.poll_run()
        await pilot.pause()
        run_dir = tmp_path / "demo"
        status = str(app.screen.query_one("#run-status", Static).render())
        assert "paused on battery (12%)" in status and "press r" in status
        await pilot.press("r")
        assert (run_dir / CONTINUE_FILE).exists() and len(starter.started) == 1  # not a second pipeline
        starter.release(run_dir, 2)
        app.poll_run()
        await pilot.pause()
        assert "running: teacher" in str(app.screen.query_one("#run-status", Static).render())
