"""Run folders as the UI sees them: list, follow, start, stop, resume.

A run folder (``runs/<name>/``) is written only by the pipeline process; this module only reads
it, except for two things the UI owns: the ``config.toml`` of a new run (``write_config``) and
the chat history (``chat.jsonl``). No Textual and no MLX here, so it is cheap to import and test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlx_distill.config import FORMAT_VERSION
from mlx_distill.errors import DistillError
from mlx_distill.events import STAGES, Event, event_from_json
from mlx_distill.pipeline.runfolder import (
    CONFIG_FILE,
    EVENTS_FILE,
    METRICS_FILE,
    STATE_FILE,
    pipeline_pid,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


LOG_FILE = "pipeline.log"
CHAT_FILE = "chat.jsonl"


@dataclass(frozen=True)
class RunInfo:
    """What the runs browser shows about one run folder.

    ``problem`` is a one-line message when the folder cannot be opened (e.g. written by a newer
    version); the other fields are then best effort.
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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError) as error:
        raise DistillError(f"{path}: not a readable TOML file ({error}); fix or delete it") from error


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as error:
        raise DistillError(f"{path}: not a readable JSON file ({error}); fix or delete it") from error
    return data if isinstance(data, dict) else {}


def _lookup(data: dict[str, Any], *paths: str) -> Any:
    """The value at the first dotted path that exists in ``data`` (None when none does)."""
    for dotted in paths:
        value: Any = data
        for key in dotted.split("."):
            if not isinstance(value, dict) or key not in value:
                value = None
                break
            value = value[key]
        if value is not None:
            return value
    return None


def check_format(run_dir: Path, config: dict[str, Any] | None = None, state: dict[str, Any] | None = None) -> None:
    """Raise DistillError when the run folder was written by a newer mlx-distill."""
    run_dir = Path(run_dir)
    config = _read_toml(run_dir / CONFIG_FILE) if config is None else config
    state = _read_json(run_dir / STATE_FILE) if state is None else state
    for source, data in ((CONFIG_FILE, config), (STATE_FILE, state)):
        version = data.get("format_version", 1)
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise DistillError(
                f"{run_dir / source}: written by a newer mlx-distill (format {version}, this one reads "
                f"{FORMAT_VERSION}); upgrade mlx-distill to open this run"
            )


def load_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved ``config.toml`` as a dict, after the format check."""
    config = _read_toml(Path(run_dir) / CONFIG_FILE)
    check_format(run_dir, config=config)
    return config


def stage_states(run_dir: Path) -> dict[str, str]:
    """Stage name -> state from ``state.json`` (``{}`` when absent).

    Accepts ``{"stages": {"train": "done"}}`` and ``{"stages": {"train": {"state": "done"}}}``.
    """
    stages = _read_json(Path(run_dir) / STATE_FILE).get("stages", {})
    states: dict[str, str] = {}
    if isinstance(stages, dict):
        for name, value in stages.items():
            if isinstance(value, dict):
                value = value.get("state") or value.get("status") or ""
            states[str(name)] = str(value)
    return states


def accuracy_from_metrics(metrics: dict[str, Any]) -> float | None:
    """The student's test accuracy (validation when there is no test figure) from metrics.json."""
    value = _lookup(
        metrics,
        "student_test_accuracy",
        "student.test_accuracy",
        "test_accuracy",
        "student.test.accuracy",
        "test.accuracy",
        "accuracy",
        "student.validation_accuracy",
        "best_validation_accuracy",
        "validation_accuracy",
    )
    return float(value) if isinstance(value, (int, float)) else None


def _status(run_dir: Path, states: dict[str, str], metrics: dict[str, Any]) -> str:
    if pipeline_pid(run_dir) is not None:
        return "running"
    values = set(states.values())
    if "failed" in values:
        return "failed"
    if "stopped" in values:
        return "stopped"
    if states and all(states.get(stage) in ("done", "skipped") for stage in STAGES):
        return "finished"
    if not states and accuracy_from_metrics(metrics) is not None:
        return "finished"
    if states or (run_dir / EVENTS_FILE).exists():
        return "incomplete"
    return "new"


def read_run(run_dir: Path) -> RunInfo:
    """Summarise one run folder; never raises for a bad folder (``problem`` says what is wrong)."""
    run_dir = Path(run_dir)
    created = _created(run_dir)
    try:
        config = _read_toml(run_dir / CONFIG_FILE)
        state = _read_json(run_dir / STATE_FILE)
        check_format(run_dir, config=config, state=state)
        metrics = _read_json(run_dir / METRICS_FILE)
    except DistillError as error:
        return RunInfo(path=run_dir, name=run_dir.name, created=created, status="unreadable", problem=str(error))
    return RunInfo(
        path=run_dir,
        name=str(config.get("name") or run_dir.name),
        task=str(_lookup(config, "task.name", "task") or ""),
        teacher=teacher_of(config),
        student=str(_lookup(config, "train.student", "student.model", "student") or ""),
        method=str(_lookup(config, "train.method", "method") or ""),
        accuracy=accuracy_from_metrics(metrics),
        created=created,
        status=_status(run_dir, stage_states(run_dir), metrics),
        config=config,
    )


