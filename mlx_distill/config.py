"""The run config: a TOML file in, a typed `RunConfig` out, and the resolved TOML saved with a run.

Config is data only; run state (which stages are done) lives in the run folder's state.json.
Every key is documented in examples/svamp.toml. An unknown key is an error that names it.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from mlx_distill.errors import DistillError

FORMAT_VERSION = 1
METHODS = ("step-by-step", "finetune", "distill", "cot")
RATIONALE_SOURCES = ("teacher", "human", "none")
FILTERS = ("gold", "all", "teacher")


@dataclass
class TaskSection:
    name: str = ""
    data: str = ""
    subsample: float = 1.0
    validation_fraction: float = 0.1
    seed: int = 0
    columns: dict[str, str] = field(default_factory=dict)
    human_rationales: str = ""


@dataclass
class TeacherSection:
    enabled: bool = True
    model: str = ""
    batch_size: int = 16
    max_tokens: int = 256
    filter: str = "gold"
    quantize: int = 0
    prompt_file: str = ""
    rationalize: bool = False
    samples: int = 1
    limit: int = 0
    evaluate_test: bool = False


@dataclass
class TrainSection:
    student: str = ""
    method: str = "step-by-step"
    rationale_source: str = "teacher"
    baselines: list[str] = field(default_factory=list)
    # Everything else in [train] goes to mlx_distill.train.TrainConfig by name.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    name: str
    task: TaskSection
    teacher: TeacherSection
    train: TrainSection
    runs_dir: str = "runs"
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        train = {k: v for k, v in dataclasses.asdict(self.train).items() if k != "options"}
        train.update(self.train.options)
        return {
            "format_version": self.format_version,
            "name": self.name,
            "runs_dir": self.runs_dir,
            "task": dataclasses.asdict(self.task),
            "teacher": dataclasses.asdict(self.teacher),
            "train": train,
        }

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def _train_config_fields() -> dict[str, dataclasses.Field]:
    from mlx_distill.train import TrainConfig

    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _section(cls, data: dict[str, Any], where: str, source: str):
    if not isinstance(data, dict):
        raise DistillError(f"{source}: [{where}] must be a table of keys")
    known = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in known:
            raise DistillError(
                f"{source}: unknown key '{where}.{key}'; known keys: {', '.join(sorted(known))}"
            )
        values[key] = value
    return cls(**values)


def _resolve_path(value: str, base: Path) -> str:
    if not value:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        candidate = (base / path).resolve()
        # A hub id ("org/name") is not a path: keep it unless a folder of that name exists here.
        if path.parts and len(path.parts) == 2 and not candidate.exists() and not value.startswith("."):
            return value
        return str(candidate)
    return str(path)


def _resolve_model(value: str, base: Path) -> str:
    """A catalog name or hub id stays as it is; a local folder becomes an absolute path."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = (base / path).resolve()
    if candidate.exists() or value.startswith("."):
        return str(candidate)
    return value


