"""The loss, the optimizer with its schedule, and the compiled training step."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from mlx_distill import distributed
from mlx_distill.config import OPTIMIZERS, SCHEDULES
from mlx_distill.errors import DistillError
from mlx_distill.platform import total_memory_bytes
from mlx_distill.student import exp_nonpositive

TaskBatch = tuple[mx.array, mx.array, mx.array, mx.array, mx.array]


@mx.custom_function
def token_cross_entropy(logits: mx.array, targets: mx.array) -> mx.array:
    """Per-token cross-entropy ``logsumexp(logits) - logits[target]`` over the last axis.

    The same value and gradient as ``nn.losses.cross_entropy(..., reduction="none")`` with one
    pass of ``exp`` each way: the gradient is ``softmax - one_hot``, the softmax rebuilt from the
    forward's log-sum-exp, and both passes use `exp_nonpositive` (the vocabulary-wide ``exp`` is
    the costliest elementwise work of a CPU training step).
    """
    top = mx.stop_gradient(logits.max(axis=-1, keepdims=True))
    lse = mx.log(exp_nonpositive(logits - top).sum(axis=-1)) + top[..., 0]
    return lse - mx.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]


@token_cross_entropy.vjp
def _token_cross_entropy_vjp(primals, cotangent, output):
    logits, targets = primals
    lse = output[..., None] + mx.take_along_axis(logits, targets[..., None], axis=-1)
    scale = cotangent[..., None]
    is_target = mx.arange(logits.shape[-1], dtype=targets.dtype) == targets[..., None]
    grad = exp_nonpositive(logits - lse) * scale - mx.where(is_target, scale, 0.0)
    return grad.astype(logits.dtype), mx.zeros_like(targets)


def task_loss_sum(model: Any, batch: TaskBatch) -> mx.array:
    """Summed float32 cross-entropy over the non-pad target tokens of one task's rows."""
    input_ids, attention_mask, decoder_input_ids, targets, target_mask = batch
    logits = model(input_ids, decoder_input_ids, attention_mask).astype(mx.float32)
    return (token_cross_entropy(logits, targets) * target_mask).sum()


def rationale_normaliser(rationale_tokens: int, rationale_rows: int, rows: int) -> float:
    """What the rationale term's summed token loss is divided by: the rationale tokens the step
    would hold if every one of its ``rows`` had a rationale as long as its rationale rows' mean.

    With a rationale on every row this is the step's rationale token count (the paper's token
    mean). With partial coverage (the gold filter keeps only the teacher's agreeing answers) a
    rationale row weighs what it would weigh if every row had one, so two rationale rows in a batch
    of 32 carry 2/32 of the rationale term, not all of it; the term then shrinks with the coverage
    instead of putting the whole (1 - alpha) share on a few rows. The label term is unchanged.
    """
    if rationale_rows <= 0:
        return float(max(1, rationale_tokens))
    return max(1, rationale_tokens) * max(rows, rationale_rows) / rationale_rows


def make_loss(alpha: float) -> Callable[..., tuple[mx.array, mx.array, mx.array]]:
    """The training loss: ``alpha·label_mean + (1-alpha)·rationale_mean``.

    Means are token means over a whole optimizer step: ``label_norm`` is the step's real label
    tokens and ``rationale_norm`` its rationale tokens scaled to full coverage
    (``rationale_normaliser``), so micro-batch gradients add up to the full batch's.
    Without a rationale batch the loss is the label mean alone (``finetune``, ``distill``, ``cot``).

    Returns:
        ``loss(model, label, rationale, label_norm, rationale_norm) -> (loss, label_sum, rationale_sum)``.
    """

    def loss(model, label, rationale, label_norm, rationale_norm):
        label_sum = task_loss_sum(model, label)
        if rationale is None:
            return label_sum / label_norm, label_sum, mx.array(0.0)
        rationale_sum = task_loss_sum(model, rationale)
        value = alpha * (label_sum / label_norm) + (1.0 - alpha) * (rationale_sum / rationale_norm)
        return value, label_sum, rationale_sum

    return loss


