"""Train an MLX T5 student: Distilling step-by-step (arXiv 2305.02301) and its baselines.

``train()`` is the loop: compiled steps over length-bucketed batches, evaluation by generation
on the validation split, the best weights kept, resumable checkpoints, progress as events. The
rows each method trains on are built in ``batching``, the loss and step in ``train_step``, the
files in ``checkpoint`` and the scoring in ``evaluate``.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mlx_distill.errors import DistillError
from mlx_distill.events import OnEvent, ShouldStop, ignore_event, never_stop

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "EvalSummary", "METHODS"]

# This module imports nothing heavy at load time: the CLI builds its flags from TrainConfig.
METHODS = ("step-by-step", "finetune", "distill", "cot")
LABEL_SOURCES = ("gold", "teacher")
DTYPES = ("float32", "bfloat16")


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "EvalSummary"):
        from mlx_distill import evaluate as evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _help(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    return field(default=default, metadata={"help": text}, **kw)


@dataclass
class TrainConfig:
    """Everything that decides what a training run computes (run state lives in checkpoints)."""

    method: str = _help("step-by-step | finetune (gold labels) | distill (teacher labels) | cot (rationale then answer)", "step-by-step")
    alpha: float = _help("weight of the label loss; the rationale loss gets 1 - alpha (step-by-step)", 0.5)
    label_source: str = _help("gold | teacher: where step-by-step labels come from", "gold")
    human_rationales: bool = _help("take rationales from the dataset (Example.rationale) even when a rationale file is given", False)
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
    max_input_tokens: int = _help("inputs are truncated to this many tokens", 512)
    max_target_tokens: int = _help("labels and rationales are truncated to this many tokens", 256)
    max_tokens_per_batch: int = _help("cap on padded tokens per micro-batch; larger batches are split (0: no cap)", 0)
    eval_batch_size: int = _help("prompts generated together during evaluation", 32)
    eval_max_tokens: int = _help("answer length limit at evaluation (cot uses max_target_tokens)", 64)
    max_eval_examples: int = _help("validation examples scored per evaluation (0: all)", 0)
    clip_grad_norm: float = _help("clip the global gradient norm to this (0: off)", 1.0)
    dtype: str = _help("float32 | bfloat16 weights (losses are always float32)", "float32")
    seed: int = _help("seed for the data order, dropout and initialisation", 0)
    compile: bool = _help("compile the training step with mx.compile", True)

    def validate(self) -> None:
        """Raise DistillError naming the first bad value."""
        if self.method not in METHODS:
            raise DistillError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.label_source not in LABEL_SOURCES:
            raise DistillError(f"unknown label source {self.label_source!r}; use gold or teacher")
        if not 0.0 <= self.alpha <= 1.0:
            raise DistillError(f"alpha {self.alpha} must be between 0 and 1")
        if self.dtype not in DTYPES:
            raise DistillError(f"dtype {self.dtype!r} must be float32 or bfloat16")
        for name in ("batch_size", "grad_accum", "max_steps", "log_every", "max_input_tokens", "max_target_tokens"):
            if getattr(self, name) < 1:
                raise DistillError(f"{name} {getattr(self, name)} must be at least 1")
        if self.lr <= 0:
            raise DistillError(f"learning rate {self.lr} must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Settings that may change between a run and its resume without changing what is computed.
RESUMABLE_CHANGES = frozenset(
    {"eval_every", "save_every", "log_every", "eval_batch_size", "max_eval_examples", "max_tokens_per_batch"}
)


@dataclass(frozen=True)
class TrainResult:
    out_dir: str
    student_dir: str | None  # None when stopped before the end
    steps: int
    final_loss: float | None
    best_step: int | None
    best_validation_accuracy: float | None
    test_accuracy: float | None
    stopped: bool = False
    checkpoint: str | None = None
    resume_hint: str = ""


class _StopFlag:
    """Ctrl-C sets a flag, so the current step finishes and a checkpoint is written."""

    def __init__(self, should_stop: ShouldStop):
        self.should_stop = should_stop
        self.flag = threading.Event()
        self.previous = None

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.flag.is_set():  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.flag.set()

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def __call__(self) -> bool:
        return self.flag.is_set() or self.should_stop()


def train(
    student: str | Path,
    task_data: Any,
    rationales: Mapping[str, Any] | None,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> TrainResult:
    """Train a student on ``task_data`` and export the best one to ``out_dir/student``.

    Args:
        student: a student folder or hub id for ``mlx_distill.student.load_student``.
        task_data: ``mlx_distill.data.TaskData`` (train, validation, test examples).
        rationales: teacher records by example id (``mlx_distill.data.load_rationales``), or
            None to use the examples' own (human) rationales.
        config: the training settings.
        out_dir: checkpoints go to ``out_dir/checkpoints``, the best student to ``out_dir/student``,
            predictions to ``out_dir/predictions_{validation,test}.jsonl``.
        resume: continue from the latest checkpoint in ``out_dir`` (a fresh start if there is none).
        on_event: receives TrainStep, EvalResult, CheckpointSaved, Log, Finished and Failed events.
        should_stop: polled every step; when true (or on Ctrl-C) a checkpoint is written and the
            result has ``stopped=True``.

    Returns:
        Steps done, the final loss, the best validation accuracy and the test accuracy.

    Raises:
        DistillError: bad settings, an unusable dataset, a checkpoint from other settings.
    """
    from mlx_distill.events import Failed
    from mlx_distill.train_loop import Trainer

    config.validate()
    try:
        with _StopFlag(should_stop) as stop:
            trainer = Trainer(student, task_data, rationales, config, Path(out_dir), resume, on_event, stop)
            return trainer.run()
    except Exception as error:  # reported, then raised unchanged
        on_event(Failed(stage="train", error=str(error) if isinstance(error, DistillError) else repr(error)))
        raise


def check_resumable(saved: dict[str, Any], config: TrainConfig) -> None:
    """Raise DistillError if a checkpoint was written with settings that change the result."""
    current = config.to_dict()
    changed = sorted(k for k in set(saved) | set(current) if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise DistillError(
            f"the checkpoint was written with other settings ({details}); use the same settings "
            "to resume, or a new --out folder to start again"
        )


def write_config(path: Path, config: TrainConfig, extra: dict[str, Any] | None = None) -> None:
    from mlx_distill.checkpoint import write_json_atomic

    write_json_atomic(path, {**config.to_dict(), **(extra or {})})


def load_config(path: str | Path) -> TrainConfig:
    """Read a ``train_config.json`` written by ``train`` (unknown keys are ignored)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in data.items() if k in names})
