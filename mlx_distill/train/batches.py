"""Training rows for each method, tokenized once, in a seeded resumable order, padded to buckets.

Each example gives a ``predict: <input>`` row (target: the label, or for ``cot`` the rationale then
the answer) and, for ``step-by-step``, an ``explain: <input>`` row (target: the rationale). Batches
are length-sorted inside windows so padding stays small, and padded to a few fixed lengths so the
compiled step is traced only a few times.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from mlx_distill.errors import DistillError
from mlx_distill.methods import LABEL_SOURCES, METHODS, cot_target, explain_prompt, predict_prompt

# Padded lengths; a sequence is padded to the smallest bucket that holds it.
BUCKETS = (8, 16, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024, 1536, 2048)


@dataclass(frozen=True)
class TrainText:
    """One training example as text: the ``predict:`` target and the ``explain:`` target."""

    id: str
    input: str
    target: str
    rationale: str | None = None  # None: this example has no rationale row in the loss


@dataclass(frozen=True)
class TargetStats:
    examples: int
    with_rationale: int
    teacher_labels: int  # labels taken from the teacher's answers
    gold_fallbacks: int  # teacher labels asked, no usable teacher answer, label_fallback=gold: gold used
    dropped: int  # no usable label (teacher labels asked and label_fallback=drop, or no gold label)
    no_teacher_answer: int = 0  # teacher labels asked but the teacher gave no usable answer
    restating_dropped: int = 0  # teacher rationales left out of explain: because they only restate the answer


def _field(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def teacher_rationale(record: Any) -> str | None:
    """The rationale of a teacher record if it is usable (accepted and not empty), else None."""
    if record is None or not _field(record, "accepted", False):
        return None
    text = (_field(record, "rationale") or "").strip()
    return text or None


def teacher_answer(record: Any) -> str | None:
    """The teacher's parsed answer if the record has one, else None."""
    if record is None or _field(record, "parse_ok", True) is False:
        return None
    text = (_field(record, "answer") or "").strip()
    return text or None


def build_texts(
    examples: Sequence[Any],
    method: str,
    *,
    label_source: str = "gold",
    rationales: Mapping[str, Any] | None = None,
    use_human_rationales: bool = False,
    alpha: float = 0.5,
    label_fallback: str = "drop",
    keep_restating: bool = False,
) -> tuple[list[TrainText], TargetStats]:
    """Turn examples into the rows a method trains on.

    Args:
        examples: ``mlx_distill.data.Example`` items (``id``, ``input``, ``label``, ``rationale``).
        method: ``step-by-step``, ``finetune``, ``distill`` or ``cot``.
        label_source: ``gold`` or ``teacher`` (``distill`` always uses the teacher's answers).
        rationales: teacher records by example id (``mlx_distill.data.load_rationales``).
        use_human_rationales: take the rationale from ``Example.rationale`` instead.
        alpha: the label weight; with ``alpha == 1`` no rationale row is built at all.
        label_fallback: with teacher labels, a row whose teacher gave no usable answer is
            dropped (``drop``, so no gold label enters a teacher-labelled run) or takes its gold
            label (``gold``).
        keep_restating: also train ``explain:`` on teacher rationales that only restate the
            answer ("A cod is a fish."); by default they are left out (the row keeps its label).

    Returns:
        The rows and counts of what was used.
    """
    if method not in METHODS:
        raise DistillError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if label_source not in LABEL_SOURCES:
        raise DistillError(f"unknown label source {label_source!r}; use gold or teacher")
    if label_fallback not in ("drop", "gold"):
        raise DistillError(f"unknown label fallback {label_fallback!r}; use drop or gold")
    rationales = rationales or {}
    if method == "distill":
        label_source = "teacher"
    if method == "finetune":
        label_source = "gold"
    wants_rationale = method == "cot" or (method == "step-by-step" and alpha < 1.0)
    if label_source == "teacher" and not rationales:
        raise DistillError(f"method {method} with teacher labels needs a rationale file (--rationales FILE)")
    if wants_rationale and not rationales and not use_human_rationales:
        raise DistillError(
            f"method {method} needs rationales: pass --rationales FILE or --human-rationales "
            "(or use --method finetune)"
        )

    rows: list[TrainText] = []
    with_rationale = teacher_labels = gold_fallbacks = dropped = no_answer = restating = 0
    for example in examples:
        record = rationales.get(example.id)
        label = example.label
        if label_source == "teacher":
            answer = teacher_answer(record)
            if answer is not None:
                label, teacher_labels = answer, teacher_labels + 1
            else:
                no_answer += 1
                if label_fallback == "drop":
                    label = ""
                elif label:
                    gold_fallbacks += 1
        if not label:
            dropped += 1
            continue
        rationale = None
        if wants_rationale:
            if use_human_rationales:
                rationale = (example.rationale or "").strip() or None
            else:
                rationale = teacher_rationale(record)
                if rationale is not None and not keep_restating and _field(record, "restates_answer", False):
                    rationale, restating = None, restating + 1
        with_rationale += rationale is not None
        if method == "cot":
            rows.append(TrainText(example.id, example.input, cot_target(rationale, label)))
        else:
            rows.append(TrainText(example.id, example.input, label, rationale))
    if not rows:
        fix = " or --label-fallback gold" if no_answer else ""
        raise DistillError(f"no training example has a usable label; check the data file and --label-source{fix}")
    stats = TargetStats(len(rows), with_rationale, teacher_labels, gold_fallbacks, dropped, no_answer, restating)
    return rows, stats


