"""The New run form as data: check what the user entered and turn it into a run config.

No Textual here; the screen collects a ``RunForm`` and shows the problems this module finds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mlx_distill.config import parse_config
from mlx_distill.data import DEFAULT_DATASETS, HUB_PREFIX, TASKS, default_source, load_task, parse_hub_spec
from mlx_distill.errors import DistillError
from mlx_distill.methods import DEFAULT_METHOD, METHODS
from mlx_distill.platform import format_bytes
from mlx_distill.tui.model_choices import ModelChoice, find_choice

# Methods that never ask the teacher for anything.
NO_TEACHER_METHODS = ("finetune",)


@dataclass(frozen=True)
class RunForm:
    """What the user entered, as text (the screen does no parsing)."""

    task: str
    data_path: str
    teacher: str
    student: str
    method: str = DEFAULT_METHOD
    alpha: str = "0.5"
    fraction: str = "1.0"
    name: str = ""


def _number(text: str, what: str, low: float, high: float, low_open: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DistillError(f"{what} {text!r} is not a number; enter one between {low} and {high}") from None
    if value > high or value < low or (low_open and value == low):
        bound = f"above {low}" if low_open else f"at least {low}"
        raise DistillError(f"{what} {value} is out of range; it must be {bound} and at most {high}")
    return value


def _check_model(role: str, name: str, choices: Iterable[ModelChoice]) -> None:
    if not name.strip():
        raise DistillError(f"no {role} chosen; pick one from the list or type a hub id or folder")
    choice = find_choice(choices, name)
    if choice is not None and choice.problem:
        raise DistillError(f"{role} {name} cannot be used: {choice.problem}")
    if choice is not None and not choice.fits:
        raise DistillError(
            f"{role} {name} needs {format_bytes(choice.memory_bytes or 0)} of memory, more than this "
            f"machine has available; pick a smaller {role}"
        )
    path = Path(name).expanduser()
    if name.startswith((".", "/", "~")) and not (path.is_dir() or (role == "teacher" and path.suffix == ".gguf"
                                                                  and path.is_file())):
        what = "folder or .gguf file" if role == "teacher" else "folder"
        raise DistillError(f"{role} {what} {name} does not exist; give an existing {what} or a hub id")


def data_hint(task: str) -> str:
    """What the data field takes for ``task``, and what leaving it empty reads."""
    if task in DEFAULT_DATASETS:
        return (f"empty: the hub copy {default_source(task).spec}, {DEFAULT_DATASETS[task].size}, fetched once\n"
                f"or a hub id ({HUB_PREFIX}ORG/NAME[:CONFIG][@REV] or ORG/NAME) or a local file or folder")
    return f"the {task} data: a local file, or a folder of train/validation/test files"


def resolve_data(task: str, text: str) -> str:
    """The ``task.data`` the data field stands for: a hub dataset's ``hf:`` spec (empty: the built-in
    task's default hub copy) or a local file or folder as an absolute path.

    Raises:
        DistillError: one line naming the problem: no data for a task without a hub copy, a
            malformed ``hf:`` id, a hub id for a task that reads local files only, a missing path.
    """
    text = text.strip()
    if not text:
        if task not in DEFAULT_DATASETS:
            raise DistillError(f"no data for the {task} task; give its file or folder")
        return default_source(task).spec
    hub = parse_hub_spec(text)
    if hub is not None:
        if task not in DEFAULT_DATASETS:
            raise DistillError(f"hub dataset {hub.spec} cannot be read by the {task} task (hub datasets are for "
                               f"{', '.join(DEFAULT_DATASETS)}); give a local file or folder")
        return hub.spec
    path = Path(text).expanduser()
    if not path.exists():
        also = f", a hub id ({HUB_PREFIX}ORG/NAME) or nothing for its hub copy" if task in DEFAULT_DATASETS else ""
        raise DistillError(f"data path {text} does not exist; give the task's data file or folder{also}")
    return str(path.resolve())


def check_form(form: RunForm, choices: Iterable[ModelChoice] = ()) -> list[str]:
    """Every problem with the form as a one-line message (empty when it can start)."""
    choices = list(choices)
    problems = []
    if form.task not in TASKS:
        problems.append(f"task {form.task!r} is unknown; pick one of {', '.join(TASKS)}")
    else:
        try:
            resolve_data(form.task, form.data_path)
        except DistillError as error:
            problems.append(str(error))
    if form.method not in METHODS:
        problems.append(f"method {form.method!r} is unknown; pick one of {', '.join(METHODS)}")
    checks = [
        lambda: _check_model("student", form.student, choices),
        lambda: _number(form.alpha, "alpha", 0.0, 1.0),
        lambda: _number(form.fraction, "data fraction", 0.0, 1.0, low_open=True),
    ]
    if form.method not in NO_TEACHER_METHODS:
        checks.insert(0, lambda: _check_model("teacher", form.teacher, choices))
    for check in checks:
        try:
            check()
        except DistillError as error:
            problems.append(str(error))
    return problems


def run_name(form: RunForm, now: float | None = None) -> str:
    if form.name.strip():
        return form.name.strip()
    return f"{form.task}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"


def build_config(form: RunForm, runs_dir: Path | str = "runs", now: float | None = None) -> dict[str, Any]:
    """The run config (the schema of ``mlx_distill.config``) a new run starts from.

    Raises:
        DistillError: the data field names no usable data (see ``resolve_data``).
    """
    teacher_used = form.method not in NO_TEACHER_METHODS
    train: dict[str, Any] = {"student": form.student.strip(), "method": form.method, "alpha": float(form.alpha)}
    if not teacher_used:
        train["rationale_source"] = "none"
    config: dict[str, Any] = {
        "name": run_name(form, now),
        "runs_dir": str(Path(runs_dir).expanduser().resolve()),
        "task": {
            "name": form.task,
            "data": resolve_data(form.task, form.data_path),
            "subsample": float(form.fraction),
        },
        "teacher": {"enabled": teacher_used, "model": form.teacher.strip()},
        "train": train,
    }
    return config


def check_config(config: dict[str, Any]) -> str:
    """Check the config as the pipeline will and parse its task data; returns a one-line summary.

    Slow for large data (it reads every example): call it off the UI thread.

    Raises:
        DistillError: a bad key or value, or data that does not parse (naming the file and line).
    """
    parsed = parse_config(config, source="the New run form")
    task = parsed.task
    try:
        data = load_task(task.name, task.data, seed=task.seed, validation_fraction=task.validation_fraction,
                         subsample=task.subsample, columns=task.columns or None)
    except DistillError:
        raise
    except (ValueError, KeyError, OSError, UnicodeDecodeError) as error:
        raise DistillError(f"{task.data}: {error}") from error
    return f"{len(data.train)} train · {len(data.validation)} validation · {len(data.test)} test examples"
