"""Continuous batching for the student: a step-level decoder whose rows join and leave between steps.

Each live row has its own encoder output (cross-attention keys/values), self-attention cache,
sampler settings and ``max_tokens``. `ContinuousDecoder.add` runs the encoder once for the
newcomers (batched) and they join at the next `ContinuousDecoder.step`, which decodes one token
for every live row and retires the rows that finish (EOS or ``max_tokens``); `drop` retires rows
the caller no longer wants (a stop string, a client that left).

How rows of different ages share one cache: all rows write their next token at one shared slot
``S``; a row that joined at slot ``s`` masks the slots before ``s``. T5's self-attention bias
depends only on the distance between query and key slots, so each row sees exactly what it would
see alone. When ``S`` reaches the cache's end, every row is shifted left by the oldest live row's
start (distances unchanged) and the cache is resized to fit: memory follows the live rows, never
``max_tokens``. Greedy rows give the tokens `mlx_distill.student.generate` gives, whatever else
shares the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

import mlx.core as mx
import numpy as np

from mlx_distill.student.generate import (CACHE_STEP, LENGTH_BUCKET, check_generation_args, is_greedy,
                                          make_student_sampler)
from mlx_distill.student.t5 import DecoderCache, Model, _neg_inf, padding_bias


@dataclass(frozen=True)
class RowRequest:
    """A prompt to decode: its encoder input ids (`mlx_distill.student.encode_prompts`) and settings."""

    key: Hashable  # the caller's name for the row, unique among live rows
    ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0


@dataclass(frozen=True)
class RowToken:
    """One row's token of a step; ``finish_reason`` is set on its last one ("stop": EOS, or "length")."""

    key: Hashable
    token: int
    generated_tokens: int
    finish_reason: str | None


@dataclass
class _Row:
    request: RowRequest
    start: int  # the cache slot of its first decoder token
    generated: int = 0


