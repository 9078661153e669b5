"""A run folder on disk: the one API the pipeline writes through and the UI reads through.

Layout of ``runs/<name>/``::

    config.toml        the resolved config (what the stages were made with)
    state.json         stage states and fingerprints (run state, never config)
    events.jsonl       every progress event, one JSON object a line, append-only
    rationales.jsonl   the teacher's rationales (resumable cache)
    teacher_test.jsonl the teacher's answers to the test questions (optional)
    train/             checkpoints and the trainer's own files; train/student the trained student
    baselines/<m>/     a baseline's training folder, its student and its test predictions
    candidates/<name>/ the configured method at another α (train.select = "validation"), the same
    student/           the exported student (the candidate best on validation), Hugging Face layout
    predictions_test.jsonl  the exported student's answers to the test questions
    metrics.json       accuracies, sizes, latencies, memory
    report.md          the run's report
    pid                the lock one pipeline process holds while it writes; holds its pid
"""

from __future__ import annotations

import contextlib
import errno
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from mlx_distill.config import FORMAT_VERSION
from mlx_distill.errors import DistillError
from mlx_distill.events import STAGES, Event, event_from_json
from mlx_distill.files import JsonlWriter, exclusive_lock, lock_holder, write_json_atomic, write_text_atomic

CONFIG_FILE = "config.toml"
STATE_FILE = "state.json"
EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.json"
PID_FILE = "pid"


def check_format(path: Path, data: dict[str, Any]) -> None:
    """Raise DistillError when ``data`` (read from the run folder file ``path``) is from a newer mlx-distill.

    The one format check of a run folder: reading (the UI) and writing (the pipeline) both call it.
    """
    version = data.get("format_version", FORMAT_VERSION)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise DistillError(
            f"{path}: written by a newer mlx-distill (format {version}, this one reads {FORMAT_VERSION}); "
            "upgrade mlx-distill to open this run"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as error:
        raise DistillError(f"{path}: not a readable JSON file ({error}); delete it to redo the run") from None
    return data if isinstance(data, dict) else {}


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's resolved ``config.toml`` as a dict (``{}`` when absent), after the format check.

    Raises:
        DistillError: the file is not TOML, or it was written by a newer mlx-distill.
    """
    path = Path(run_dir) / CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as error:
        raise DistillError(f"{path}: not a readable TOML file ({error}); fix or delete it") from None
    check_format(path, data)
    return data


def read_state(run_dir: str | Path) -> dict[str, Any]:
    """``state.json`` (``{"format_version", "stages": {stage: {"status", ...}}}``), after the format check."""
    path = Path(run_dir) / STATE_FILE
    state = _read_json(path) or {"format_version": FORMAT_VERSION, "stages": {}}
    check_format(path, state)
    state.setdefault("stages", {})
    return state


def running_pid(run_dir: str | Path) -> int | None:
    """The pid of the live pipeline process holding this run folder's lock, or None.

    A dead process never holds the lock, so a run whose state.json says "running" but whose lock
    is free was stopped or killed.
    """
    return lock_holder(Path(run_dir) / PID_FILE)


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
    def predictions_path(self) -> Path:
        return self.path / "predictions_test.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def report_path(self) -> Path:
        return self.path / "report.md"

    def baseline_dir(self, method: str) -> Path:
        return self.path / "baselines" / method

    @property
    def candidates_dir(self) -> Path:
        return self.path / "candidates"

    # -- creation and the writer's lock ---------------------------------------------------------
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

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder's writer lock (one pipeline process at a time).

        Raises:
            DistillError: another live process writes this run (its pid is named).
        """
        with exclusive_lock(self.path / PID_FILE, f"run {self.path}"):
            yield

    def write_config(self, toml_text: str) -> None:
        write_text_atomic(self.config_path, toml_text)

    # -- stage state and metrics --------------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        return read_state(self.path)

    def write_state(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.path / STATE_FILE, {**state, "format_version": FORMAT_VERSION})

    def set_stage(self, stage: str, **fields: Any) -> None:
        state = self.read_state()
        entry = state["stages"].setdefault(stage, {})
        entry.update(fields, updated=time.time())
        self.write_state(state)

    def stage(self, stage: str) -> dict[str, Any]:
        return self.read_state()["stages"].get(stage, {})

    def read_metrics(self) -> dict[str, Any]:
        return _read_json(self.metrics_path)

    def update_metrics(self, **values: Any) -> None:
        write_json_atomic(self.metrics_path, {**self.read_metrics(), **values})


class EventLog:
    """An ``on_event`` subscriber appending each event to events.jsonl, flushed per event so a
    UI following the file sees it at once; a torn last line (a killed writer) is healed first.

    The log is information, not state: an event that cannot be written (a full disk) is dropped
    rather than failing the stage, and the next write reopens the file, healing what was cut.
    """

    def __init__(self, path: Path):
        self.path = path
        self.writer: JsonlWriter | None = JsonlWriter(path)

    def __call__(self, event: Event) -> None:
        try:
            if self.writer is None:
                self.writer = JsonlWriter(self.path)
            self.writer.write_lines([event.to_json()])
        except OSError:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError):
                self.writer.close()
            self.writer = None


# -- reading a run (the UI's side) ----------------------------------------------------------------
@dataclass(frozen=True)
class RunInfo:
    """What the runs browser shows about one run folder.

    ``problem`` is a one-line message when the folder cannot be opened (e.g. written by a newer
    version); the other fields are then empty.
    """

    path: Path
    name: str
    task: str = ""
    teacher: str = ""
    student: str = ""
    method: str = ""
    accuracy: float | None = None
    created: float = 0.0
    status: str = "new"  # new | running | finished | stopped | failed | incomplete | unreadable
    problem: str = ""
    config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def date_text(self) -> str:
        return datetime.fromtimestamp(self.created).strftime("%Y-%m-%d %H:%M") if self.created else ""

    @property
    def accuracy_text(self) -> str:
        return f"{self.accuracy:.1%}" if self.accuracy is not None else "—"


