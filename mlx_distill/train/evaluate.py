"""Accuracy of a student by generation: ``predict: <input>`` prompts, batched greedy decoding."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mlx_distill.files import write_jsonl_atomic
from mlx_distill.methods import MAX_INPUT_TOKENS, answer_of, predict_prompt
from mlx_distill.metrics import is_correct
from mlx_distill.student import generate
from mlx_distill.events import EvalResult, Log, OnEvent, ShouldStop, ignore_event, never_stop


@dataclass(frozen=True)
class EvalSummary:
    split: str
    accuracy: float
    correct: int
    total: int  # examples scored (fewer than asked when stopped)
    seconds: float
    predictions_path: str | None = None
    stopped: bool = False
    truncated: int = 0  # questions longer than max_input_tokens, cut before answering


def evaluate(
    model: Any,
    tokenizer: Any,
    task: str,
    examples: Sequence[Any],
    *,
    batch_size: int = 32,
    max_tokens: int = 64,
    predictions_path: str | Path | None = None,
    method: str = "step-by-step",
    split: str = "validation",
    step: int = 0,
    max_input_tokens: int = MAX_INPUT_TOKENS,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> EvalSummary:
    """Generate an answer for each example and score it with ``mlx_distill.metrics.is_correct``.

    Args:
        model: the MLX T5 student (switched to eval mode here; the caller restores train mode).
        tokenizer: its tokenizer.
        task: task name, which picks the metric (equations are compared by value).
        examples: ``Example`` items with ``id``, ``input`` and gold ``label``.
        batch_size: prompts generated together. Default: ``32``.
        max_tokens: generation limit per answer. Default: ``64``.
        predictions_path: if given, one JSON line per example is written there
            (``id``, ``input``, ``generated``, ``prediction``, ``gold``, ``correct``), atomically.
        method: the training method; ``cot`` answers are read after "So the answer is".
        split: the name reported in the ``EvalResult`` event.
        step: the training step reported in the event.
        max_input_tokens: longer questions are cut to this many tokens (as in training) and counted.
        on_event: receives one ``EvalResult`` at the end (and one warning ``Log`` if questions were cut).
        should_stop: checked between batches; a stop returns the partial score.

    Returns:
        The accuracy and counts.
    """
    started = time.perf_counter()
    model.eval()
    records: list[dict[str, Any]] = []
    correct = 0
    stopped = False
    cut: list[int] = []
    for start in range(0, len(examples), batch_size):
        if should_stop():
            stopped = True
            break
        chunk = examples[start : start + batch_size]
        outputs = generate(
            model, tokenizer, [predict_prompt(e.input) for e in chunk], max_tokens=max_tokens, batch_size=batch_size,
            max_input_tokens=max_input_tokens, on_truncated=cut.extend,
        )
        for example, generated in zip(chunk, outputs):
            prediction = answer_of(method, generated)
            ok = bool(example.label) and is_correct(task, prediction, example.label)
            correct += ok
            records.append(
                {
                    "id": example.id,
                    "input": example.input,
                    "generated": generated,
                    "prediction": prediction,
                    "gold": example.label,
                    "correct": ok,
                }
            )
    total = len(records)
    path = None
    if predictions_path is not None:
        path = Path(predictions_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(path, records)
    summary = EvalSummary(
        split=split,
        accuracy=correct / total if total else 0.0,
        correct=correct,
        total=total,
        seconds=time.perf_counter() - started,
        predictions_path=str(path) if path else None,
        stopped=stopped,
        truncated=len(cut),
    )
    if cut:
        on_event(Log(level="warning", message=f"{len(cut)} of {total} {split} questions were longer than "
                                              f"{max_input_tokens} tokens and were cut to that length"))
    on_event(EvalResult(step=step, split=split, accuracy=summary.accuracy, correct=correct, total=total))
    return summary
