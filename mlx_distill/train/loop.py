"""Train an MLX T5 student: Distilling step-by-step (arXiv 2305.02301) and its baselines.

``train()`` is the loop: compiled steps over length-bucketed batches, evaluation by generation
on the validation split, the best weights kept, resumable checkpoints, progress as events. The
rows each method trains on are built in ``batches``, the loss and step in ``step``, the files in
``checkpoint`` and the scoring in ``evaluate``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map

from mlx_distill import distributed
from mlx_distill.config import TrainConfig
from mlx_distill.errors import DistillError
from mlx_distill.events import (
    CheckpointSaved,
    EvalResult,
    Finished,
    Log,
    MemoryReport,
    OnEvent,
    ShouldStop,
    TrainStep,
    ignore_event,
    never_stop,
)
from mlx_distill.files import exclusive_lock, prepare_output_dir, write_json_atomic
from mlx_distill.platform import total_memory_bytes
from mlx_distill.student import load_student, save_student
from mlx_distill.train import checkpoint as ckpt
from mlx_distill.train.batches import (
    BatchOrder,
    DataPosition,
    MicroBatch,
    build_texts,
    split_micro_batches,
    tokenize_rows,
)
from mlx_distill.train.evaluate import evaluate
from mlx_distill.train.meta import write_student_meta
from mlx_distill.train.step import build_step, make_optimizer, make_schedule, rationale_normaliser

RESUME_HINT = "continue with resume=True (CLI: the same command with --resume)"

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
    stopped: bool = False
    checkpoint: str | None = None
    resume_hint: str = ""
    examples: int = 0  # training rows (questions) trained on
    rationale_rows: int = 0  # of them, rows with an explain: target
    restating_dropped: int = 0  # teacher rationales left out because they only restate the answer


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
        student: a student folder or hub id for ``mlx_distill.student.io.load_student``.
        task_data: ``mlx_distill.data.TaskData`` (train, validation, test examples).
        rationales: teacher records by example id (``mlx_distill.data.load_rationales``), or
            None to use the examples' own (human) rationales.
        config: the training settings.
        out_dir: checkpoints go to ``out_dir/checkpoints``, the best student to ``out_dir/student``,
            the last validation predictions to ``out_dir/predictions_validation.jsonl``.
        resume: continue from the latest checkpoint in ``out_dir`` (a fresh start if there is none).
        on_event: receives TrainStep, EvalResult, CheckpointSaved, Log, MemoryReport and Finished events.
        should_stop: polled every step; when true a checkpoint is written and the result has
            ``stopped=True`` (the CLI turns Ctrl-C into it).

    Returns:
        Steps done, the final loss and the best validation accuracy. The test split is never
        scored here: ``evaluate`` does that, once, on the exported student.

    Raises:
        DistillError: bad settings, an unusable dataset, a checkpoint from other settings, an
            output folder that cannot be written or that another process is training into.
    """
    config.validate()
    out_dir = Path(out_dir)
    if distributed.rank() != 0:
        return Trainer(student, task_data, rationales, config, out_dir, resume, on_event, should_stop).run()
    prepare_output_dir(out_dir, "the training output folder")
    with exclusive_lock(out_dir / ".lock", f"training folder {out_dir}"):
        return Trainer(student, task_data, rationales, config, out_dir, resume, on_event, should_stop).run()