def _created(run_dir: Path) -> float:
    """When the run began: its first event's time, else the folder's files' modification time."""
    try:
        with (run_dir / EVENTS_FILE).open("rb") as file:
            first = file.readline()
        return float(json.loads(first)["time"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for name in (CONFIG_FILE, STATE_FILE):
        try:
            return (run_dir / name).stat().st_mtime
        except OSError:
            continue
    try:
        return run_dir.stat().st_mtime
    except OSError:
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


# ---- starting and stopping the pipeline process ---------------------------------------------


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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps_toml(data: dict[str, Any]) -> str:
    """TOML text for a dict of scalars, lists and one level of tables (all a run config needs)."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in data.items() if not isinstance(value, dict) and value is not None]
    for key, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{key}]"]
            for name, value in table.items():
                if isinstance(value, dict):
                    raise TypeError(f"nested table {key}.{name} is not supported")
                if value is not None:
                    lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def write_config(run_dir: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` as the run's ``config.toml`` (atomically) and return its path."""
    path = Path(run_dir) / CONFIG_FILE
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(dumps_toml(config), encoding="utf-8")
    os.replace(tmp, path)
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

    Returns False when no pipeline process is running for this folder.
    """
    pid = pipeline_pid(run_dir)
    if pid is None:
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


class SubprocessLauncher:
    """Starts and stops real pipeline processes (the default launcher of the app)."""

    def __init__(self) -> None:
        self._children: dict[Path, subprocess.Popen] = {}

    def start(self, run_dir: Path, *, demo: bool = False) -> None:
        self._children[Path(run_dir)] = start_pipeline(run_dir, demo=demo)

    def stop(self, run_dir: Path) -> bool:
        if stop_pipeline(run_dir):
            return True
        child = self._children.get(Path(run_dir))
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)
            return True
        return False

    def is_running(self, run_dir: Path) -> bool:
        child = self._children.get(Path(run_dir))
        if child is not None and child.poll() is None:
            return True
        return pipeline_pid(run_dir) is not None

    def exit_code(self, run_dir: Path) -> int | None:
        """The exit status of a pipeline this launcher started and that has ended, else None."""
        child = self._children.get(Path(run_dir))
        return None if child is None else child.poll()


# ---- chat history ----------------------------------------------------------------------------


def append_chat(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one question/answer record to the run's ``chat.jsonl``."""
    record = {"time": time.time(), **record}
    path = Path(run_dir) / CHAT_FILE
    with path.open("a+b") as file:
        # After a torn last line (a UI killed mid-write) start on a fresh line.
        torn = file.tell() > 0 and (file.seek(-1, os.SEEK_END) or file.read(1) != b"\n")
        file.write((b"\n" if torn else b"") + json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")


def read_chat(run_dir: Path) -> list[dict[str, Any]]:
    """The run's chat history, oldest first (bad or torn lines are skipped)."""
    try:
        lines = (Path(run_dir) / CHAT_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


# ---- models of a run -------------------------------------------------------------------------


def _is_hf_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


@dataclass(frozen=True)
class StudentSource:
    """What the chat loads: a student folder, plus checkpoint weights to put in it mid-training."""

    model: str  # an exported student folder, or the run's base student (hub id / folder)
    weights: str | None = None  # a training checkpoint folder holding model.safetensors

    @property
    def shown(self) -> Path:
        return Path(self.weights or self.model)


def student_source(run_dir: Path) -> StudentSource | None:
    """The run's exported student; else its best (or newest) training checkpoint; else None."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / "student", run_dir / "train" / "student"):
        if _is_hf_model_dir(candidate):
            return StudentSource(str(candidate))
    checkpoints = [p for p in (run_dir / "train" / "checkpoints").glob("*-*") if (p / "model.safetensors").is_file()
                   and not p.name.endswith(".tmp")]
    if not checkpoints:
        return None
    best = [p for p in checkpoints if p.name.startswith("best-")] or checkpoints
    newest = max(best, key=lambda p: (p.name.rsplit("-", 1)[-1], p.stat().st_mtime))
    try:
        base = str(_lookup(load_config(run_dir), "train.student") or "")
    except DistillError:
        return None
    return StudentSource(base, str(newest)) if base else None


def student_path(run_dir: Path) -> Path | None:
    """The folder the chat's student comes from (a checkpoint folder mid-training), or None."""
    source = student_source(run_dir)
    return source.shown if source is not None else None


def teacher_of(config: dict[str, Any]) -> str:
    """The run's teacher model ("" when the run has none or its teacher stage is off)."""
    if _lookup(config, "teacher.enabled") is False:
        return ""
    return str(_lookup(config, "teacher.model", "teacher") or "")
