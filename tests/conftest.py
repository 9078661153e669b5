"""Shared fixtures: tiny real-format models and the synthetic task, built once per session.

No model reaches these machines from a hub; every checkpoint here is written in the real on-disk
format by ``mlx_distill.testing``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from mlx_distill.commands.demo import DEMO_STUDENT, _demo_corpus, demo_data_dir
from mlx_distill.testing.serving import RunningServer
from mlx_distill.testing.synthetic_task import build_model, write_task
from mlx_distill.testing.tiny_llm import build_tiny_llm
from mlx_distill.testing.tiny_t5 import build_tiny_t5

# Two xdist workers already keep both cores busy: OpenBLAS threads on top of them only spin against
# each other (measured: two demos side by side, 166 s each with OpenBLAS's default threads, 101 s
# with one; one demo alone takes 101 s either way). Set before the workers and every CLI subprocess
# start, which read it when OpenBLAS loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def synthetic_task(tmp_path_factory) -> Path:
    """The synthetic kinds task (train 240 / validation 48 / test 48)."""
    return write_task(tmp_path_factory.mktemp("task"))


@pytest.fixture(scope="session")
def small_synthetic_task(tmp_path_factory) -> Path:
    """The synthetic kinds task, small (train 64 / validation 8 / test 8)."""
    return write_task(tmp_path_factory.mktemp("small-task"), train=64, validation=8, test=8)


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    """A tiny T5 for the synthetic task, dropout 0.1."""
    return build_model(tmp_path_factory.mktemp("tiny"), dropout_rate=0.1)


@pytest.fixture(scope="session")
def tiny_student_without_dropout(tmp_path_factory) -> Path:
    """A tiny T5 for the synthetic task without dropout (learns faster at this width)."""
    return build_model(tmp_path_factory.mktemp("tiny0"), dropout_rate=0.0)


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> dict[str, Path]:
    """The demo's tiny teacher (qwen2 layout) and student, trained tokenizers on the demo corpus."""
    root = tmp_path_factory.mktemp("demo-models")
    corpus = _demo_corpus(demo_data_dir())
    return {
        "teacher": build_tiny_llm(root / "teacher", arch="qwen2", corpus=corpus, seed=0),
        "student": build_tiny_t5(root / "student", corpus=corpus, **DEMO_STUDENT),
    }


@pytest.fixture(scope="module")
def server(demo_models) -> Iterator[RunningServer]:
    """`serve` of the demo's tiny student on a loopback port, one per test module."""
    running = RunningServer(demo_models["student"])
    yield running
    running.close()


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """A relative ``runs`` folder in a fresh working directory, times shown in UTC (TUI snapshots)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield Path("runs")
    monkeypatch.delenv("TZ")
    time.tzset()


@pytest.fixture(scope="session")
def demo_run_process(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`mlx-distill demo` run once for the session (the real SmolLM2 teacher, the payoff's two
    candidates): tests/test_demo.py checks the run, tests/test_share.py exports and pushes it.
    Both modules are in the xdist group "demo", so one worker runs them and the demo runs once."""
    runs = tmp_path_factory.mktemp("demo-runs")
    done = subprocess.run([sys.executable, "-m", "mlx_distill", "demo", "--runs-dir", str(runs)],
                          capture_output=True, text=True, timeout=2400)
    return runs / "demo", done