def check_resumable(saved: dict[str, Any], config: TrainConfig) -> None:
    """Raise DistillError if a checkpoint was written with settings that change the result."""
    current = config.to_dict()
    defaults = TrainConfig().to_dict()
    # A key added after the checkpoint was written counts as unchanged while it is at its default.
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    changed = sorted(k for k in set(saved) | set(current) if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise DistillError(
            f"the checkpoint was written with other settings ({details}); use the same settings "
            "to resume, or a new --out folder to start again"
        )



def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return any(word in text for word in ("out of memory", "unable to allocate", "memory limit", "[malloc"))


def _dropout_seed(seed: int, step: int, micro_batch: int) -> int:
    return ((seed * 1_000_003 + step) * 4_099 + micro_batch) % (2**63)


def _to_mx(arrays: Any) -> tuple[mx.array, ...] | None:
    return None if arrays is None else tuple(mx.array(a) for a in arrays.as_tuple())


class _Window:
    """Sums between two loss reports (device arrays; read with .item() only at report time)."""

    def __init__(self) -> None:
        self.steps = 0
        self.loss = self.label = self.rationale = mx.array(0.0)
        self.label_tokens = self.rationale_tokens = self.real_tokens = 0
        self.seconds = 0.0

    def add(self, loss, label_sum, rationale_sum, counts: "_Counts", seconds: float) -> None:
        self.steps += 1
        self.loss, self.label, self.rationale = self.loss + loss, self.label + label_sum, self.rationale + rationale_sum
        self.label_tokens += counts.label_tokens
        self.rationale_tokens += counts.rationale_tokens
        self.real_tokens += counts.real_tokens
        self.seconds += seconds


class _Counts:
    """Real target and input tokens of one optimizer step, summed over every rank, and whether
    any rank was asked to stop (one collective per step carries both)."""

    def __init__(self, micro: list[MicroBatch], stop: bool = False) -> None:
        local = [sum(m.label_tokens for m in micro), sum(m.rationale_tokens for m in micro),
                 sum(m.real_tokens for m in micro), sum(m.rows for m in micro), sum(m.rationale_rows for m in micro),
                 float(stop)]
        *tokens, stops = distributed.all_sum(local)
        self.label_tokens, self.rationale_tokens, self.real_tokens, self.rows, self.rationale_rows = (
            int(v) for v in tokens)
        self.stop = stops > 0


class Trainer:
    def __init__(
        self,
        student: str | Path,
        task_data: Any,
        rationales: Mapping[str, Any] | None,
        config: TrainConfig,
        out_dir: Path,
        resume: bool,
        on_event: OnEvent,
        should_stop: ShouldStop,
    ):
        self.student = student
        self.task_data = task_data
        self.rationales = rationales
        self.config = config
        self.out_dir = out_dir
        self.ckpt_root = out_dir / "checkpoints"
        self.resume = resume
        self.emit = on_event
        self.should_stop = should_stop
        self.splits = 1  # micro-batches per batch; doubled when a step runs out of memory
        # Data-parallel over mx.distributed ranks: each takes a slice of every global batch; only
        # rank 0 evaluates, writes checkpoints, exports and reports (the loss is the same on all).
        self.rank, self.size = distributed.rank(), distributed.size()
        if self.rank != 0:
            self.emit = ignore_event

    # -- setup ------------------------------------------------------------------------------
    def _setup(self) -> None:
        config = self.config
        if config.batch_size < self.size:
            raise DistillError(
                f"batch_size {config.batch_size} is smaller than the {self.size} ranks; use a batch size of at "
                f"least {self.size} so every rank gets a slice"
            )
        latest = ckpt.latest_checkpoint(self.ckpt_root) if self.rank == 0 else None
        if latest is not None and not self.resume:
            raise DistillError(
                f"{self.out_dir} already holds a training run; add --resume to continue it or choose a new --out"
            )
        mx.random.seed(config.seed)
        self.model, self.tokenizer = load_student(self.student, dtype=config.dtype)
        args = self.model.args
        self.pad_id = int(args.pad_token_id)
        self.start_id = int(getattr(args, "decoder_start_token_id", self.pad_id))

        texts, stats = build_texts(
            self.task_data.train,
            config.method,
            label_source=config.label_source,
            rationales=self.rationales or {},
            use_human_rationales=self.rationales is None or config.human_rationales,
            alpha=config.alpha,
            label_fallback=config.label_fallback,
            keep_restating=config.keep_restating,
        )
        self.text_stats = stats
        message = f"{stats.examples} training examples, {stats.with_rationale} with a rationale"
        if stats.restating_dropped:
            message += (f" ({stats.restating_dropped} that only restate the answer left out; "
                        "teacher.keep_restating = true keeps them)")
        if stats.teacher_labels or stats.no_teacher_answer:
            message += f", {stats.teacher_labels} teacher labels"
            if stats.gold_fallbacks:
                message += f" ({stats.gold_fallbacks} gold labels where the teacher gave no answer)"
        if stats.dropped:
            message += f", {stats.dropped} dropped without a label"
            if stats.no_teacher_answer and not stats.gold_fallbacks:
                message += " (no teacher answer; label_fallback = \"gold\" keeps them with gold labels)"
        self.emit(Log(message=message))
        self.rows = tokenize_rows(
            self.tokenizer, texts, max_input_tokens=config.max_input_tokens, max_target_tokens=config.max_target_tokens
        )
        self.order = BatchOrder([len(p) for p in self.rows.predict], config.batch_size, config.seed)

        schedule = make_schedule(config.lr, config.schedule, config.warmup_steps, config.max_steps)
        self.optimizer = make_optimizer(config.optimizer, schedule, config.weight_decay)
        self.state = ckpt.RunState(config=config.to_dict())
        if latest is not None:
            saved = ckpt.read_checkpoint_state(latest)
            check_resumable(saved.config, config)
            self.state = ckpt.restore_checkpoint(latest, self.model, self.optimizer)
            self.state.config = config.to_dict()
            self.emit(Log(message=f"resumed from {latest} at step {self.state.step}"))
        else:
            self.optimizer.init(self.model.trainable_parameters())
        if self.size > 1:
            self._share_rank0_state()
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.out_dir / "train_config.json", {**config.to_dict(), "student": str(self.student)})
        self.model.train()
        self.step_fn = build_step(
            self.model, self.optimizer, config.alpha, config.clip_grad_norm or None, compile=config.compile
        )
        self.compiled_state = [self.model.state, self.optimizer.state, mx.random.state]
        limit = config.max_eval_examples or None
        self.validation = list(self.task_data.validation[:limit])

    def _share_rank0_state(self) -> None:
        """Every rank starts from rank 0's weights, optimizer state and position (its checkpoint)."""
        if self.rank != 0:
            self.optimizer.init(self.model.trainable_parameters())
        self.model.update(distributed.broadcast_tree(self.model.parameters()))
        self.optimizer.state = distributed.broadcast_tree(self.optimizer.state)
        self.state = ckpt.RunState.from_dict(distributed.broadcast_json(self.state.to_dict()))

    # -- one optimizer step -----------------------------------------------------------------
    def _step_batches(self) -> tuple[list[MicroBatch], DataPosition]:
        position = DataPosition(self.state.epoch, self.state.batch)
        micro: list[MicroBatch] = []
        for _ in range(self.config.grad_accum):
            indices, position = self.order.take(position)
            if self.size > 1:
                indices = np.asarray(distributed.shard(indices, self.rank, self.size))
            micro += split_micro_batches(
                self.rows,
                indices,
                pad_id=self.pad_id,
                decoder_start_id=self.start_id,
                max_tokens=self.config.max_tokens_per_batch or None,
                min_splits=self.splits,
            )
        return micro, position

    def _run_step(self, stop: bool = False) -> tuple[mx.array, mx.array, mx.array, "_Counts", DataPosition] | None:
        """Run one optimizer step; on out-of-memory undo it and retry with smaller micro-batches.

        None when ``stop`` is true on any rank: every rank then stops before the same step.
        """
        while True:
            micro, position = self._step_batches()
            counts = _Counts(micro, stop)
            if counts.stop:
                return None
            # Token means over the whole step (all micro-batches, all ranks); with N ranks each
            # rank's loss is N times its share, so the ranks' averaged gradient is the full one.
            label_norm = mx.array(max(1, counts.label_tokens) / self.size, mx.float32)
            rationale_norm = mx.array(
                rationale_normaliser(counts.rationale_tokens, counts.rationale_rows, counts.rows) / self.size,
                mx.float32)
            # A micro-batch without rationale rows in a step that has some still weighs its labels
            # by alpha (the rationale term of its rows is zero), as if it were part of the batch.
            label_only_norm = label_norm / max(self.config.alpha, 1e-30) if counts.rationale_tokens else label_norm
            snapshot = (tree_map(lambda x: x, self.model.parameters()), tree_map(lambda x: x, self.optimizer.state))
            try:
                grad = None
                loss = label_sum = rationale_sum = mx.array(0.0)
                for j, batch in enumerate(micro):
                    # Dropout keys depend only on (seed, step, micro-batch): a resumed run and a
                    # retried step draw the same masks, and evaluation cannot shift them.
                    mx.random.seed(_dropout_seed(self.config.seed, self.state.step, j + self.rank * 4096))
                    norm = label_norm if batch.rationale is not None else label_only_norm
                    value, ls, rs, grad = self.step_fn(
                        _to_mx(batch.label), _to_mx(batch.rationale), norm, rationale_norm, grad, j == len(micro) - 1
                    )
                    loss, label_sum, rationale_sum = loss + value, label_sum + ls, rationale_sum + rs
                    mx.eval(self.compiled_state, grad, loss, label_sum, rationale_sum)
                # With several ranks these are this rank's shares; _global() sums them when read.
                return loss, label_sum, rationale_sum, counts, position
            except RuntimeError as error:
                if not _is_out_of_memory(error) or self.size > 1:
                    # Ranks cannot retry one step alone: the others wait in the gradient all_sum.
                    raise
                self.model.update(snapshot[0])
                self.optimizer.state.clear()
                self.optimizer.state.update(snapshot[1])
                if self.splits >= self.config.batch_size:
                    raise DistillError(
                        f"one training example does not fit in memory ({error}); lower --max-input-tokens "
                        "/ --max-target-tokens or use a smaller student"
                    ) from error
                self.splits *= 2
                self.emit(
                    Log(
                        level="warning",
                        message=f"a step ran out of memory; retrying with {self.splits} micro-batches per batch",
                    )
                )

    # -- evaluation and checkpoints -------------------------------------------------------
    def _evaluate_validation(self) -> bool:
        """Score the validation split; keep the weights if best. False when stopped meanwhile.

        Only rank 0 evaluates; the other ranks wait for its answer (stopped or not).
        """
        if self.size > 1:
            stopped = self._evaluate_on_rank0() if self.rank == 0 else False
            return not distributed.any_rank(stopped)
        return not self._evaluate_on_rank0()

    def _evaluate_on_rank0(self) -> bool:
        """True when stopped meanwhile."""
        summary = evaluate(
            self.model,
            self.tokenizer,
            self.task_data.task,
            self.validation,
            batch_size=self.config.eval_batch_size,
            max_tokens=self.config.answer_max_tokens,
            predictions_path=self.out_dir / "predictions_validation.jsonl",
            method=self.config.method,
            split="validation",
            step=self.state.step,
            max_input_tokens=self.config.max_input_tokens,
            should_stop=self.should_stop,
        )
        self.model.train()
        if summary.stopped:
            return True
        best = self.state.best_accuracy is None or summary.accuracy > self.state.best_accuracy
        if best:
            self.state.best_accuracy, self.state.best_step = summary.accuracy, self.state.step
            ckpt.save_best(self.ckpt_root, self.model, self.state)
        self.emit(
            EvalResult(
                step=self.state.step,
                split="validation",
                accuracy=summary.accuracy,
                correct=summary.correct,
                total=summary.total,
                best=best,
            )
        )
        return False

    def _save(self) -> Path | None:
        if self.rank != 0:
            self.last_saved = self.state.step
            return None
        folder = ckpt.save_checkpoint(self.ckpt_root, self.model, self.optimizer, self.state)
        self.last_saved = self.state.step
        self.emit(CheckpointSaved(step=self.state.step, path=str(folder)))
        return folder

    # -- the run ------------------------------------------------------------------------------
    def _ensure_saved(self) -> Path | None:
        if self.rank != 0:
            return None
        latest = ckpt.latest_checkpoint(self.ckpt_root)
        if latest is None or self.last_saved != self.state.step:
            latest = self._save()
        return latest

    def run(self) -> TrainResult:
        self._setup()
        config = self.config
        self.last_saved = self.state.step
        save_every = config.save_every or config.eval_every
        window = _Window()
        final_loss = None
        stopped = False
        while self.state.step < config.max_steps:
            local_stop = bool(self.should_stop())
            if local_stop and self.size == 1:
                stopped = True
                break
            tic = time.perf_counter()
            outcome = self._run_step(local_stop)
            if outcome is None:
                stopped = True
                break
            loss, label_sum, rationale_sum, counts, position = outcome
            self._check_finite(loss)
            seconds = time.perf_counter() - tic
            self.state.step += 1
            self.state.epoch, self.state.batch = position.epoch, position.batch
            self.state.trained_tokens += counts.real_tokens
            self.state.train_seconds += seconds
            final_loss = loss
            window.add(loss, label_sum, rationale_sum, counts, seconds)
            step = self.state.step
            if step % config.log_every == 0 or step == config.max_steps:
                self._report(window)
                window = _Window()
            if self.validation and ((config.eval_every and step % config.eval_every == 0) or step == config.max_steps):
                if not self._evaluate_validation():
                    stopped = True
                    break
            if save_every and step % save_every == 0:
                self._save()
        final_value = self._global(final_loss)[0].item() if final_loss is not None else None
        if stopped:
            folder = self._ensure_saved()
            self.emit(Finished(stage="train", stopped=True, summary={"step": self.state.step}, resume_hint=RESUME_HINT))
            return self._result(final_value, None, stopped=True, checkpoint=folder)
        missing_best = self.rank == 0 and ckpt.best_checkpoint(self.ckpt_root) is None
        if self.size > 1:
            missing_best = distributed.any_rank(missing_best)
        if self.validation and missing_best:
            self._evaluate_validation()
        if self.rank != 0:  # rank 0 alone exports the student
            return self._result(final_value, None, stopped=False, checkpoint=None)
        return self._finish(final_value, self._ensure_saved())

    def _check_finite(self, loss: mx.array) -> None:
        """Stop at the first non-finite loss: the update it made is not saved (the loss is already
        evaluated, so reading it costs no extra sync)."""
        diverged = not math.isfinite(loss.item())
        if self.size > 1:
            diverged = distributed.any_rank(diverged)
        if not diverged:
            return
        latest = ckpt.latest_checkpoint(self.ckpt_root) if self.rank == 0 else None
        kept = f"the last good checkpoint ({latest.name}) is kept" if latest else "no checkpoint was written yet"
        message = (f"training diverged at step {self.state.step + 1}: the loss is not finite; lower --lr "
                   f"(now {self.config.lr:g}) or check the student's weights; {kept}")
        raise DistillError(message)

    def _global(self, loss: mx.array, *sums: mx.array) -> tuple[mx.array, ...]:
        """Loss and token-loss sums over all ranks (each rank's loss is ``size`` times its share)."""
        if self.size == 1:
            return (loss, *sums)
        totals = mx.distributed.all_sum(mx.stack([loss, *sums]), stream=mx.cpu)
        return (totals[0] / self.size, *(totals[i + 1] for i in range(len(sums))))

    def _report(self, window: "_Window") -> None:
        config = self.config
        loss, label_sum, rationale_sum = self._global(window.loss, window.label, window.rationale)
        rationale_loss = None
        if self.rows.has_rationale_task:
            rationale_loss = rationale_sum.item() / max(1, window.rationale_tokens)
        self.emit(
            TrainStep(
                step=self.state.step,
                total_steps=config.max_steps,
                loss=loss.item() / max(1, window.steps),
                label_loss=label_sum.item() / max(1, window.label_tokens),
                rationale_loss=rationale_loss,
                learning_rate=float(self.optimizer.learning_rate.item()),
                tokens_per_second=window.real_tokens / max(1e-9, window.seconds),
                eta_seconds=window.seconds / max(1, window.steps) * (config.max_steps - self.state.step),
                epoch=self.state.step * config.batch_size * config.grad_accum / max(1, len(self.rows)),
            )
        )

    def _finish(self, final_loss: float | None, folder: Path) -> TrainResult:
        best = ckpt.best_checkpoint(self.ckpt_root)
        if best is not None:
            ckpt.load_weights(self.model, best)
        self.model.eval()
        bad = [name for name, value in tree_flatten(self.model.parameters()) if not mx.all(mx.isfinite(value)).item()]
        if bad:
            raise DistillError(f"the trained weights hold non-finite values ({bad[0]}); the student is not exported; "
                               "lower --lr and train again")
        student_dir = Path(save_student(self.model, self.tokenizer, self.out_dir / "student"))
        write_student_meta(student_dir, task=self.task_data.task, method=self.config.method,
                           best_step=self.state.best_step, best_validation_accuracy=self.state.best_accuracy)
        self.emit(
            MemoryReport(
                stage="train", active=mx.get_active_memory(), peak=mx.get_peak_memory(), total=total_memory_bytes()
            )
        )
        result = self._result(final_loss, student_dir, stopped=False, checkpoint=folder)
        self.emit(
            Finished(
                stage="train",
                summary={
                    "steps": result.steps,
                    "final_loss": final_loss,
                    "best_step": result.best_step,
                    "best_validation_accuracy": result.best_validation_accuracy,
                    "student": str(student_dir),
                },
            )
        )
        return result

    def _result(self, final_loss, student_dir, *, stopped: bool, checkpoint: Path | None) -> TrainResult:
        return TrainResult(
            out_dir=str(self.out_dir),
            student_dir=str(student_dir) if student_dir else None,
            steps=self.state.step,
            final_loss=final_loss,
            best_step=self.state.best_step,
            best_validation_accuracy=self.state.best_accuracy,
            stopped=stopped,
            checkpoint=str(checkpoint) if checkpoint else None,
            resume_hint=RESUME_HINT if stopped else "",
            examples=self.text_stats.examples,
            rationale_rows=self.text_stats.with_rationale,
            restating_dropped=self.text_stats.restating_dropped,
        )