def make_schedule(lr: float, schedule: str, warmup_steps: int, total_steps: int) -> Callable | float:
    """Linear warm-up from 0 to ``lr``, then linear or cosine decay to 0 at ``total_steps``."""
    if schedule not in SCHEDULES:
        raise DistillError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    decay_steps = max(1, total_steps - warmup_steps)
    if schedule == "linear":
        main = optim.linear_schedule(lr, 0.0, decay_steps)
    elif schedule == "cosine":
        main = optim.cosine_decay(lr, decay_steps)
    else:
        main = lambda step: mx.array(lr, mx.float32)  # noqa: E731
    if warmup_steps == 0:
        return main if schedule != "constant" else lr
    warmup = optim.linear_schedule(0.0, lr, warmup_steps)
    return optim.join_schedules([warmup, main], [warmup_steps])


def make_optimizer(name: str, learning_rate: Callable | float, weight_decay: float = 0.0) -> optim.Optimizer:
    if name == "adamw":
        # MLX leaves Adam's bias correction off by default; without it the first updates are
        # ~3x too large and a from-scratch T5 stalls at chance (PyTorch's AdamW corrects).
        return optim.AdamW(learning_rate=learning_rate, weight_decay=weight_decay, bias_correction=True)
    if name == "adafactor":
        # The usual T5 fine-tuning setting: an explicit learning rate, no relative step or scaling.
        return optim.Adafactor(
            learning_rate=learning_rate, relative_step=False, scale_parameter=False, weight_decay=weight_decay
        )
    raise DistillError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")


def _keep_freed_buffers() -> None:
    """On the CPU, let MLX reuse freed buffers across steps instead of returning them to the OS.

    MLX's CPU allocator caches only 32 MB by default, so every step's large arrays (logits,
    gradients, optimizer state) are fresh pages: ~1 GB of page faults per t5-small step. The
    Metal allocator already caches up to its memory limit, so the GPU path is left alone.
    """
    if mx.default_device().type != mx.DeviceType.cpu:
        return
    limit = total_memory_bytes() // 4
    previous = mx.set_cache_limit(limit)
    if previous > limit:
        mx.set_cache_limit(previous)


def build_step(model: Any, optimizer: optim.Optimizer, alpha: float, clip_norm: float | None, compile: bool = True):
    """The training step: forward, loss, gradient, accumulation and (on the last micro-batch) update.

    Launched on several ranks (``mlx_distill.distributed``), the update averages the ranks'
    accumulated gradients with ``mlx.nn.average_gradients`` first, so every rank applies the same
    update and the weights stay identical.

    ``step(label, rationale, label_norm, rationale_norm, prev_grad, do_update)`` returns
    ``(loss, label_sum, rationale_sum, grad)`` where ``grad`` is None after an update. The whole
    step, optimizer update included, is one compiled graph whose state is the model, the
    optimizer state and the MLX random key (dropout), so build it after any checkpoint restore.
    """
    _keep_freed_buffers()
    loss_and_grad = nn.value_and_grad(model, make_loss(alpha))
    # Data-parallel: each rank's norms are the GLOBAL token counts divided by the number of ranks,
    # so the average of the ranks' gradients is the gradient of the whole batch on one rank.
    parallel = distributed.size() > 1

    def step(label, rationale, label_norm, rationale_norm, prev_grad, do_update):
        (value, label_sum, rationale_sum), grad = loss_and_grad(model, label, rationale, label_norm, rationale_norm)
        if prev_grad is not None:
            grad = tree_map(lambda a, b: a + b, grad, prev_grad)
        if do_update:
            if parallel:
                grad = nn.average_gradients(grad)
            if clip_norm:
                grad, _ = optim.clip_grad_norm(grad, clip_norm)
            # Matmul gradients can come out transposed; the fused optimizer kernel over a strided
            # array runs ~3x slower on the CPU than a copy plus the contiguous kernel.
            grad = tree_map(mx.contiguous, grad)
            optimizer.update(model, grad)
            grad = None
        return value, label_sum, rationale_sum, grad

    if not compile:
        return step
    state = [model.state, optimizer.state, mx.random.state]
    return partial(mx.compile, inputs=state, outputs=state)(step)