def parse_config(data: dict[str, Any], source: str = "config", base_dir: Path | None = None) -> RunConfig:
    """Check and type a config dict (from TOML). Relative paths resolve against ``base_dir``."""
    from mlx_distill.catalog import load_catalog

    base = base_dir or Path.cwd()
    top_keys = {"format_version", "name", "runs_dir", "task", "teacher", "train"}
    for key in data:
        if key not in top_keys:
            raise DistillError(f"{source}: unknown key '{key}'; known keys: {', '.join(sorted(top_keys))}")
    version = int(data.get("format_version", FORMAT_VERSION))
    if version > FORMAT_VERSION:
        raise DistillError(
            f"{source}: format_version {version} is newer than this mlx-distill understands "
            f"({FORMAT_VERSION}); upgrade mlx-distill"
        )
    task = _section(TaskSection, data.get("task", {}), "task", source)
    teacher = _section(TeacherSection, data.get("teacher", {}), "teacher", source)

    train_data = dict(data.get("train", {}))
    pipeline_keys = {f.name for f in dataclasses.fields(TrainSection)} - {"options"}
    options = {k: train_data.pop(k) for k in list(train_data) if k not in pipeline_keys}
    train = _section(TrainSection, train_data, "train", source)
    allowed = _train_config_fields()
    for key in options:
        if key not in allowed:
            raise DistillError(
                f"{source}: unknown key 'train.{key}'; known keys: "
                f"{', '.join(sorted(set(allowed) | pipeline_keys - {'method'}))}"
            )
    train.options = options

    from mlx_distill.data import TASKS

    if not task.name:
        raise DistillError(f"{source}: missing 'task.name'; one of: {', '.join(TASKS)}")
    if task.name not in TASKS:
        raise DistillError(f"{source}: unknown task '{task.name}'; known tasks: {', '.join(TASKS)}")
    if not task.data:
        raise DistillError(f"{source}: missing 'task.data': the path of the {task.name} data file or folder")
    if not 0 < task.subsample <= 1:
        raise DistillError(f"{source}: task.subsample must be in (0, 1], got {task.subsample}")
    if teacher.filter not in FILTERS:
        raise DistillError(f"{source}: teacher.filter must be one of {', '.join(FILTERS)}, got '{teacher.filter}'")
    if train.method not in METHODS:
        raise DistillError(f"{source}: unknown train.method '{train.method}'; one of {', '.join(METHODS)}")
    for baseline in train.baselines:
        if baseline not in METHODS:
            raise DistillError(f"{source}: unknown method '{baseline}' in train.baselines; one of {', '.join(METHODS)}")
    if train.rationale_source not in RATIONALE_SOURCES:
        raise DistillError(
            f"{source}: train.rationale_source must be one of {', '.join(RATIONALE_SOURCES)}, "
            f"got '{train.rationale_source}'"
        )
    if train.rationale_source == "teacher" and not teacher.enabled and train.method in ("step-by-step", "cot"):
        raise DistillError(
            f"{source}: train.rationale_source is 'teacher' but teacher.enabled is false; "
            "enable the teacher or set rationale_source = \"human\" or \"none\""
        )

    catalog = load_catalog()
    teacher.model = teacher.model or catalog.default_teacher
    train.student = train.student or catalog.default_student
    task.data = _resolve_path(task.data, base)
    task.human_rationales = _resolve_path(task.human_rationales, base)
    teacher.prompt_file = _resolve_path(teacher.prompt_file, base)
    teacher.model = _resolve_model(teacher.model, base)
    train.student = _resolve_model(train.student, base)

    name = str(data.get("name") or f"{task.name}-{train.method}")
    if not name or "/" in name or name.startswith("."):
        raise DistillError(f"{source}: name '{name}' must be a plain folder name (no '/')")
    runs_dir = _resolve_path(str(data.get("runs_dir", "runs")), base)
    return RunConfig(name=name, task=task, teacher=teacher, train=train, runs_dir=runs_dir,
                     format_version=FORMAT_VERSION)


def load_config(path: str | Path) -> RunConfig:
    """Read a run config TOML file; relative paths in it are relative to the file's folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DistillError(f"config file {path} not found; see examples/svamp.toml for one") from None
    except OSError as error:
        raise DistillError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise DistillError(f"{path}: not valid TOML: {error}") from None
    return parse_config(data, source=str(path), base_dir=path.resolve().parent)


def train_config_from(config: RunConfig, method: str | None = None):
    """The trainer's `TrainConfig` for this run (``method`` overrides, for baselines)."""
    from mlx_distill.train import TrainConfig

    options = dict(config.train.options)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    if "method" in names:
        options["method"] = method or config.train.method
    if "seed" in names and "seed" not in options:
        options["seed"] = config.task.seed
    if "human_rationales" in names:
        options["human_rationales"] = config.train.rationale_source == "human"
    return TrainConfig(**options)
