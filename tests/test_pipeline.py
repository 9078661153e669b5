"""The pipeline end to end, on the demo's tiny real-format models (``demo_models`` in conftest).

Covers: stage skipping on rerun, SIGKILL in the teacher stage and in training followed by a rerun
that ends where an uninterrupted run ends, SIGINT that stops cleanly and resumes, one writer per
run folder, a changed config refused, baselines scored by the evaluate stage, and bad inputs that
each give one line and leave nothing half-written.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from mlx_distill.commands.demo import demo_data_dir
from mlx_distill.config import load_config, parse_config
from mlx_distill.errors import DistillError
from mlx_distill.events import event_from_json
from mlx_distill.pipeline import run_pipeline, running_pid

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, models: dict[str, Path], name: str = "run", **overrides) -> Path:
    config = {
        "name": name,
        "runs_dir": str(tmp_path / "runs"),
        "task": {"name": "jsonl", "data": str(demo_data_dir())},
        "teacher": {"model": str(models["teacher"]), "batch_size": 8, "max_tokens": 16, "limit": 48},
        "train": {
            "student": str(models["student"]),
            "rationale_source": "human",
            "lr": 3e-3,
            "batch_size": 16,
            "max_steps": 40,
            "eval_every": 20,
            "max_eval_examples": 40,
            "log_every": 5,
        },
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            config[section].update(values)
        else:
            config[section] = values
    path = tmp_path / f"{name}.toml"
    path.write_text(tomli_w.dumps(config))
    return path


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlx_distill", *args], capture_output=True, text=True,
                          timeout=timeout)


def _events(run_dir: Path) -> list:
    return [event_from_json(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line]


def _final_loss(run_dir: Path) -> float:
    steps = [e for e in _events(run_dir) if e.kind == "TrainStep"]
    return steps[-1].loss


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "the run never reached the point to kill it"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, demo_models) -> Path:
    """One uninterrupted run, the reference for the resume tests."""
    tmp = tmp_path_factory.mktemp("straight")
    result = _run("run", str(_config(tmp, demo_models)))
    assert result.returncode == 0, result.stderr
    return tmp / "runs" / "run"


def test_run_writes_every_stage_and_a_rerun_redoes_nothing(straight_run, demo_models):
    run = straight_run
    for name in ("config.toml", "state.json", "events.jsonl", "rationales.jsonl", "metrics.json", "report.md",
                 "predictions_test.jsonl", "student/config.json", "student/model.safetensors"):
        assert (run / name).exists(), name
    assert running_pid(run) is None
    state = json.loads((run / "state.json").read_text())["stages"]
    assert [state[s]["status"] for s in ("data", "teacher", "train", "evaluate", "export")] == ["done"] * 5
    assert len(_records(run / "rationales.jsonl")) == 48
    kinds = [e.kind for e in _events(run)]
    assert kinds.count("StageFinished") == 5 and kinds[-1] == "Finished"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["student_test_accuracy"] <= 1.0
    assert metrics["data"] == {"train": 600, "validation": 100, "test": 100}
    assert "test accuracy" in (run / "report.md").read_text()

    before = len(_events(run))
    again = _run("run", str(run / "config.toml"), "--run-dir", str(run))
    assert again.returncode == 0, again.stderr
    new = _events(run)[before:]
    finished = [e for e in new if e.kind == "StageFinished"]
    assert len(finished) == 5 and all(e.skipped for e in finished)
    assert not any(e.kind in ("TrainStep", "TeacherProgress") for e in new)


def test_sigkill_in_teacher_then_in_training_resumes_to_the_same_result(tmp_path, demo_models, straight_run):
    config = _config(tmp_path, demo_models)
    run = tmp_path / "runs" / "run"
    rationales = run / "rationales.jsonl"

    process = subprocess.Popen([sys.executable, "-m", "mlx_distill", "run", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _kill_when(process, lambda: rationales.exists() and 0 < len(_records(rationales)) < 48)
    assert json.loads((run / "state.json").read_text())["stages"]["teacher"]["status"] == "running"

    checkpoints = run / "train" / "checkpoints"
    process = subprocess.Popen([sys.executable, "-m", "mlx_distill", "run", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _kill_when(process, lambda: checkpoints.exists() and any(p.name.startswith("step-") for p in checkpoints.iterdir()))

    result = _run("run", str(config))
    assert result.returncode == 0, result.stderr
    ids = [r["id"] for r in _records(rationales)]
    assert len(ids) == len(set(ids)) == 48
    assert _records(rationales) and {r["id"]: r["raw"] for r in _records(rationales)} == {
        r["id"]: r["raw"] for r in _records(straight_run / "rationales.jsonl")
    }
    assert abs(_final_loss(run) - _final_loss(straight_run)) < 1e-5
    metrics, reference = (json.loads((d / "metrics.json").read_text()) for d in (run, straight_run))
    assert metrics["student_test_accuracy"] == reference["student_test_accuracy"]


def _teacher_started(run: Path) -> bool:
    events = run / "events.jsonl"
    return events.exists() and any(e.kind == "TeacherProgress" and e.done > 0 for e in _events_so_far(events))


def _events_so_far(path: Path) -> list:
    text = path.read_text()
    return [event_from_json(line) for line in text[: text.rfind("\n") + 1].splitlines() if line]


def _wait_for(process: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "the run never got there"
        time.sleep(0.05)


def test_a_second_writer_is_refused_and_sigint_stops_then_resumes_keeping_every_record(tmp_path, demo_models):
    config = _config(tmp_path, demo_models)
    run = tmp_path / "runs" / "run"
    process = subprocess.Popen([sys.executable, "-m", "mlx_distill", "run", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(process, lambda: running_pid(run) is not None)
        second = _run("run", str(config))  # while the first holds the run folder
        line = _one_line_error(second)
        assert f"pid {process.pid}" in line and "already being written" in line
        _wait_for(process, lambda: _teacher_started(run))
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"stopped; finished work is kept in {run}. Resume:" in stderr
    assert running_pid(run) is None
    state = json.loads((run / "state.json").read_text())["stages"]
    assert state["teacher"]["status"] == "stopped"
    kept = {r["id"]: r for r in _records(run / "rationales.jsonl")}
    assert 0 < len(kept) < 48

    result = _run("run", str(config))
    assert result.returncode == 0, result.stderr
    after = {r["id"]: r for r in _records(run / "rationales.jsonl")}
    assert len(after) == 48
    assert all(after[rid] == record for rid, record in kept.items())


def test_changed_config_is_refused_with_the_change_named(tmp_path, demo_models):
    first = load_config(_config(tmp_path, demo_models, teacher={"enabled": False},
                                train={"max_steps": 4, "eval_every": 4}))
    run_pipeline(first)
    changed = load_config(_config(tmp_path, demo_models, teacher={"enabled": False},
                                  train={"max_steps": 4, "eval_every": 4, "alpha": 0.9}))
    with pytest.raises(DistillError) as refused:
        run_pipeline(changed)
    message = str(refused.value)
    assert "train stage" in message and "alpha" in message and "--redo train" in message
    assert not run_pipeline(changed, redo="train").get("stopped")


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_bad_config_is_one_line_through_the_cli(tmp_path, demo_models):
    path = _config(tmp_path, demo_models, train={"learning_rate_typo": 1.0})
    message = _one_line_error(_run("run", str(path)))
    assert "train.learning_rate_typo" in message
    assert not (tmp_path / "runs").exists()


def _raw_config(tmp_path: Path, models: dict[str, Path], **overrides) -> dict:
    return tomllib.loads(_config(tmp_path, models, **overrides).read_text())


def test_data_file_that_does_not_parse(tmp_path, demo_models):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "label": "b"}\n{"input": broken\n{"input": "c", "label": "d"}\n')
    config = parse_config(_raw_config(tmp_path, demo_models, task={"name": "jsonl", "data": str(bad)}))
    with pytest.raises(DistillError, match="bad.jsonl:2"):
        run_pipeline(config)
    assert not (tmp_path / "runs").exists()


def test_model_too_big_for_memory(tmp_path, demo_models):
    config = parse_config(_raw_config(tmp_path, demo_models, teacher={"model": "qwen2.5-72b"}))
    with pytest.raises(DistillError, match=r"qwen2\.5-72b.*try"):
        run_pipeline(config)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("swap, words", [
    ({"train": "teacher"}, ["not a T5 student"]),
    ({"teacher": "student"}, ["not a causal LM"]),
])
def test_a_model_of_the_wrong_kind_is_refused_before_any_stage(tmp_path, demo_models, swap, words):
    # Both models are opened (not loaded) before the first stage: not hours later, when theirs starts.
    overrides = {"train": {"student": str(demo_models[swap["train"]])}} if "train" in swap else \
        {"teacher": {"model": str(demo_models[swap["teacher"]])}}
    config = parse_config(_raw_config(tmp_path, demo_models, **overrides))
    with pytest.raises(DistillError) as error:
        run_pipeline(config)
    assert all(word in str(error.value) for word in words), str(error.value)
    assert not (tmp_path / "runs").exists()


def test_unwritable_run_folder(tmp_path, demo_models):
    # A file where the runs folder should be cannot be written into, even by root.
    blocker = tmp_path / "runs-file"
    blocker.write_text("not a folder")
    config = parse_config(_raw_config(tmp_path, demo_models, runs_dir=str(blocker)))
    with pytest.raises(DistillError, match="cannot write to run folder .*runs-file"):
        run_pipeline(config)
    assert blocker.read_text() == "not a folder"


def test_baselines_are_trained_on_the_same_data_and_scored_by_the_evaluate_stage(tmp_path, demo_models):
    path = _config(tmp_path, demo_models, teacher={"enabled": False},
                   train={"max_steps": 4, "eval_every": 4, "baselines": ["finetune"]})
    metrics = run_pipeline(load_config(path))
    run = tmp_path / "runs" / "run"
    baseline = run / "baselines" / "finetune"
    assert (baseline / "student" / "config.json").is_file()
    assert metrics["baselines"]["finetune"]["steps"] == 4
    predictions = _records(baseline / "predictions_test.jsonl")
    assert len(predictions) == metrics["data"]["test"]
    accuracy = metrics["baselines"]["finetune"]["test_accuracy"]
    assert sum(p["correct"] for p in predictions) / len(predictions) == pytest.approx(accuracy)
    report = (run / "report.md").read_text()
    assert "## Did the teacher's rationales help?" in report
    assert re.search(rf"\| finetune \| - \| [\d.]+% \| {accuracy * 100:.1f}% \|", report)
    assert json.loads((run / "state.json").read_text())["stages"]["teacher"]["detail"] == "teacher disabled in the config"
