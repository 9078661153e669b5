"""Continuous batching for the student: a step-level decoder whose rows join and leave between steps.

Each live row has its own encoder output (cross-attention keys/values), self-attention cache,
sampler settings and ``max_tokens``. `ContinuousDecoder.add` runs the encoder once for the
newcomers (batched) and they join the next step sent to MLX; `ContinuousDecoder.step` gives one
token for every live row and retires the rows that finish (EOS or ``max_tokens``); `drop` retires
rows the caller no longer wants (a stop string, a client that left). One step is always in flight:
`step` sends the next step to MLX before it reads the current one's tokens back, so that MLX
computes while the caller handles them (as mlx-lm's generation loop does).

How rows of different ages share one cache (a lane's): all its rows write their next token at one
shared slot ``S``; a row that joined at slot ``s`` masks the slots before ``s``. T5's self-attention bias
depends only on the distance between query and key slots, so each row sees exactly what it would
see alone. When ``S`` reaches the cache's end, every row is shifted left by the oldest live row's
start (distances unchanged) and the cache is resized to fit: memory follows the live rows, never
``max_tokens``. Rows asking for more than `SHORT_LANE_TOKENS` tokens have a lane (a cache) of their
own, so a long answer does not widen the short ones' window; one compiled step decodes both lanes.
Nothing this decoder computes for a row depends on what else shares the batch, so
greedy rows give the tokens `mlx_distill.student.generate` gives, with one limit below the model:
OpenBLAS sums a row's matrix products in an order that depends on how many rows there are (MLX's
bundled BLAS does not), which moved the demo student's logits by up to 2e-5 between one row and
sixteen (t5-small-like: 5e-5). A greedy token can then differ only where its two best logits are
that close; no answer differed in the tests or in `benchmarks/serve_throughput.py`.

A newcomer's encoder pass, and a step, whose largest matrix product is small run on one OpenBLAS
thread (`mlx_distill.platform.blas_threads_for`): the results are the same to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

import mlx.core as mx
import numpy as np

from mlx_distill.platform import SINGLE_THREAD_MATMUL, blas_threads_for, set_blas_threads_for
from mlx_distill.student.generate import LENGTH_BUCKET, check_generation_args, is_greedy, make_student_sampler
from mlx_distill.student.t5 import DecoderCache, Lane, Model, ModelArgs, _neg_inf, padding_bias


# Rows asking for at most this many tokens (the server's default answer length) share a lane.
SHORT_LANE_TOKENS = 64

# Cache slots added at a time. Smaller than `generate`'s: every row attends over the whole cache,
# and rows of different ages keep more of it in use (measured: a 16-row step ~10% faster than with 64).
ROOM_STEP = 16


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


@dataclass(eq=False)
class _Row:
    request: RowRequest
    start: int  # the cache slot of its first decoder token
    dispatched: int = 0  # steps sent to MLX with this row
    generated: int = 0  # tokens read back
    done: bool = False  # finished or dropped: no more tokens are read for it


@dataclass(eq=False)
class _Step:
    """A step sent to MLX and not read back yet: its chosen tokens and the rows they belong to."""

    chosen: mx.array
    rows: list[_Row | None]


def _ceil_to(value: int, step: int) -> int:
    return -(-value // step) * step


class ContinuousDecoder:
    """Decodes a changing set of rows one token per step (the model is put in eval mode).

    Rows asking for at most `SHORT_LANE_TOKENS` tokens share one cache, longer ones another: every
    row attends over its lane's whole window, which a long row keeps wide (demo student, 17 rows: a
    step took ~1.5 ms over 64 slots and ~2.5 ms over 256), so short answers do not pay for a long
    one's. One compiled step serves both lanes: projections and feed-forward on all rows at once,
    attention per lane (`mlx_distill.student.t5.DecoderLayer.step_rows`).

    Args:
        model: The T5 student.

    Use from one thread only (the one that touches MLX).
    """

    def __init__(self, model: Model):
        model.eval()
        self.model, self.args = model, model.args
        self._lanes = (_Lane(model), _Lane(model))  # short, long
        self._in_flight: _Step | None = None
        self._last_tokens: set[_Row] = set()  # rows out of their lane whose last token is in flight

    @property
    def live(self) -> int:
        """Rows decoding now (the newcomers of `add` included)."""
        return sum(lane.live for lane in self._lanes) + len(self._last_tokens)

    @property
    def capacity(self) -> int:
        """Self-attention cache slots held now (both lanes)."""
        return sum(lane.capacity for lane in self._lanes)

    def keys(self) -> list[Hashable]:
        return [key for lane in self._lanes for key in lane.keys()] + [row.request.key for row in self._last_tokens]

    def add(self, requests: list[RowRequest]) -> None:
        """Encode ``requests`` (together, per lane); they join the next step sent to MLX (their first
        token comes with the `step` call after next when a step is in flight).

        Raises:
            DistillError: a bad ``max_tokens``, ``temperature`` or ``top_p`` (nothing is added).
            ValueError: a key that is already live or given twice, or a row without ids (nothing is added).
        """
        _check_new_rows(requests, set(self.keys()))
        for lane, long in zip(self._lanes, (False, True)):
            lane.add([r for r in requests if (r.max_tokens > SHORT_LANE_TOKENS) == long])

    def drop(self, keys: set[Hashable] | list[Hashable]) -> None:
        """Retire the rows named ``keys`` (absent keys are ignored): no token of theirs comes after."""
        gone = set(keys)
        for row in list(self._last_tokens):
            if row.request.key in gone:
                row.done = True
                self._last_tokens.discard(row)
        for lane in self._lanes:
            lane.drop(gone)

    def step(self) -> list[RowToken]:
        """One token for every live row; rows that finish (EOS, ``max_tokens``) are retired.

        The next step is sent to MLX before this one's tokens are read back (see the module's
        docstring): a row that ends with EOS, or is dropped, has one more token computed that nobody
        reads; a row that reaches ``max_tokens`` leaves the step its last token is sent.
        """
        if self._in_flight is None:
            self._in_flight = self._dispatch()
        current, self._in_flight = self._in_flight, self._dispatch()
        if current is None:
            return []
        out = self._read(current)
        if self._in_flight is not None and all(row is None or row.done for row in self._in_flight.rows):
            self._in_flight = None  # every row in it has ended: nothing to read
        if self._in_flight is None:
            set_blas_threads_for(SINGLE_THREAD_MATMUL)  # idle: back to the default
        return out

    def _dispatch(self) -> _Step | None:
        """Send a step of the rows in the lanes to MLX (evaluated asynchronously); None without rows."""
        lanes = [lane for lane in self._lanes if lane.rows]
        if not lanes:
            return None
        inputs = list(zip(*(lane.step_inputs() for lane in lanes)))
        logits, greedy, keys, values = _step_fn(self.model)(*inputs)
        del inputs
        rows = [row for lane in lanes for row in lane.rows]
        chosen = _choose(rows, logits, greedy)
        set_blas_threads_for(_widest_matmul(self.args, len(rows), self.args.vocab_size))
        crosses = [lane.cross for lane in lanes]
        start = 0
        for lane, lane_keys, lane_values in zip(lanes, keys, values):
            size = len(lane.rows)
            self._last_tokens.update(lane.dispatched(chosen[start : start + size], lane_keys, lane_values))
            start += size
        # Sent once nothing in Python holds the caches this step updates, so that MLX updates them in
        # place (an input still referenced is copied whole first: the cache of every row, every step).
        mx.async_eval(chosen, keys, values, crosses)
        return _Step(chosen, rows)

    def _read(self, step: _Step) -> list[RowToken]:
        """The tokens of a dispatched step (waiting for them); rows that end leave."""
        out, ended = [], set()
        eos = self.args.eos_token_id
        for row, token in zip(step.rows, np.array(step.chosen).tolist()):
            if row is None or row.done:
                continue
            row.generated += 1
            finish = "stop" if token == eos else ("length" if row.generated >= row.request.max_tokens else None)
            out.append(RowToken(row.request.key, token, row.generated, finish))
            if finish is not None:
                row.done = True
                ended.add(row)
        if ended:
            self._last_tokens -= ended
            for lane in self._lanes:
                lane.leave_rows(ended)
        return out


def _check_new_rows(requests: list[RowRequest], live: set[Hashable]) -> None:
    """Raise before anything joins: bad generation settings, a key already live or given twice, no ids."""
    for request in requests:
        check_generation_args(request.max_tokens, 1, request.temperature, request.top_p)
        if request.key in live or not request.ids:
            raise ValueError(f"row {request.key!r} is already live or has no input ids")
        live.add(request.key)


class _Lane:
    """Rows that share one self-attention cache (see the module's docstring); stepped by `ContinuousDecoder`."""

    def __init__(self, model: Model):
        self.model, self.args = model, model.args
        self._reset()

    def _reset(self) -> None:
        """Nothing live: free every buffer and start again at slot 0."""
        self.rows: list[_Row | None] = []  # None: a hole a newcomer takes (keeps shapes, and the compiled step)
        self._tokens: mx.array | None = None  # (B,) each row's input token for the next step (maybe not computed yet)
        self._cross: list[tuple[mx.array, mx.array]] = []  # per layer (B, H, T, D)
        self._cross_mask = np.zeros((0, 0), dtype=np.int32)  # (B, T)
        self._keys: list[mx.array] = []  # per layer (B, H, capacity, D)
        self._values: list[mx.array] = []
        self._slot = 0  # where every row writes its next token

    @property
    def live(self) -> int:
        """Rows decoding now (the newcomers of `add` included)."""
        return sum(row is not None for row in self.rows)

    @property
    def capacity(self) -> int:
        """Self-attention cache slots held now."""
        return int(self._keys[0].shape[2]) if self._keys else 0

    def keys(self) -> list[Hashable]:
        return [row.request.key for row in self.rows if row is not None]

    # ---- joining and leaving ----

    def add(self, requests: list[RowRequest]) -> None:
        """Encode ``requests`` together (checked by `ContinuousDecoder.add`); they decode from the next step on."""
        if not requests:
            return
        length = _ceil_to(max(len(r.ids) for r in requests), LENGTH_BUCKET)
        ids = np.full((len(requests), length), self.args.pad_token_id, dtype=np.int32)
        mask = np.zeros((len(requests), length), dtype=np.int32)
        for i, request in enumerate(requests):
            ids[i, : len(request.ids)] = request.ids
            mask[i, : len(request.ids)] = 1
        cross = _cross_fn(self.model)(mx.array(ids), mx.array(mask))
        with blas_threads_for(_widest_matmul(self.args, len(requests) * length)):
            mx.eval(cross)
        width = max(length, self._cross_mask.shape[1])
        cross = [(_pad_axis2(k, width), _pad_axis2(v, width)) for k, v in cross]
        new_mask = np.pad(mask, [(0, 0), (0, width - length)])
        self._cross = [(_pad_axis2(k, width), _pad_axis2(v, width)) for k, v in self._cross]
        self._cross_mask = np.pad(self._cross_mask, [(0, 0), (0, width - self._cross_mask.shape[1])])
        holes = [i for i, row in enumerate(self.rows) if row is None][: len(requests)]
        if holes:  # newcomers take the places of rows that left; their old cache slots are masked
            into, n = mx.array(np.array(holes, dtype=np.int32)), len(holes)
            for layer, ((k, v), (nk, nv)) in enumerate(zip(self._cross, cross)):
                k[into], v[into] = nk[:n], nv[:n]
                self._cross[layer] = (k, v)
            self._cross_mask[holes] = new_mask[:n]
            self._tokens[into] = self.args.decoder_start_token_id
            for i, request in zip(holes, requests):
                self.rows[i] = _Row(request, self._slot)
        rest, cross = requests[len(holes):], [(k[len(holes):], v[len(holes):]) for k, v in cross]
        if not rest:
            return
        if self.rows:
            self._cross = [(mx.concatenate([k, nk]), mx.concatenate([v, nv]))
                           for (k, v), (nk, nv) in zip(self._cross, cross)]
        else:
            self._cross = cross
        self._cross_mask = np.concatenate([self._cross_mask, new_mask[len(holes):]])
        if self._keys:
            (_, heads, capacity, dim) = self._keys[0].shape
            zeros = mx.zeros((len(rest), heads, capacity, dim), dtype=self._keys[0].dtype)
            self._keys = [mx.concatenate([k, zeros]) for k in self._keys]
            self._values = [mx.concatenate([v, zeros]) for v in self._values]
        self.rows += [_Row(request, self._slot) for request in rest]
        starts = mx.full((len(rest),), self.args.decoder_start_token_id, dtype=mx.int32)
        self._tokens = starts if self._tokens is None else mx.concatenate([self._tokens, starts])

    def drop(self, keys: set[Hashable]) -> None:
        """Retire the rows named ``keys`` (absent keys are ignored)."""
        rows = {row for row in self.rows if row is not None and row.request.key in keys}
        for row in rows:
            row.done = True
        self.leave_rows(rows)

    def leave_rows(self, rows: set[_Row]) -> None:
        """Retire ``rows`` (those not in this lane are ignored)."""
        self._leave([i for i, row in enumerate(self.rows) if row is not None and row in rows])

    def _leave(self, indices: list[int]) -> None:
        """Make holes of rows ``indices``; gather the live rows once holes outnumber them."""
        for i in indices:
            self.rows[i] = None
        live = [i for i, row in enumerate(self.rows) if row is not None]
        if not live:
            self._reset()
        elif len(live) < len(self.rows) - len(live):
            self._gather(live)

    def _gather(self, indices: list[int]) -> None:
        take = mx.array(np.array(indices, dtype=np.int32))
        self.rows = [self.rows[i] for i in indices]
        self._tokens = self._tokens[take]
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
            shape = (len(self.rows), heads, ROOM_STEP, self.args.d_kv)
            dtype = self.model.dtype
            self._keys = [mx.zeros(shape, dtype=dtype) for _ in range(layers)]
            self._values = [mx.zeros(shape, dtype=dtype) for _ in range(layers)]
            return
        if self._slot < self.capacity:
            return
        oldest = min(row.start for row in self.rows if row is not None)
        used = self._slot - oldest
        capacity = ROOM_STEP
        while capacity < used + ROOM_STEP:  # room for ROOM_STEP more steps before the next move
            capacity *= 2

        def moved(buffer: mx.array) -> mx.array:
            kept = buffer[:, :, oldest : self._slot]
            return mx.pad(kept, [(0, 0), (0, 0), (0, capacity - used), (0, 0)])

        self._keys = [moved(k) for k in self._keys]
        self._values = [moved(v) for v in self._values]
        for row in self.rows:
            if row is not None:
                row.start -= oldest
        self._slot = used

    @property
    def cross(self) -> list[tuple[mx.array, mx.array]]:
        return self._cross

    def step_inputs(self) -> tuple:
        """This lane's inputs to the compiled step (room made for this step's slot)."""
        self._make_room()
        capacity = self.capacity
        # A hole starts past the cache's end: every slot is hidden from it.
        starts = [row.start if row is not None else capacity + 1 for row in self.rows]
        return (self._tokens, mx.array(np.array(starts, dtype=np.int32)),
                mx.array(self._slot, dtype=mx.int32), mx.array(self._cross_mask), self._keys, self._values,
                self._cross)

    def dispatched(self, tokens: mx.array, keys: list[mx.array], values: list[mx.array]) -> list[_Row]:
        """Take this lane's part of a dispatched step (its tokens, maybe not computed yet, are the next
        step's input); the rows that have now been sent their ``max_tokens``-th step leave, and are returned."""
        self._tokens, self._keys, self._values = tokens, keys, values
        self._slot += 1
        last = []
        for i, row in enumerate(self.rows):
            if row is not None:
                row.dispatched += 1
                if row.dispatched >= row.request.max_tokens:
                    last.append(i)
        rows = [self.rows[i] for i in last]
        self._leave(last)
        return rows


def _choose(rows: list[_Row | None], logits: mx.array, chosen: mx.array) -> mx.array:
    """Each row's next token: argmax (``chosen``) for greedy rows, its own sampler for the others."""
    groups: dict[tuple[float, float], list[int]] = {}
    for i, row in enumerate(rows):
        if row is None:
            continue
        request = row.request
        if not is_greedy(request.temperature, request.top_p):
            groups.setdefault((request.temperature, request.top_p), []).append(i)
    for (temperature, top_p), indices in groups.items():
        picked = mx.array(np.array(indices, dtype=np.int32))
        part = logits[picked]
        # The sampler's top-p reads log-probabilities.
        sampled = make_student_sampler(temperature, top_p)(part - mx.logsumexp(part, axis=-1, keepdims=True))
        chosen[picked] = sampled.astype(mx.int32)
    return chosen


def _cross_fn(model: Model):
    """The compiled encoder pass of `model` to each decoder layer's cross-attention keys and values
    (B, H, T, D), laid out as the step reads them (compiled once per shape; weights read at call time)."""
    fn = getattr(model, "_compiled_continuous_cross", None)
    if fn is None:

        def cross(ids, mask):
            kv = model.decoder.cross_kv(model.encode(ids, mask))
            return [(mx.contiguous(k), mx.contiguous(v)) for k, v in kv]

        fn = mx.compile(cross, inputs=model.state)
        model._compiled_continuous_cross = fn
    return fn


def _step_fn(model: Model):
    """The compiled decoding step of `model` for the live rows of one or two lanes, each argument a
    tuple with one entry per lane (compiled once per shape; weights read at call time)."""
    fn = getattr(model, "_compiled_continuous_step_rows", None)
    if fn is None:

        def step(tokens, starts, offsets, cross_masks, keys, values, crosses):
            decoder = model.decoder
            lanes, first = [], 0
            for lane in zip(tokens, starts, offsets, cross_masks, keys, values, crosses):
                lanes.append(_lane_view(model, first, *lane))
                first += lane[0].shape[0]
            x = model.shared(tokens[0] if len(tokens) == 1 else mx.concatenate(tokens))
            for i, layer in enumerate(decoder.layers):
                x = layer.step_rows(x, lanes, i)
            logits = model.lm_logits(decoder.final_norm(x))
            return (logits, mx.argmax(logits, axis=-1).astype(mx.int32), [lane.cache.keys for lane in lanes],
                    [lane.cache.values for lane in lanes])

        fn = mx.compile(step, inputs=model.state)
        model._compiled_continuous_step_rows = fn
    return fn


def _lane_view(model: Model, first: int, tokens, starts, offset, cross_mask, keys, values, cross) -> Lane:
    """Rows ``first:`` of a step that share `keys`/`values`: their attention biases and cache."""
    dtype = model.dtype
    slots = mx.arange(keys[0].shape[2])
    # Each row sees the slots from its own start to the shared one: distances as if alone.
    hidden = (slots[None, :] < starts[:, None]) | (slots[None, :] > offset)
    position = model.decoder.relative_attention_bias(mx.reshape(offset, (1,)), slots)
    self_bias = mx.where(hidden[:, None, None, :], _neg_inf(dtype), position).astype(dtype)
    cache = DecoderCache(len(keys), keys[0].shape[2])
    cache.keys, cache.values, cache.cross, cache.offset = list(keys), list(values), cross, offset
    return Lane(first, first + tokens.shape[0], self_bias, cross, padding_bias(cross_mask, dtype), cache)


def _widest_matmul(args: ModelArgs, tokens: int, vocab: int = 0) -> int:
    """Multiply-adds of the largest matrix product of a pass over ``tokens`` (with the output layer: ``vocab``)."""
    return tokens * args.d_model * max(args.d_ff, args.num_heads * args.d_kv, vocab)


def _pad_axis2(x: mx.array, length: int) -> mx.array:
    extra = length - x.shape[2]
    return mx.pad(x, [(0, 0), (0, 0), (0, extra), (0, 0)]) if extra > 0 else x