def _ceil_to(value: int, step: int) -> int:
    return -(-value // step) * step


class ContinuousDecoder:
    """Decodes a changing set of rows one token per step (the model is put in eval mode).

    Args:
        model: The T5 student.

    Use from one thread only (the one that touches MLX).
    """

    def __init__(self, model: Model):
        model.eval()
        self.model, self.args = model, model.args
        self._reset()

    def _reset(self) -> None:
        """Nothing live: free every buffer and start again at slot 0."""
        self.rows: list[_Row] = []
        self._tokens: list[int] = []  # each row's input token for the next step
        self._cross: list[tuple[mx.array, mx.array]] = []  # per layer (B, H, T, D)
        self._cross_mask = np.zeros((0, 0), dtype=np.int32)  # (B, T)
        self._keys: list[mx.array] = []  # per layer (B, H, capacity, D)
        self._values: list[mx.array] = []
        self._slot = 0  # where every row writes its next token

    @property
    def live(self) -> int:
        """Rows decoding now (the newcomers of `add` included)."""
        return len(self.rows)

    @property
    def capacity(self) -> int:
        """Self-attention cache slots held now."""
        return int(self._keys[0].shape[2]) if self._keys else 0

    def keys(self) -> list[Hashable]:
        return [row.request.key for row in self.rows]

    # ---- joining and leaving ----

    def add(self, requests: list[RowRequest]) -> None:
        """Encode ``requests`` together; they decode from the next step on.

        Raises:
            DistillError: a bad ``max_tokens``, ``temperature`` or ``top_p`` (nothing is added).
            ValueError: a key that is already live, or a row without ids.
        """
        if not requests:
            return
        live = set(self.keys())
        for request in requests:
            check_generation_args(request.max_tokens, 1, request.temperature, request.top_p)
            if request.key in live or not request.ids:
                raise ValueError(f"row {request.key!r} is already live or has no input ids")
            live.add(request.key)
        length = _ceil_to(max(len(r.ids) for r in requests), LENGTH_BUCKET)
        ids = np.full((len(requests), length), self.args.pad_token_id, dtype=np.int32)
        mask = np.zeros((len(requests), length), dtype=np.int32)
        for i, request in enumerate(requests):
            ids[i, : len(request.ids)] = request.ids
            mask[i, : len(request.ids)] = 1
        hidden = self.model.encode(mx.array(ids), mx.array(mask))
        cross = self.model.decoder.cross_kv(hidden)
        width = max(length, self._cross_mask.shape[1])
        new_mask = np.zeros((len(requests), width), dtype=np.int32)
        new_mask[:, :length] = mask
        old_mask = np.pad(self._cross_mask, [(0, 0), (0, width - self._cross_mask.shape[1])])
        if self.rows:
            self._cross = [(mx.concatenate([_pad_axis2(k, width), _pad_axis2(nk, width)]),
                            mx.concatenate([_pad_axis2(v, width), _pad_axis2(nv, width)]))
                           for (k, v), (nk, nv) in zip(self._cross, cross)]
        else:
            self._cross = [(_pad_axis2(k, width), _pad_axis2(v, width)) for k, v in cross]
        self._cross_mask = np.concatenate([old_mask, new_mask])
        if self._keys:
            n, (_, heads, capacity, dim) = len(requests), self._keys[0].shape
            zeros = mx.zeros((n, heads, capacity, dim), dtype=self._keys[0].dtype)
            self._keys = [mx.concatenate([k, zeros]) for k in self._keys]
            self._values = [mx.concatenate([v, zeros]) for v in self._values]
        self.rows += [_Row(request, self._slot) for request in requests]
        self._tokens += [self.args.decoder_start_token_id] * len(requests)  # evaluated with the next step

    def drop(self, keys: set[Hashable] | list[Hashable]) -> None:
        """Retire the rows named ``keys`` (absent keys are ignored)."""
        gone = set(keys)
        self._keep([i for i, row in enumerate(self.rows) if row.request.key not in gone])

    def _keep(self, indices: list[int]) -> None:
        if len(indices) == len(self.rows):
            return
        if not indices:
            self._reset()
            return
        take = mx.array(np.array(indices, dtype=np.int32))
        self.rows = [self.rows[i] for i in indices]
        self._tokens = [self._tokens[i] for i in indices]
        self._cross = [(k[take], v[take]) for k, v in self._cross]
        width = _ceil_to(int(self._cross_mask[indices].sum(axis=1).max()), LENGTH_BUCKET)
        self._cross_mask = self._cross_mask[indices]
        if width < self._cross_mask.shape[1]:  # the longest question left: drop the padding
            self._cross = [(k[:, :, :width], v[:, :, :width]) for k, v in self._cross]
            self._cross_mask = self._cross_mask[:, :width]
        if self._keys:
            self._keys = [k[take] for k in self._keys]
            self._values = [v[take] for v in self._values]

    # ---- decoding ----

    def _make_room(self) -> None:
        """Ensure slot ``_slot`` exists: shift every row left by the oldest start, then resize."""
        if not self._keys:
            layers, heads = self.args.num_decoder_layers, self.args.num_heads
            shape = (len(self.rows), heads, CACHE_STEP, self.args.d_kv)
            dtype = self.model.dtype
            self._keys = [mx.zeros(shape, dtype=dtype) for _ in range(layers)]
            self._values = [mx.zeros(shape, dtype=dtype) for _ in range(layers)]
            return
        if self._slot < self.capacity:
            return
        oldest = min(row.start for row in self.rows)
        used = self._slot - oldest
        capacity = CACHE_STEP
        while capacity < used + CACHE_STEP:  # room for CACHE_STEP more steps before the next move
            capacity *= 2

        def moved(buffer: mx.array) -> mx.array:
            kept = buffer[:, :, oldest : self._slot]
            return mx.pad(kept, [(0, 0), (0, 0), (0, capacity - used), (0, 0)])

        self._keys = [moved(k) for k in self._keys]
        self._values = [moved(v) for v in self._values]
        for row in self.rows:
            row.start -= oldest
        self._slot = used

    def step(self) -> list[RowToken]:
        """One token for every live row; rows that finish (EOS, ``max_tokens``) are retired."""
        if not self.rows:
            return []
        self._make_room()
        model, decoder = self.model, self.model.decoder
        capacity = self.capacity
        starts = np.array([row.start for row in self.rows], dtype=np.int32)
        slots = np.arange(capacity, dtype=np.int32)
        hidden_slots = (slots[None, :] < starts[:, None]) | (slots[None, :] > self._slot)
        position = decoder.relative_attention_bias(mx.array([self._slot]), mx.arange(capacity))
        dtype = model.dtype
        self_bias = mx.where(mx.array(hidden_slots)[:, None, None, :], _neg_inf(dtype), position).astype(dtype)
        cross_bias = padding_bias(mx.array(self._cross_mask), dtype)
        cache = DecoderCache(len(decoder.layers), capacity)
        cache.keys, cache.values, cache.cross = list(self._keys), list(self._values), self._cross
        cache.offset = mx.array(self._slot, dtype=mx.int32)
        x = model.shared(mx.array(np.array(self._tokens, dtype=np.int32))[:, None])
        for i, layer in enumerate(decoder.layers):
            x = layer(x, self_bias, self._cross[i], cross_bias, cache, i)
        logits = model.lm_logits(decoder.final_norm(x))[:, -1, :]
        chosen = self._choose(logits)
        self._keys, self._values = cache.keys, cache.values
        mx.eval(chosen, self._keys, self._values, self._cross)
        self._slot += 1
        tokens = np.array(chosen).tolist()
        out, keep = [], []
        eos = self.args.eos_token_id
        for i, (row, token) in enumerate(zip(self.rows, tokens)):
            row.generated += 1
            finish = "stop" if token == eos else ("length" if row.generated >= row.request.max_tokens else None)
            out.append(RowToken(row.request.key, token, row.generated, finish))
            if finish is None:
                keep.append(i)
        self._tokens = tokens
        self._keep(keep)
        return out

    def _choose(self, logits: mx.array) -> mx.array:
        """Each row's next token: argmax for greedy rows, its own sampler for the others."""
        chosen = mx.argmax(logits, axis=-1).astype(mx.int32)
        groups: dict[tuple[float, float], list[int]] = {}
        for i, row in enumerate(self.rows):
            request = row.request
            if not is_greedy(request.temperature, request.top_p):
                groups.setdefault((request.temperature, request.top_p), []).append(i)
        for (temperature, top_p), indices in groups.items():
            rows = mx.array(np.array(indices, dtype=np.int32))
            part = logits[rows]
            # The sampler's top-p reads log-probabilities.
            sampled = make_student_sampler(temperature, top_p)(part - mx.logsumexp(part, axis=-1, keepdims=True))
            chosen[rows] = sampled.astype(mx.int32)
        return chosen


def _pad_axis2(x: mx.array, length: int) -> mx.array:
    extra = length - x.shape[2]
    return mx.pad(x, [(0, 0), (0, 0), (0, extra), (0, 0)]) if extra > 0 else x

