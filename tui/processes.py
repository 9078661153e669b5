"""Pipeline processes as the UI starts and stops them, and the config of a new run.

The pipeline runs as its own detached process (``python -m mlx_distill run``), so closing the UI
never stops a run; whether it runs is read from the run folder's lock
(``mlx_distill.pipeline.running_pid``), which a dead process never holds.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import tomli_w

from mlx_distill.errors import DistillError
from mlx_distill.files import write_text_atomic
from mlx_distill.pipeline import CONFIG_FILE, running_pid

LOG_FILE = "pipeline.log"


class PipelineStarter(Protocol):
    """Starts and stops pipeline processes (``SubprocessStarter``, or a scripted fake in tests)."""

    def start(self, run_dir: Path, *, demo: bool = False) -> None: ...

    def stop(self, run_dir: Path) -> bool: ...

    def is_running(self, run_dir: Path) -> bool: ...

    def exit_code(self, run_dir: Path) -> int | None: ...


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """Create and return a fresh folder ``runs_dir/<name>`` (``-2``, ``-3``… when taken)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    for index in range(1, 10_000):
        path = runs_dir / (slug if index == 1 else f"{slug}-{index}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise DistillError(f"{runs_dir}: too many runs named {slug!r}; pick another name")


def write_new_run_config(run_dir: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` (the New run form's) as the run's ``config.toml`` and return its path."""
    path = Path(run_dir) / CONFIG_FILE
    write_text_atomic(path, tomli_w.dumps(config))
    return path


def pipeline_command(run_dir: Path, config_path: Path | None = None, *, demo: bool = False) -> list[str]:
    """The argv that runs (or resumes) the pipeline on ``run_dir`` headless."""
    run_dir = Path(run_dir)
    if demo:
        # The demo builds its tiny models and config itself; its run folder is <runs-dir>/<name>.
        return [sys.executable, "-m", "mlx_distill", "demo", "--runs-dir", str(run_dir.parent.resolve()),
                "--name", run_dir.name, "--quiet"]
    config_path = config_path or run_dir / CONFIG_FILE
    return [sys.executable, "-m", "mlx_distill", "run", str(config_path), "--run-dir", str(run_dir), "--quiet"]


def start_pipeline(run_dir: Path, config_path: Path | None = None, *, demo: bool = False) -> subprocess.Popen:
    """Start the pipeline as its own detached process; output goes to ``run_dir/pipeline.log``.

    The process gets a new session, so closing the UI (or its terminal) never stops the run.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / LOG_FILE).open("ab") as log:
        return subprocess.Popen(
            pipeline_command(run_dir, config_path, demo=demo),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def stop_pipeline(run_dir: Path) -> bool:
    """Ask the run's pipeline process to stop (SIGINT: it checkpoints, finished work is kept).

    Returns False when no pipeline process holds the run folder.
    """
    pid = running_pid(run_dir)
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    return True


def log_tail(run_dir: Path, lines: int = 20) -> str:
    """The last lines of ``pipeline.log`` (where a crashed pipeline's traceback lands)."""
    try:
        text = (Path(run_dir) / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class SubprocessStarter:
    """Starts and stops real pipeline processes (the app's default ``PipelineStarter``)."""

    def __init__(self) -> None:
        self._children: dict[Path, subprocess.Popen] = {}

    def start(self, run_dir: Path, *, demo: bool = False) -> None:
        self._children[Path(run_dir)] = start_pipeline(run_dir, demo=demo)

    def stop(self, run_dir: Path) -> bool:
        if stop_pipeline(run_dir):
            return True
        child = self._children.get(Path(run_dir))
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)  # started, but not holding the run's lock yet
            return True
        return False

    def is_running(self, run_dir: Path) -> bool:
        child = self._children.get(Path(run_dir))
        if child is not None and child.poll() is None:
            return True
        return running_pid(run_dir) is not None

    def exit_code(self, run_dir: Path) -> int | None:
        """The exit status of a pipeline this starter started and that has ended, else None."""
        child = self._children.get(Path(run_dir))
        return None if child is None else child.poll()
