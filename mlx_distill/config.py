"""The run config: a TOML file in, a typed `RunConfig` out, and the resolved TOML saved with a run.

Config is data only; run state (which stages are done) lives in the run folder's state.json.
Every key is documented in examples/svamp.toml. An unknown key is an error that names it.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from mlx_distill.catalog import load_catalog
from mlx_distill.data import (DEFAULT_DATASETS, HUB_PREFIX, PAPER_NAMES, PAPER_SOURCES, TASKS, default_source,
                              parse_hub_spec)
from mlx_distill.errors import DistillError
from mlx_distill.methods import (
    ANSWER_MAX_TOKENS,
    COT_MAX_TOKENS,
    DEFAULT_METHOD,
    FILTERS,
    MAX_INPUT_TOKENS,
    LABEL_SOURCES,
    METHODS,
    RATIONALE_METHODS,
    RATIONALE_SOURCES,
    TEACHER_BATCH_SIZE,
    answer_max_tokens,
)

FORMAT_VERSION = 1
OPTIMIZERS = ("adamw", "adafactor")
SCHEDULES = ("linear", "cosine", "constant")
DTYPES = ("float32", "bfloat16")
# validation: train the candidates and export the one best on validation; none: export the configured method.
SELECTIONS = ("validation", "none")
LABEL_FALLBACKS = ("drop", "gold")


def _help(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    return field(default=default, metadata={"help": text}, **kw)


@dataclass
class TaskConfig:
    name: str = ""
    data: str = ""
    subsample: float = 1.0
    validation_fraction: float = 0.1
    seed: int = 0
    columns: dict[str, str] = field(default_factory=dict)
    human_rationales: str = ""


@dataclass
class TeacherConfig:
    enabled: bool = True
    model: str = ""
    batch_size: int = TEACHER_BATCH_SIZE
    max_tokens: int = 256
    filter: str = "gold"
    quantize: int = 0
    prompt_file: str = ""
    rationalize: bool = False
    samples: int = 1
    limit: int = 0
    evaluate_test: bool = False
    reject_restating: bool = False
    keep_restating: bool = False


@dataclass
class TrainConfig:
    """Everything that decides what a training run computes (run state lives in checkpoints)."""

    method: str = _help("step-by-step | finetune (gold labels) | distill (teacher labels) | cot (rationale then answer)", DEFAULT_METHOD)
    alpha: float = _help("weight of the label loss; the rationale loss gets 1 - alpha (step-by-step)", 0.5)
    label_source: str = _help("gold | teacher: where step-by-step labels come from", "gold")
    label_fallback: str = _help("drop | gold: a row whose teacher gave no usable answer, when labels come from the "
                                "teacher (label_source = teacher, distill), is dropped or takes its gold label", "drop")
    human_rationales: bool = _help("take rationales from the dataset (Example.rationale) even when a rationale file is given", False)
    keep_restating: bool = _help("train the explain: task on teacher rationales that only restate the answer too "
                                 "(default: they are left out; their labels are kept)", False)
    optimizer: str = _help("adamw | adafactor", "adamw")
    lr: float = _help("peak learning rate (5e-5 for pretrained T5; about 1e-3 for a tiny model from scratch)", 5e-5)
    weight_decay: float = _help("decoupled weight decay", 0.0)
    schedule: str = _help("linear | cosine | constant decay after warm-up", "linear")
    warmup_steps: int = _help("steps of linear warm-up from 0", 0)
    batch_size: int = _help("examples per micro-batch (each gives a predict row and an explain row)", 16)
    grad_accum: int = _help("micro-batches per optimizer step", 1)
    max_steps: int = _help("optimizer steps", 1000)
    eval_every: int = _help("evaluate on validation every N steps (0: only at the end)", 250)
    save_every: int = _help("write a resumable checkpoint every N steps (0: same as eval_every)", 0)
    log_every: int = _help("report the training loss every N steps", 10)
    max_input_tokens: int = _help("inputs are truncated to this many tokens", MAX_INPUT_TOKENS)
    max_target_tokens: int = _help("labels and rationales are truncated to this many tokens", COT_MAX_TOKENS)
    max_tokens_per_batch: int = _help("cap on padded tokens per micro-batch; larger batches are split (0: no cap)", 0)
    eval_batch_size: int = _help("prompts generated together during evaluation", 32)
    eval_max_tokens: int = _help("answer length limit at evaluation (cot uses max_target_tokens)", ANSWER_MAX_TOKENS)
    max_eval_examples: int = _help("validation examples scored per evaluation (0: all)", 0)
    clip_grad_norm: float = _help("clip the global gradient norm to this (0: off)", 1.0)
    dtype: str = _help("float32 | bfloat16 weights (losses are always float32)", "float32")
    seed: int = _help("seed for the data order, dropout and initialisation", 0)
    compile: bool = _help("compile the training step with mx.compile", True)

    @property
    def answer_max_tokens(self) -> int:
        """Answer length limit when scoring (a cot answer carries its rationale)."""
        return answer_max_tokens(self.method, self.max_target_tokens, self.eval_max_tokens)

    def validate(self, where: str = "") -> None:
        """Raise DistillError naming the first bad value.

        ``where`` prefixes key names: ``"c.toml: train."`` for a config file, ``"--"`` for command-line
        flags (then ``max_steps`` is named ``--max-steps``).
        """

        def key(name: str) -> str:
            return f"--{name.replace('_', '-')}" if where == "--" else f"{where}{name}"

        for item in dataclasses.fields(self):
            check_type(key(item.name), getattr(self, item.name), item.type)
        choices = {"method": METHODS, "label_source": LABEL_SOURCES, "label_fallback": LABEL_FALLBACKS,
                   "optimizer": OPTIMIZERS,
                   "schedule": SCHEDULES, "dtype": DTYPES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise DistillError(f"{key(name)} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise DistillError(f"{key('alpha')} {self.alpha} must be between 0 and 1")
        for name in ("batch_size", "grad_accum", "max_steps", "log_every", "max_input_tokens", "max_target_tokens",
                     "eval_batch_size", "eval_max_tokens"):
            if getattr(self, name) < 1:
                raise DistillError(f"{key(name)} {getattr(self, name)} must be at least 1")
        for name in ("warmup_steps", "eval_every", "save_every", "max_tokens_per_batch", "max_eval_examples",
                     "weight_decay", "clip_grad_norm", "seed"):
            if getattr(self, name) < 0:
                raise DistillError(f"{key(name)} {getattr(self, name)} must not be negative")
        if not math.isfinite(self.lr) or self.lr <= 0 or self.lr > 1:
            raise DistillError(f"{key('lr')} {self.lr} must be a positive learning rate of at most 1")
        for name in ("weight_decay", "clip_grad_norm", "alpha"):
            if not math.isfinite(getattr(self, name)):
                raise DistillError(f"{key(name)} {getattr(self, name)} must be a finite number")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# [train] keys that belong to the pipeline, not to the trainer.
@dataclass
class TrainSection:
    student: str = ""
    rationale_source: str = "teacher"
    # The unzipped datasets.zip of the paper's authors, for rationale_source paper-palm / paper-gpt-neox
    # ("" = where `mlx-distill fetch-data paper-rationales` puts it).
    paper_rationales: str = ""
    baselines: list[str] = field(default_factory=lambda: ["finetune"])
    select: str = "validation"
    alphas: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])
    trainer: TrainConfig = field(default_factory=TrainConfig)

    @property
    def method(self) -> str:
        return self.trainer.method

    def for_method(self, method: str | None = None) -> TrainConfig:
        """The trainer's config for this run's method, or for a baseline ``method``."""
        return dataclasses.replace(self.trainer, method=method or self.trainer.method)

    @property
    def trained_methods(self) -> list[str]:
        """Every method this run trains: its own and its baselines'."""
        return list(dict.fromkeys([self.method, *self.baselines]))

    @property
    def candidate_alphas(self) -> list[float]:
        """The α values the configured method is trained at: ``alphas`` and ``alpha`` when
        step-by-step is chosen on validation, else ``alpha`` alone."""
        alpha = self.trainer.alpha
        if self.select != "validation" or self.method != "step-by-step" or alpha >= 1.0:
            return [alpha]
        return sorted({alpha, *self.alphas})

    @property
    def uses_teacher(self) -> bool:
        """Whether training reads the teacher's records (rationales or labels) for any method it trains."""

        def reads_teacher(method: str) -> bool:
            if method == "distill":
                return True
            if method not in RATIONALE_METHODS:  # finetune: gold labels only
                return False
            return self.rationale_source == "teacher" or self.trainer.label_source == "teacher"

        return any(reads_teacher(m) for m in self.trained_methods)


