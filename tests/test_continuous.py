"""The step-level decoder: rows join and leave between steps; greedy rows give what `generate` gives."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from mlx_distill.errors import DistillError
from mlx_distill.methods import explain_prompt, predict_prompt
from mlx_distill.student import (
    MAX_NEW_TOKENS,
    ContinuousDecoder,
    RowRequest,
    encode_prompts,
    generate_tokens,
    load_student,
)
from mlx_distill.student.continuous import ROOM_STEP

PROMPTS = [predict_prompt(f"Tom has {a} apples and buys {b} more." + " Why?" * (a * b % 7)) for a in range(3, 6)
           for b in range(2, 5)] + [explain_prompt("Is a bat a bird?"), explain_prompt("2 + 2 = ?")]


@pytest.fixture(scope="module")
def student(demo_models):
    return load_student(demo_models["student"])


def _run(decoder: ContinuousDecoder, requests: list[RowRequest], seed: int, drop: set = frozenset()) -> dict:
    """Feed ``requests`` a few at a time at random steps, drop the ``drop`` rows after 3 tokens; the
    tokens of each row (EOS left out)."""
    rng = random.Random(seed)
    pending, out = list(requests), {r.key: [] for r in requests}
    drop = set(drop)
    while pending or decoder.live:
        if pending and (not decoder.live or rng.random() < 0.3):
            n = rng.randrange(1, 4)
            decoder.add(pending[:n])
            pending = pending[n:]
        for row in decoder.step():
            if row.token != decoder.args.eos_token_id:
                out[row.key].append(row.token)
        ready = {key for key in drop if len(out[key]) >= 3 and key in decoder.keys()}
        decoder.drop(ready)  # a row leaves mid-answer
        drop -= ready
    return out


def test_greedy_rows_equal_generate_whatever_shares_the_batch(student):
    model, tokenizer = student
    limits = [random.Random(i).choice([3, 16, 40, 150]) for i in range(len(PROMPTS))]
    expected = [generate_tokens(model, tokenizer, [p], max_tokens=m)[0] for p, m in zip(PROMPTS, limits)]
    assert max(len(e) for e in expected) > 2 * ROOM_STEP  # the cache moves and grows on the way
    ids, _ = encode_prompts(tokenizer, PROMPTS)
    requests = [RowRequest(i, ids[i], limits[i]) for i in range(len(PROMPTS))]
    # Sampled rows share the batch too; they must not change the greedy ones.
    requests += [RowRequest(f"s{i}", ids[i], 30, temperature=1.5) for i in range(3)]
    for seed in (0,):
        out = _run(ContinuousDecoder(model), requests, seed, drop={"s0", 5})
        for i, tokens in enumerate(expected):
            if i != 5:
                assert out[i] == tokens, (seed, i)
        assert len(out[5]) == 3 < len(expected[5])  # dropped


def test_rows_finish_alone_and_memory_follows_the_live_rows(student):
    model, tokenizer = student
    ids, _ = encode_prompts(tokenizer, PROMPTS[:2])
    decoder = ContinuousDecoder(model)
    decoder.add([RowRequest("long", ids[0], MAX_NEW_TOKENS), RowRequest("short", ids[1], 2)])
    finished = {}
    for _ in range(3):
        for row in decoder.step():
            if row.finish_reason:
                finished[row.key] = row.generated_tokens
    assert finished.get("short", 0) <= 2 and decoder.keys() == ["long"]
    assert decoder.capacity == ROOM_STEP  # not MAX_NEW_TOKENS
    decoder.drop(["long"])
    assert decoder.live == 0 and decoder.capacity == 0


def test_bad_rows_are_refused_before_they_join(student):
    model, tokenizer = student
    ids, _ = encode_prompts(tokenizer, PROMPTS[:1])
    decoder = ContinuousDecoder(model)
    with pytest.raises(DistillError, match="top_p"):
        decoder.add([RowRequest(1, ids[0], 8, temperature=1.0, top_p=float("nan"))])
    with pytest.raises(DistillError, match="at most"):
        decoder.add([RowRequest(1, ids[0], MAX_NEW_TOKENS + 1)])
    decoder.add([RowRequest(1, ids[0], 8)])
    with pytest.raises(ValueError, match="already live"):
        decoder.add([RowRequest(1, ids[0], 8)])
    assert decoder.live == 1
    assert mx.array(decoder.step()[0].token).item() >= 0


_ROW_ALONE_AND_IN_A_BATCH = """
import sys
import numpy as np
from mlx_distill.methods import predict_prompt
from mlx_distill.student import ContinuousDecoder, RowRequest, continuous, encode_prompts, load_student