@dataclass
class TokenizedRows:
    """Token ids (with EOS) of every row; ``explain``/``rationale`` are None where unused."""

    ids: list[str]
    predict: list[np.ndarray]
    target: list[np.ndarray]
    explain: list[np.ndarray | None]
    rationale: list[np.ndarray | None]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_rationale_task(self) -> bool:
        return any(r is not None for r in self.rationale)


def _encode(tokenizer: Any, texts: list[str], max_length: int) -> list[np.ndarray]:
    if not texts:
        return []
    encoded = tokenizer(texts, max_length=max_length, truncation=True, add_special_tokens=True)["input_ids"]
    return [np.asarray(ids, dtype=np.int32) for ids in encoded]


def tokenize_rows(
    tokenizer: Any, rows: Sequence[TrainText], *, max_input_tokens: int, max_target_tokens: int
) -> TokenizedRows:
    """Tokenize every row once (the tokenizer appends EOS; long texts are truncated)."""
    predict = _encode(tokenizer, [predict_prompt(r.input) for r in rows], max_input_tokens)
    target = _encode(tokenizer, [r.target for r in rows], max_target_tokens)
    with_r = [i for i, r in enumerate(rows) if r.rationale is not None]
    explain_ids = _encode(tokenizer, [explain_prompt(rows[i].input) for i in with_r], max_input_tokens)
    rationale_ids = _encode(tokenizer, [rows[i].rationale for i in with_r], max_target_tokens)
    explain: list[np.ndarray | None] = [None] * len(rows)
    rationale: list[np.ndarray | None] = [None] * len(rows)
    for j, i in enumerate(with_r):
        explain[i], rationale[i] = explain_ids[j], rationale_ids[j]
    return TokenizedRows([r.id for r in rows], predict, target, explain, rationale)


def bucket_length(n: int) -> int:
    """The padded length for a sequence of ``n`` tokens."""
    index = bisect.bisect_left(BUCKETS, n)
    if index < len(BUCKETS):
        return BUCKETS[index]
    return -(-n // 512) * 512


@dataclass(frozen=True)
class DataPosition:
    """Where the batch stream is: the epoch and the next batch index inside it."""

    epoch: int = 0
    batch: int = 0


class BatchOrder:
    """The seeded batch order: each epoch is a permutation, length-sorted inside windows.

    The order of epoch ``e`` depends only on (seed, e), so a resumed run replays it exactly.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, window_batches: int = 32):
        if batch_size < 1:
            raise DistillError(f"batch size {batch_size} must be at least 1")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.window = batch_size * max(1, window_batches)
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-len(self.lengths) // self.batch_size)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.RandomState((self.seed * 1_000_003 + epoch) % (2**32))
        order = rng.permutation(len(self.lengths))
        # A short last batch is filled from the start of the epoch so every batch has batch_size rows.
        missing = (-len(order)) % self.batch_size
        order = np.concatenate([order, np.resize(order, missing)]) if missing else order
        batches = []
        for start in range(0, len(order), self.window):
            chunk = order[start : start + self.window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        shuffled = [batches[i] for i in rng.permutation(len(batches))]
        self._cache = (epoch, shuffled)
        return shuffled

    def take(self, position: DataPosition) -> tuple[np.ndarray, DataPosition]:
        """The batch at ``position`` and the position after it."""
        batches = self.epoch_batches(position.epoch)
        batch = batches[position.batch]
        nxt = position.batch + 1
        return batch, DataPosition(position.epoch + (nxt >= len(batches)), nxt % len(batches))


@dataclass
class TaskArrays:
    """One task's padded arrays for a micro-batch (numpy; int32 ids, float32 target mask)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    decoder_input_ids: np.ndarray
    targets: np.ndarray
    target_mask: np.ndarray

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.size + self.targets.size)

    def as_tuple(self) -> tuple[np.ndarray, ...]:
        return (self.input_ids, self.attention_mask, self.decoder_input_ids, self.targets, self.target_mask)