@dataclass
class RunSection:
    """[run]: how a run treats the machine (a laptop); none of it changes what a stage computes."""

    keep_awake: bool = _help("keep the Mac from idle sleep while a stage works (caffeinate)", True)
    pause_below_battery: int = _help("on battery below this charge (percent) wait between batches; 0: never", 20)
    notify: bool = _help("a desktop notification and the terminal bell when the run ends, fails or pauses", True)
    memory_limit_gb: float = _help("MLX memory limit in GB (0: the memory free, at most the GPU's recommended "
                                   "working set)", 0.0)
    prefill_step_size: int = _help("prompt tokens per sequence in one teacher prefill step (0: from the device)", 0)

    def validate(self, source: str) -> None:
        if not 0 <= self.pause_below_battery <= 100:
            raise DistillError(f"{source}: run.pause_below_battery must be a percent from 0 to 100, "
                               f"got {self.pause_below_battery}")
        if not math.isfinite(self.memory_limit_gb) or self.memory_limit_gb < 0:
            raise DistillError(f"{source}: run.memory_limit_gb must be 0 (automatic) or a size in GB, "
                               f"got {self.memory_limit_gb}")
        if self.prefill_step_size < 0:
            raise DistillError(f"{source}: run.prefill_step_size must be 0 (automatic) or a token count, "
                               f"got {self.prefill_step_size}")