seen = {}
choose = continuous._choose


def recording(rows, logits, greedy):
    # Each step's logits of the rows named 0 (short) and "long" (the decoder's own choice follows).
    for i, row in enumerate(rows):
        if row is not None and row.request.key in (0, "long"):
            seen.setdefault(row.request.key, []).append(np.array(logits[i]))
    return choose(rows, logits, greedy)


continuous._choose = recording
model, tokenizer = load_student(sys.argv[1])
ids, _ = encode_prompts(tokenizer, [predict_prompt(f"Tom has {n} apples. How many now?") for n in range(16)])
short, long = RowRequest(0, ids[0], 12), RowRequest("long", ids[1], 2 * continuous.SHORT_LANE_TOKENS)
runs = []
for batches in ([[short], [long]], [[RowRequest(i, ids[i], 12) for i in range(1, 16)] + [short, long]]):
    seen.clear()
    for batch in batches:  # one decoder per batch; the second run has both lanes in one step
        decoder = ContinuousDecoder(model)
        decoder.add(batch)
        while decoder.live:
            decoder.step()
    runs.append({key: np.stack(value) for key, value in seen.items()})
alone, together = runs
print(all(alone[key].shape == together[key].shape and np.array_equal(alone[key], together[key]) for key in alone))
"""


def test_a_rows_logits_do_not_depend_on_the_batch_with_a_row_independent_blas(demo_models):
    """With MLX's bundled reference BLAS (which sums each row's products the same way whatever the
    row count) a short row's and a long row's logits are the same to the bit alone and in one
    batch of seventeen (both lanes in one step): nothing the decoder itself does depends on the
    batch. (OpenBLAS moves them by ~1e-5: see continuous.py.)"""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    result = subprocess.run([sys.executable, "-c", _ROW_ALONE_AND_IN_A_BATCH, str(demo_models["student"])],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]


def _buffer_address(array: mx.array) -> int:
    """Where MLX holds ``array``'s data (no reference to it is kept)."""
    view = memoryview(array)
    try:
        return np.asarray(view).__array_interface__["data"][0]
    finally:
        view.release()


def test_a_step_updates_the_self_attention_cache_in_place(student):
    """A step writes the rows' new keys/values into the cache it was given, not into a copy of it
    (MLX copies an input that something else still references: every row's cache, every step)."""
    model, tokenizer = student
    ids, _ = encode_prompts(tokenizer, PROMPTS[:8])
    eos, model.args.eos_token_id = model.args.eos_token_id, -1  # no row ends: the lane keeps its rows
    try:
        decoder = ContinuousDecoder(model)
        decoder.add([RowRequest(i, ids[i], 3 * ROOM_STEP + 2) for i in range(8)])
        lane, seen = decoder._lanes[0], []
        for _ in range(3 * ROOM_STEP):
            decoder.step()
            mx.eval(lane._keys[0])
            seen.append((lane.capacity, _buffer_address(lane._keys[0])))
    finally:
        model.args.eos_token_id = eos
    # Consecutive steps without a resize (the cache grows every ROOM_STEP slots) share one buffer.
    pairs = [(a, b) for (size_a, a), (size_b, b) in zip(seen, seen[1:]) if size_a == size_b]
    assert len(pairs) > ROOM_STEP
    assert all(a == b for a, b in pairs)
