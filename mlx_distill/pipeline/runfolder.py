"""A run folder on disk: its files, its stage states, its event log and its process lock.

Layout of ``runs/<name>/``::

    config.toml        the resolved config (what the stages were made with)
    state.json         stage states and fingerprints (run state, never config)
    events.jsonl       every progress event, one JSON object a line, append-only
    rationales.jsonl   the teacher's rationales (resumable cache)
    teacher_test.jsonl the teacher's answers to the test questions (optional)
    train/             checkpoints and the trainer's own files
    student/           the exported student, Hugging Face layout
    metrics.json       accuracies, sizes, latencies, memory
    report.md          the run's report
    pid                the pipeline process while it runs
"""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_distill.config import FORMAT_VERSION
from mlx_distill.errors import DistillError
from mlx_distill.events import Event

STATE_FILE = "state.json"
CONFIG_FILE = "config.toml"
EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.json"
PID_FILE = "pid"


def pipeline_pid(run_dir: str | Path) -> int | None:
    """The pid of the live pipeline process writing this run folder, or None."""
    try:
        pid = int((Path(run_dir) / PID_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return None if _is_zombie(pid) else pid


def _is_zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] == "Z"


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file so readers see the old or the new content, never half of it."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


@dataclass
class RunFolder:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def events_path(self) -> Path:
        return self.path / EVENTS_FILE

    @property
    def rationales_path(self) -> Path:
        return self.path / "rationales.jsonl"

    @property
    def teacher_test_path(self) -> Path:
        return self.path / "teacher_test.jsonl"

    @property
    def train_dir(self) -> Path:
        return self.path / "train"

    @property
    def student_dir(self) -> Path:
        return self.path / "student"

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def report_path(self) -> Path:
        return self.path / "report.md"

    # -- creation and locking ---------------------------------------------------------------
    def create(self) -> None:
        """Make the folder, or say in one line why it cannot be written."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            reason = "disk full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
            raise DistillError(
                f"cannot write to run folder {self.path}: {reason}; choose another runs_dir or --run-dir"
            ) from None

    def running_pid(self) -> int | None:
        """The pid of another live pipeline process working in this folder, if any."""
        pid = pipeline_pid(self.path)
        return pid if pid != os.getpid() else None

    def lock(self) -> None:
        pid = self.running_pid()
        if pid is not None:
            raise DistillError(
                f"run {self.path} is already running (pid {pid}); wait for it or stop it with kill -INT {pid}"
            )
        write_atomic(self.path / PID_FILE, str(os.getpid()))

    def unlock(self) -> None:
        try:
            if int((self.path / PID_FILE).read_text().strip()) == os.getpid():
                (self.path / PID_FILE).unlink()
        except (OSError, ValueError):
            pass

    # -- stage state --------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.path / STATE_FILE).read_text())
        except FileNotFoundError:
            return {"format_version": FORMAT_VERSION, "stages": {}}
        except (OSError, json.JSONDecodeError) as error:
            raise DistillError(f"{self.path / STATE_FILE} is damaged ({error}); delete it to redo the run") from None
        version = int(state.get("format_version", FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise DistillError(
                f"run folder {self.path} was written by a newer mlx-distill (format {version} > "
                f"{FORMAT_VERSION}); upgrade mlx-distill to open it"
            )
        state.setdefault("stages", {})
        return state

    def write_state(self, state: dict[str, Any]) -> None:
        write_atomic(self.path / STATE_FILE, json.dumps(state, indent=2, sort_keys=True))

    def set_stage(self, stage: str, **fields: Any) -> None:
        state = self.read_state()
        entry = state["stages"].setdefault(stage, {})
        entry.update(fields, updated=time.time())
        self.write_state(state)

    def stage(self, stage: str) -> dict[str, Any]:
        return self.read_state()["stages"].get(stage, {})

    def read_metrics(self) -> dict[str, Any]:
        try:
            return json.loads(self.metrics_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def update_metrics(self, **values: Any) -> None:
        metrics = self.read_metrics()
        metrics.update(values)
        write_atomic(self.metrics_path, json.dumps(metrics, indent=2, sort_keys=True))


class EventLog:
    """An ``on_event`` subscriber appending each event to events.jsonl, flushed per event so a
    UI following the file sees it at once and a killed process loses nothing written."""

    def __init__(self, path: Path):
        self.handle = open(path, "a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        self.handle.write(event.to_json() + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()
