"""The pipeline end to end through the CLI, on tiny real-format models built here.

Covers: stage skipping on rerun, SIGKILL in the teacher stage and in training followed by a rerun
that ends where an uninterrupted run ends, a changed config refused, and bad inputs that each give
one line and leave nothing half-written.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from mlx_distill.commands.demo import DEMO_STUDENT, _demo_corpus, demo_data_dir
from mlx_distill.events import event_from_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from mlx_distill.testing.tiny_llm import build_tiny_llm
    from mlx_distill.testing.tiny_t5 import build_tiny_t5

    root = tmp_path_factory.mktemp("models")
    corpus = _demo_corpus(demo_data_dir())
    return {
        "teacher": build_tiny_llm(root / "teacher", arch="qwen2", corpus=corpus, seed=0),
        "student": build_tiny_t5(root / "student", corpus=corpus, **DEMO_STUDENT),
    }


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
def straight_run(tmp_path_factory, tiny_models) -> Path:
    """One uninterrupted run, the reference for the resume tests."""
    tmp = tmp_path_factory.mktemp("straight")
    result = _run("run", str(_config(tmp, tiny_models)))
    assert result.returncode == 0, result.stderr
    return tmp / "runs" / "run"


def test_run_writes_every_stage_and_a_rerun_redoes_nothing(straight_run, tiny_models):
    run = straight_run
    for name in ("config.toml", "state.json", "events.jsonl", "rationales.jsonl", "metrics.json", "report.md",
                 "predictions_test.jsonl", "student/config.json", "student/model.safetensors"):
        assert (run / name).exists(), name
    assert not (run / "pid").exists()
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


def test_sigkill_in_teacher_then_in_training_resumes_to_the_same_result(tmp_path, tiny_models, straight_run):
    config = _config(tmp_path, tiny_models)
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


def test_changed_config_is_refused_with_the_change_named(tmp_path, tiny_models):
    first = _config(tmp_path, tiny_models, train={"max_steps": 4, "eval_every": 4})
    assert _run("run", str(first)).returncode == 0
    changed = _config(tmp_path, tiny_models, train={"max_steps": 4, "eval_every": 4, "alpha": 0.9})
    result = _run("run", str(changed))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train" in lines[0] and "alpha" in lines[0] and "--redo train" in lines[0]
    redo = _run("run", str(changed), "--redo", "train")
    assert redo.returncode == 0, redo.stderr


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_unknown_config_key_is_named(tmp_path, tiny_models):
    path = _config(tmp_path, tiny_models, train={"learning_rate_typo": 1.0})
    message = _one_line_error(_run("run", str(path)))
    assert "train.learning_rate_typo" in message
    assert not (tmp_path / "runs").exists()


def test_data_file_that_does_not_parse(tmp_path, tiny_models):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "label": "b"}\n{"input": broken\n{"input": "c", "label": "d"}\n')
    path = _config(tmp_path, tiny_models, task={"name": "jsonl", "data": str(bad)})
    message = _one_line_error(_run("run", str(path)))
    assert "bad.jsonl:2" in message
    assert not (tmp_path / "runs").exists()


def test_model_too_big_for_memory(tmp_path, tiny_models):
    path = _config(tmp_path, tiny_models, teacher={"model": "qwen2.5-72b"})
    message = _one_line_error(_run("run", str(path)))
    assert "qwen2.5-72b" in message and "try" in message
    assert not (tmp_path / "runs").exists()


def test_unwritable_run_folder(tmp_path, tiny_models):
    # A file where the runs folder should be cannot be written into, even by root.
    blocker = tmp_path / "runs-file"
    blocker.write_text("not a folder")
    path = _config(tmp_path, tiny_models, runs_dir=str(blocker))
    message = _one_line_error(_run("run", str(path)))
    assert "cannot write to run folder" in message and "runs-file" in message
    assert blocker.read_text() == "not a folder"


def test_baselines_are_trained_on_the_same_data_and_reported(tmp_path, tiny_models):
    path = _config(tmp_path, tiny_models, teacher={"enabled": False},
                   train={"max_steps": 4, "eval_every": 4, "baselines": ["finetune"]})
    result = _run("run", str(path))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "run"
    assert (run / "baselines" / "finetune" / "student" / "config.json").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["baselines"]["finetune"]["steps"] == 4
    report = (run / "report.md").read_text()
    assert "## Baselines" in report and "| finetune |" in report
    assert json.loads((run / "state.json").read_text())["stages"]["teacher"]["detail"] == "teacher disabled in the config"