def _pad(seqs: Sequence[np.ndarray | None], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.full((len(seqs), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(seqs), length), dtype=np.float32)
    for i, s in enumerate(seqs):
        if s is not None and len(s):
            out[i, : len(s)] = s
            mask[i, : len(s)] = 1.0
    return out, mask


def task_arrays(
    inputs: Sequence[np.ndarray | None],
    targets: Sequence[np.ndarray | None],
    *,
    pad_id: int,
    decoder_start_id: int,
) -> TaskArrays:
    """Pad one task's rows; decoder inputs are the targets shifted right after the start token."""
    t_in = bucket_length(max((len(s) for s in inputs if s is not None), default=1))
    t_out = bucket_length(max((len(s) for s in targets if s is not None), default=1))
    input_ids, attention_mask = _pad(inputs, t_in, pad_id)
    target_ids, target_mask = _pad(targets, t_out, pad_id)
    decoder_input_ids = np.full_like(target_ids, pad_id)
    decoder_input_ids[:, 0] = decoder_start_id
    decoder_input_ids[:, 1:] = target_ids[:, :-1]
    # Rows without a rationale still need one visible input token so attention has a key.
    attention_mask[:, 0] = 1.0
    return TaskArrays(input_ids, attention_mask, decoder_input_ids, target_ids, target_mask)


@dataclass
class MicroBatch:
    label: TaskArrays
    rationale: TaskArrays | None
    label_tokens: int  # real (non-pad) target tokens
    rationale_tokens: int
    real_tokens: int  # real input + target tokens of both tasks
    rows: int = 0  # examples in the micro-batch
    rationale_rows: int = 0  # of them, with an explain: row

    @property
    def padded_tokens(self) -> int:
        return self.label.padded_tokens + (self.rationale.padded_tokens if self.rationale else 0)


def make_micro_batch(rows: TokenizedRows, indices: Sequence[int], *, pad_id: int, decoder_start_id: int) -> MicroBatch:
    predict = [rows.predict[i] for i in indices]
    target = [rows.target[i] for i in indices]
    label = task_arrays(predict, target, pad_id=pad_id, decoder_start_id=decoder_start_id)
    real = sum(len(s) for s in predict) + sum(len(s) for s in target)
    label_tokens = sum(len(s) for s in target)
    rationale = None
    rationale_tokens = rationale_rows = 0
    if rows.has_rationale_task:
        # Only the rows that have a rationale enter the explain: arrays, their count padded to a
        # power of two (few shapes to compile): with sparse coverage most of a batch has none.
        covered = [i for i in indices if rows.rationale[i] is not None]
        slots = min(len(indices), 1 << max(0, len(covered) - 1).bit_length()) if covered else 0
        explain = [rows.explain[i] for i in covered] + [None] * (slots - len(covered))
        rat = [rows.rationale[i] for i in covered] + [None] * (slots - len(covered))
        if covered:
            rationale = task_arrays(explain, rat, pad_id=pad_id, decoder_start_id=decoder_start_id)
            rationale_tokens = sum(len(s) for s in rat if s is not None)
            rationale_rows = sum(1 for s in rat if s is not None)
            real += sum(len(s) for s in explain if s is not None) + rationale_tokens
    return MicroBatch(label, rationale, label_tokens, rationale_tokens, real, len(indices), rationale_rows)


def split_micro_batches(
    rows: TokenizedRows,
    indices: np.ndarray,
    *,
    pad_id: int,
    decoder_start_id: int,
    max_tokens: int | None,
    min_splits: int = 1,
) -> list[MicroBatch]:
    """Cut one optimizer step's rows into micro-batches of at most ``max_tokens`` padded tokens.

    Rows are halved until each piece fits, so row counts stay powers-of-two fractions of the
    batch (few distinct shapes to compile).

    Raises:
        DistillError: a single row is already larger than ``max_tokens``.
    """
    pieces = list(np.array_split(np.asarray(indices), max(1, min(min_splits, len(indices)))))
    out: list[MicroBatch] = []
    while pieces:
        piece = pieces.pop(0)
        micro = make_micro_batch(rows, piece, pad_id=pad_id, decoder_start_id=decoder_start_id)
        if max_tokens is None or micro.padded_tokens <= max_tokens:
            out.append(micro)
            continue
        if len(piece) == 1:
            raise DistillError(
                f"one training example needs {micro.padded_tokens} padded tokens, more than "
                f"max_tokens_per_batch={max_tokens}; raise --max-tokens-per-batch or lower "
                "--max-input-tokens / --max-target-tokens"
            )
        half = (len(piece) + 1) // 2
        pieces[:0] = [piece[:half], piece[half:]]
    return out