def stage_states(state: dict[str, Any]) -> dict[str, str]:
    """Stage name -> status ("running", "done", "stopped", "failed") from a ``read_state`` dict."""
    return {name: str(entry.get("status", "")) for name, entry in state["stages"].items()}


def student_accuracy(metrics: dict[str, Any]) -> float | None:
    """The student's test accuracy from metrics.json (the evaluate stage writes it)."""
    value = metrics.get("student_test_accuracy")
    return float(value) if isinstance(value, (int, float)) else None


def run_status(run_dir: Path, states: dict[str, str]) -> str:
    """running (its lock is held) | failed | stopped | finished | incomplete | new."""
    if running_pid(run_dir) is not None:
        return "running"
    values = set(states.values())
    if "failed" in values:
        return "failed"
    if "stopped" in values:
        return "stopped"
    if all(states.get(stage) == "done" for stage in STAGES):
        return "finished"
    if states or (run_dir / EVENTS_FILE).exists():
        return "incomplete"  # a stage "running" with a free lock: its process was killed
    return "new"


def teacher_of(config: dict[str, Any]) -> str:
    """The run's teacher model ("" when its teacher stage is off)."""
    teacher = config.get("teacher", {})
    return "" if teacher.get("enabled") is False else str(teacher.get("model", ""))


def read_run(run_dir: Path) -> RunInfo:
    """Summarise one run folder; never raises for a bad folder (``problem`` says what is wrong)."""
    run_dir = Path(run_dir)
    created = _created(run_dir)
    try:
        config = read_run_config(run_dir)
        state = read_state(run_dir)
        metrics = _read_json(run_dir / METRICS_FILE)
    except DistillError as error:
        return RunInfo(path=run_dir, name=run_dir.name, created=created, status="unreadable", problem=str(error))
    train = config.get("train", {})
    return RunInfo(
        path=run_dir,
        name=str(config.get("name") or run_dir.name),
        task=str(config.get("task", {}).get("name", "")),
        teacher=teacher_of(config),
        student=str(train.get("student", "")),
        method=str(train.get("method", "")),
        accuracy=student_accuracy(metrics),
        created=created,
        status=run_status(run_dir, stage_states(state)),
        config=config,
    )


def _created(run_dir: Path) -> float:
    """When the run began: its first event's time, else its config's modification time."""
    try:
        with (run_dir / EVENTS_FILE).open("rb") as file:
            return float(json.loads(file.readline())["time"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for path in (run_dir / CONFIG_FILE, run_dir):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (CONFIG_FILE, EVENTS_FILE, STATE_FILE))


def list_runs(runs_dir: Path) -> list[RunInfo]:
    """Every run folder directly under ``runs_dir``, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    runs = [read_run(path) for path in runs_dir.iterdir() if is_run_dir(path)]
    return sorted(runs, key=lambda run: (run.created, run.name), reverse=True)


class EventTail:
    """Follow a growing ``events.jsonl``: each ``read_new()`` returns the events added since.

    Only whole lines are consumed, so a line the writer has not finished (a torn last line) is
    read on a later call. Lines that are not events (bad JSON, an event kind from a newer
    version) are skipped and counted in ``skipped``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.skipped = 0

    def read_new(self, max_bytes: int = 8 << 20) -> list[Event]:
        try:
            with self.path.open("rb") as file:
                file.seek(self.offset)
                chunk = file.read(max_bytes)
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        events = []
        for line in chunk[: end + 1].splitlines():
            if not line.strip():
                continue
            try:
                events.append(event_from_json(line.decode("utf-8")))
            except (ValueError, TypeError, UnicodeDecodeError):
                self.skipped += 1
        return events


def read_events(path: Path) -> list[Event]:
    """Every whole event line of an ``events.jsonl`` (a torn last line is left out)."""
    tail = EventTail(path)
    events: list[Event] = []
    while batch := tail.read_new():
        events.extend(batch)
    return events


# -- the run's student ---------------------------------------------------------------------------
def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def exported_student(run_dir: str | Path) -> Path | None:
    """The run's finished student: the exported ``student/``, else the trainer's ``train/student``."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / "student", run_dir / "train" / "student"):
        if _is_model_dir(candidate):
            return candidate
    return None


@dataclass(frozen=True)
class StudentSource:
    """What the chat loads: a student folder, plus checkpoint weights to put in it mid-training."""

    model: str  # an exported student folder, or the run's base student (hub id / folder)
    weights: str | None = None  # a training checkpoint folder holding model.safetensors

    @property
    def shown(self) -> Path:
        return Path(self.weights or self.model)


def student_source(run_dir: Path) -> StudentSource | None:
    """The run's finished student; else its best (or newest) training checkpoint; else None."""
    run_dir = Path(run_dir)
    exported = exported_student(run_dir)
    if exported is not None:
        return StudentSource(str(exported))
    checkpoints = [p for p in (run_dir / "train" / "checkpoints").glob("*-*")
                   if (p / "model.safetensors").is_file() and not p.name.endswith(".tmp")]
    if not checkpoints:
        return None
    best = [p for p in checkpoints if p.name.startswith("best-")] or checkpoints
    newest = max(best, key=lambda p: (p.name.rsplit("-", 1)[-1], p.stat().st_mtime))
    try:
        base = str(read_run_config(run_dir).get("train", {}).get("student", ""))
    except DistillError:
        return None
    return StudentSource(base, str(newest)) if base else None