# Trainer keys the TOML does not take: derived from other keys.
_DERIVED_TRAIN_KEYS = {"human_rationales", "keep_restating"}


@dataclass
class RunConfig:
    name: str
    task: TaskConfig
    teacher: TeacherConfig
    train: TrainSection
    runs_dir: str = "runs"
    format_version: int = FORMAT_VERSION
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, Any]:
        train = {k: v for k, v in dataclasses.asdict(self.train).items() if k != "trainer"}
        train.update({k: v for k, v in self.train.trainer.to_dict().items() if k not in _DERIVED_TRAIN_KEYS})
        return {
            "format_version": self.format_version,
            "name": self.name,
            "runs_dir": self.runs_dir,
            "task": dataclasses.asdict(self.task),
            "teacher": dataclasses.asdict(self.teacher),
            "train": train,
            "run": dataclasses.asdict(self.run),
        }

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    @property
    def teacher_unneeded(self) -> bool:
        """No teacher was configured and none is needed: training reads no teacher output."""
        return not self.teacher.enabled and not self.teacher.model and not self.train.uses_teacher


_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "list[str]": "a list of strings", "list[float]": "a list of numbers",
               "dict[str, str]": "a table of strings"}


def check_type(key: str, value: Any, annotation: Any) -> None:
    """Raise DistillError when ``value`` is not of the declared type (an int is a float; a bool is
    neither an int nor a float)."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "list[str]": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
        "list[float]": lambda v: isinstance(v, list) and all(isinstance(i, (int, float)) and not isinstance(i, bool)
                                                             for i in v),
        "dict[str, str]": lambda v: isinstance(v, dict) and all(isinstance(i, str) for i in v.values()),
    }.get(kind)
    if ok is not None and not ok(value):
        raise DistillError(f"{key} = {value!r} must be {_TYPE_NAMES[kind]}")


def _section(cls, data: Any, where: str, source: str, skip: frozenset[str] = frozenset()):
    if not isinstance(data, dict):
        raise DistillError(f"{source}: [{where}] must be a table of keys")
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    values = {}
    for key, value in data.items():
        if key not in known:
            raise DistillError(
                f"{source}: unknown key '{where}.{key}'; known keys: {', '.join(sorted(known))}"
            )
        check_type(f"{source}: {where}.{key}", value, known[key].type)
        values[key] = float(value) if known[key].type == "float" else value
        if known[key].type == "list[float]":
            values[key] = [float(v) for v in value]
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
    """Check and type a config dict (from TOML). Relative paths resolve against ``base_dir``.

    Every key is checked here, before any stage runs: its name, its type and its range.
    """
    base = base_dir or Path.cwd()
    top_keys = {"format_version", "name", "runs_dir", "task", "teacher", "train", "run"}
    for key in data:
        if key not in top_keys:
            raise DistillError(f"{source}: unknown key '{key}'; known keys: {', '.join(sorted(top_keys))}")
    version = data.get("format_version", FORMAT_VERSION)
    check_type(f"{source}: format_version", version, "int")
    if version > FORMAT_VERSION:
        raise DistillError(
            f"{source}: format_version {version} is newer than this mlx-distill understands "
            f"({FORMAT_VERSION}); upgrade mlx-distill"
        )
    task = _section(TaskConfig, data.get("task", {}), "task", source)
    teacher = _section(TeacherConfig, data.get("teacher", {}), "teacher", source)
    run = _section(RunSection, data.get("run", {}), "run", source)
    run.validate(source)

    train_data = dict(data.get("train", {})) if isinstance(data.get("train", {}), dict) else data["train"]
    if not isinstance(train_data, dict):
        raise DistillError(f"{source}: [train] must be a table of keys")
    section_keys = {f.name for f in dataclasses.fields(TrainSection)} - {"trainer"}
    trainer_keys = {f.name for f in dataclasses.fields(TrainConfig)} - _DERIVED_TRAIN_KEYS
    for key in train_data:
        if key not in section_keys | trainer_keys:
            raise DistillError(
                f"{source}: unknown key 'train.{key}'; known keys: {', '.join(sorted(section_keys | trainer_keys))}"
            )
    train = _section(TrainSection, {k: v for k, v in train_data.items() if k in section_keys}, "train", source)
    trainer_values = {k: v for k, v in train_data.items() if k in trainer_keys}
    trainer_values.setdefault("seed", task.seed)
    train.trainer = _section(TrainConfig, trainer_values, "train", source)
    train.trainer.human_rationales = train.rationale_source == "human"
    train.trainer.keep_restating = teacher.keep_restating

    if not task.name:
        raise DistillError(f"{source}: missing 'task.name'; one of: {', '.join(TASKS)}")
    if task.name not in TASKS:
        raise DistillError(f"{source}: unknown task '{task.name}'; known tasks: {', '.join(TASKS)}")
    if not task.data and task.name not in DEFAULT_DATASETS:
        raise DistillError(f"{source}: missing 'task.data': the path of the {task.name} data file or folder")
    if not 0 < task.subsample <= 1:
        raise DistillError(f"{source}: task.subsample must be in (0, 1], got {task.subsample}")
    if task.seed < 0:
        raise DistillError(f"{source}: task.seed must not be negative, got {task.seed}")
    if not 0 <= task.validation_fraction < 1:
        raise DistillError(f"{source}: task.validation_fraction must be in [0, 1), got {task.validation_fraction}")
    if teacher.filter not in FILTERS:
        raise DistillError(f"{source}: teacher.filter must be one of {', '.join(FILTERS)}, got '{teacher.filter}'")
    for key in ("batch_size", "max_tokens", "samples"):
        if getattr(teacher, key) < 1:
            raise DistillError(f"{source}: teacher.{key} must be at least 1, got {getattr(teacher, key)}")
    if teacher.limit < 0:
        raise DistillError(f"{source}: teacher.limit must be 0 (all) or a positive count, got {teacher.limit}")
    if teacher.quantize not in (0, 4, 8):
        raise DistillError(f"{source}: teacher.quantize must be 0, 4 or 8, got {teacher.quantize}")
    if train.method not in METHODS:
        raise DistillError(f"{source}: unknown train.method '{train.method}'; one of {', '.join(METHODS)}")
    for baseline in train.baselines:
        if baseline not in METHODS:
            raise DistillError(f"{source}: unknown method '{baseline}' in train.baselines; one of {', '.join(METHODS)}")
    if train.select not in SELECTIONS:
        raise DistillError(f"{source}: train.select must be one of {', '.join(SELECTIONS)}, got '{train.select}'")
    if not train.alphas or not all(math.isfinite(a) and 0.0 <= a <= 1.0 for a in train.alphas):
        raise DistillError(f"{source}: train.alphas {train.alphas} must be a non-empty list of numbers between 0 and 1")
    if train.rationale_source not in RATIONALE_SOURCES:
        raise DistillError(
            f"{source}: train.rationale_source must be one of {', '.join(RATIONALE_SOURCES)}, "
            f"got '{train.rationale_source}'"
        )
    if train.rationale_source == "teacher" and not teacher.enabled and train.method in RATIONALE_METHODS:
        raise DistillError(
            f"{source}: train.rationale_source is 'teacher' but teacher.enabled is false; "
            "enable the teacher or set rationale_source = \"human\" or \"none\""
        )
    if train.rationale_source in PAPER_SOURCES and task.name not in PAPER_NAMES:
        raise DistillError(f"{source}: train.rationale_source {train.rationale_source!r} exists for the paper's tasks "
                           f"({', '.join(PAPER_NAMES)}), not {task.name!r}; use \"teacher\" or \"human\"")
    train.trainer.validate(where=f"{source}: train.")

    if "teacher" not in data and not train.uses_teacher:
        # Nothing reads a teacher's output and none was asked for: no teacher is resolved, checked or loaded.
        teacher.enabled = False
    catalog = load_catalog()
    teacher.model = teacher.model or (catalog.default_teacher if teacher.enabled else "")
    train.student = train.student or catalog.default_student
    # A built-in task without task.data reads its default hub copy; a hub id is kept as written.
    if not task.data:
        hub = default_source(task.name)
    else:
        hub = None if (base / Path(task.data).expanduser()).exists() else parse_hub_spec(task.data)
    task.data = hub.spec if hub is not None else _resolve_path(task.data, base)
    if not task.human_rationales.startswith(HUB_PREFIX):
        task.human_rationales = _resolve_path(task.human_rationales, base)
    teacher.prompt_file = _resolve_path(teacher.prompt_file, base)
    if train.paper_rationales:
        train.paper_rationales = str((base / Path(train.paper_rationales).expanduser()).resolve())
    teacher.model = _resolve_model(teacher.model, base) if teacher.model else ""
    train.student = _resolve_model(train.student, base)

    name = data.get("name") or f"{task.name}-{train.method}"
    check_type(f"{source}: name", name, "str")
    check_run_name(name, f"{source}: name")
    runs_dir = data.get("runs_dir", "runs")
    check_type(f"{source}: runs_dir", runs_dir, "str")
    return RunConfig(name=name, task=task, teacher=teacher, train=train, runs_dir=_resolve_path(runs_dir, base),
                     format_version=FORMAT_VERSION, run=run)


MAX_RUN_NAME = 100


def check_run_name(name: str, where: str = "run name") -> None:
    """Refuse a run name that is not one plain folder name (it becomes ``<runs_dir>/<name>``)."""
    problem = ""
    if not name.strip():
        problem = "is empty"
    elif "/" in name or "\\" in name:
        problem = "holds a path separator"
    elif name.startswith("."):
        problem = "starts with '.'"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "holds a control character"
    elif name != name.strip():
        problem = "starts or ends with a space"
    elif len(name) > MAX_RUN_NAME:
        problem = f"is {len(name)} characters long (at most {MAX_RUN_NAME})"
    if problem:
        raise DistillError(f"{where} {name[:40]!r} {problem}; use a plain folder name such as 'svamp-run1'")


def load_config(path: str | Path) -> RunConfig:
    """Read a run config TOML file; relative paths in it are relative to the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DistillError(f"{path}: not UTF-8 text (byte {error.start}); save the config as UTF-8") from None
    except IsADirectoryError:
        raise DistillError(f"{path} is a folder; give the config TOML file inside it") from None
    except FileNotFoundError:
        raise DistillError(f"config file {path} not found; see examples/svamp.toml for one") from None
    except OSError as error:
        raise DistillError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise DistillError(f"{path}: not valid TOML: {error}") from None
    return parse_config(data, source=str(path), base_dir=path.resolve().parent)
