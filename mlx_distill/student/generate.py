"""Generation with the T5 student: batched greedy decoding, sampling and beam search with a static
KV cache and a compiled decoding step, and a token-by-token stream for chat.

Prompts are tokenized once and padded by the tokenizer; a prompt longer than
``max_input_tokens`` is cut (the student was trained on inputs cut the same way) and reported.
Sampling uses mlx-lm's ``make_sampler``; streamed text comes from mlx-lm's streaming
detokenizer (`mlx_distill.student.detokenize`), so each token costs the same to show.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import mlx.core as mx
import numpy as np

from mlx_distill.errors import DistillError
from mlx_distill.methods import MAX_INPUT_TOKENS
from mlx_distill.student.t5 import DecoderCache, Model

# Encoder lengths are padded to a multiple of this so the compiled decoding step is reused.
LENGTH_BUCKET = 8
# A prompt is cut to max_input_tokens * this many characters before it is tokenized, so that a
# huge prompt costs no more than a long one (no T5 piece is this long).
_MAX_CHARS_PER_TOKEN = 32

# Most new tokens per answer. A T5 decoder has no position limit, but its relative position bias
# stops changing at relative_attention_max_distance (128) and students learn outputs of at most a
# few hundred tokens; this bounds a request's memory and time.
MAX_NEW_TOKENS = 2048
# A temperature or top_p below this is greedy: sampling would divide by (or keep a mass of) a value
# that is 0 or near it in float32 and return arbitrary tokens.
GREEDY_BELOW = 1e-6
# The decoder's self-attention cache grows in steps of this many tokens (never to max_tokens at once).
CACHE_STEP = 64

OnTruncated = Callable[[list[int]], None]


def _ignore_truncated(rows: list[int]) -> None:
    pass


@dataclass
class StudentResponse:
    """One generated token as `stream_generate` yields it."""

    text: str  # the new piece of text (may be "" while a word is incomplete, and for EOS)
    token: int
    generated_tokens: int
    tokens_per_second: float
    finish_reason: str | None  # None, "stop" (EOS) or "length"
    prompt_tokens: int = 0  # encoder input length, EOS included, after any cut
    prompt_truncated: bool = False  # the prompt was longer than max_input_tokens and was cut


# ---------------------------------------------------------------------------------------------
# Prompts


def _cut_text(text: str, max_input_tokens: int) -> str:
    limit = max_input_tokens * _MAX_CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    # Cut between words: T5 tokenizes each word alone, so the kept words get the same ids.
    space = text.rfind(" ", 0, limit)
    return text[: space if space > 0 else limit]


def encode_prompts(tokenizer: Any, prompts: list[str],
                   max_input_tokens: int = MAX_INPUT_TOKENS) -> tuple[list[list[int]], list[int]]:
    """Token ids of each prompt, at most `max_input_tokens` long, and the indices of cut prompts.

    A cut prompt keeps its first tokens and its EOS, as training's truncation does.
    """
    if max_input_tokens < 1:
        raise DistillError(f"max_input_tokens must be at least 1, got {max_input_tokens}")
    texts = [_cut_text(p, max_input_tokens) for p in prompts]
    # One token over the limit tells a cut prompt from one of exactly max_input_tokens.
    ids = tokenizer(texts, truncation=True, max_length=max_input_tokens + 1)["input_ids"]
    for i, (prompt, text) in enumerate(zip(prompts, texts)):
        if len(text) < len(prompt) and len(ids[i]) <= max_input_tokens:
            # Denser than _MAX_CHARS_PER_TOKEN: the cut dropped text that fits, so use it all.
            ids[i] = tokenizer(prompt, truncation=True, max_length=max_input_tokens + 1)["input_ids"]
    special = tokenizer.num_special_tokens_to_add()
    truncated = [i for i, row in enumerate(ids) if len(row) > max_input_tokens]
    for i in truncated:
        row = ids[i]
        ids[i] = row[: max_input_tokens - special] + row[len(row) - special :]
    return [list(row) for row in ids], truncated


def _pad(tokenizer: Any, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    enc = tokenizer.pad({"input_ids": rows}, padding=True, pad_to_multiple_of=LENGTH_BUCKET, return_tensors="np")
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Decoding


def encode_fn(model: Model):
    """`model.encode`, compiled for answering (compiled once per input shape; weights read at call
    time): on the CPU this fuses the fast softmax and GELU of `mlx_distill.student.ops` (measured
    2.9 ms -> 1.0 ms for one demo-sized question). Use with the model in eval mode."""
    fn = getattr(model, "_compiled_encode", None)
    if fn is None:
        fn = mx.compile(model.encode, inputs=model.state)
        model._compiled_encode = fn
    return fn


def _decode_step_fn(model: Model):
    """The compiled one-token decoding step of `model` (weights are read at call time)."""
    fn = getattr(model, "_compiled_decode_step", None)
    if fn is None:

        def step(tokens, mask, state):
            cache = DecoderCache.from_state(state, max_length=state[0][0].shape[2])
            logits = model.decode(tokens, None, mask, cache)[:, -1, :]
            return logits, cache.state

        fn = mx.compile(step, inputs=model.state)
        model._compiled_decode_step = fn
    return fn


class _Decoder:
    """Encoder output, cross K/V and the self-attention cache for one batch.

    The cache holds `CACHE_STEP` tokens and grows by doubling as tokens are decoded, up to
    ``max_tokens``: memory follows the answer's length, not the limit asked for. Each size
    compiles the decoding step once.
    """

    def __init__(self, model: Model, input_ids: np.ndarray, mask: np.ndarray, max_tokens: int, repeat: int = 1):
        self.model, self.max_tokens = model, max_tokens
        ids, self.mask = mx.array(input_ids), mx.array(mask)
        encoder_hidden = encode_fn(model)(ids, self.mask)
        if repeat > 1:
            encoder_hidden = mx.repeat(encoder_hidden, repeat, axis=0)
            self.mask = mx.repeat(self.mask, repeat, axis=0)
        self.encoder_hidden = encoder_hidden
        self.cache = model.make_cache(max_length=min(max_tokens, CACHE_STEP))
        self.step = _decode_step_fn(model)
        self.decoded = 0

    def __call__(self, tokens: mx.array) -> mx.array:
        """Last-position logits (B, V) for one new token per row."""
        self.decoded += 1
        if self.cache.keys[0] is None:
            # First step runs eagerly: it fills the cross K/V and allocates the buffers.
            return self.model.decode(tokens, self.encoder_hidden, self.mask, self.cache)[:, -1, :]
        if self.decoded > self.cache.max_length:
            self.cache = grow_cache(self.cache, min(2 * self.cache.max_length, max(self.max_tokens, self.decoded)))
        logits, state = self.step(tokens, self.mask, self.cache.state)
        self.cache = DecoderCache.from_state(state, self.cache.max_length)
        return logits


def grow_cache(cache: DecoderCache, length: int) -> DecoderCache:
    """The same cache with self-attention buffers of ``length`` tokens (the new slots zero)."""

    def pad(buffer: mx.array) -> mx.array:
        extra = length - buffer.shape[2]
        return mx.pad(buffer, [(0, 0), (0, 0), (0, extra), (0, 0)]) if extra > 0 else buffer

    grown = DecoderCache.from_state(cache.state, length)
    grown.keys = [pad(k) for k in cache.keys]
    grown.values = [pad(v) for v in cache.values]
    return grown


def _sample_tokens(model: Model, input_ids: np.ndarray, mask: np.ndarray, max_tokens: int,
                   temperature: float, top_p: float) -> Iterator[np.ndarray]:
    """Yield the next token of every row (pad after a row's EOS) until all rows end."""
    args = model.args
    greedy = is_greedy(temperature, top_p)
    sampler = make_student_sampler(temperature, top_p)
    decoder = _Decoder(model, input_ids, mask, max_tokens)
    batch = input_ids.shape[0]
    finished = mx.zeros((batch,), dtype=mx.bool_)
    tokens = mx.full((batch,), args.decoder_start_token_id, dtype=mx.int32)

    def advance(tokens, finished):
        logits = decoder(tokens[:, None])
        if not greedy:
            # The sampler's top-p reads log-probabilities; argmax needs no normalising.
            logits = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        y = sampler(logits).astype(mx.int32)
        y = mx.where(finished, args.pad_token_id, y)
        return y, finished | (y == args.eos_token_id)

    y, finished = advance(tokens, finished)
    mx.async_eval(y, finished)
    for i in range(max_tokens):
        if i + 1 < max_tokens:
            # Queue the next step before reading this one, so host and device overlap.
            next_y, next_finished = advance(y, finished)
            mx.async_eval(next_y, next_finished)
        yield np.array(y)
        if finished.all().item() or i + 1 == max_tokens:
            return
        y, finished = next_y, next_finished


def _beam_search(model: Model, input_ids: np.ndarray, mask: np.ndarray, max_tokens: int, num_beams: int,
                 length_penalty: float = 1.0, early_stopping: bool | str = False) -> list[list[int]]:
    """Beam search with the same rules and defaults as transformers' `_beam_search`."""
    args = model.args
    eos = args.eos_token_id
    batch, nb = input_ids.shape[0], num_beams
    max_length = 1 + max_tokens  # the decoder start token counts, as in transformers
    keep = 2 * nb
    decoder = _Decoder(model, input_ids, mask, max_tokens, repeat=nb)
    fill = args.pad_token_id or eos
    running = np.full((batch, nb, max_length), fill, dtype=np.int64)
    running[:, :, 0] = args.decoder_start_token_id
    sequences = running.copy()
    running_scores = np.zeros((batch, nb), dtype=np.float32)
    running_scores[:, 1:] = -1e9
    scores = np.full((batch, nb), -1e9, dtype=np.float32)
    finished = np.zeros((batch, nb), dtype=bool)
    improvable = np.ones((batch, 1), dtype=bool)
    top_nb = np.arange(keep) < nb
    cur_len = 1
    tokens = mx.full((batch * nb,), args.decoder_start_token_id, dtype=mx.int32)
    while True:
        logits = decoder(tokens[:, None])
        log_probs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        vocab = log_probs.shape[-1]
        log_probs = log_probs.reshape(batch, nb, vocab) + mx.array(running_scores)[:, :, None]
        log_probs = log_probs.reshape(batch, nb * vocab)
        top = mx.argpartition(-log_probs, kth=keep - 1, axis=-1)[:, :keep]
        top_values = mx.take_along_axis(log_probs, top, axis=-1)
        order = mx.argsort(-top_values, axis=-1)
        top = np.array(mx.take_along_axis(top, order, axis=-1))
        top_lp = np.array(mx.take_along_axis(top_values, order, axis=-1))

        source_beam, token_ids = top // vocab, top % vocab
        cand = np.take_along_axis(running, source_beam[:, :, None], axis=1)
        cand[:, :, cur_len] = token_ids
        hits = (token_ids == eos) | (cur_len + 1 >= max_length)

        # Next running beams: the best candidates that did not just finish.
        alive_lp = top_lp + hits.astype(np.float32) * -1.0e9
        next_idx = np.argsort(-alive_lp, axis=-1, kind="stable")[:, :nb]
        running = np.take_along_axis(cand, next_idx[:, :, None], axis=1)
        running_scores = np.take_along_axis(alive_lp, next_idx, axis=1)
        running_source = np.take_along_axis(source_beam, next_idx, axis=1)

        # Finished hypotheses: merge the ones that just ended into the kept best `nb`.
        just_done = hits & top_nb[None, :]
        done_lp = top_lp / np.float32((cur_len + 1 - 1) ** length_penalty)
        full = np.all(finished, axis=-1, keepdims=True) & (early_stopping is True)
        done_lp = done_lp + full * np.float32(-1.0e9) + (~improvable) * np.float32(-1.0e9)
        done_lp = done_lp + (~just_done) * np.float32(-1.0e9)
        merged_seq = np.concatenate([sequences, cand], axis=1)
        merged_scores = np.concatenate([scores, done_lp.astype(np.float32)], axis=1)
        merged_finished = np.concatenate([finished, just_done], axis=1)
        best = np.argsort(-merged_scores, axis=-1, kind="stable")[:, :nb]
        sequences = np.take_along_axis(merged_seq, best[:, :, None], axis=1)
        scores = np.take_along_axis(merged_scores, best, axis=1)
        finished = np.take_along_axis(merged_finished, best, axis=1)

        flat = (np.arange(batch)[:, None] * nb + running_source).reshape(-1)
        decoder.cache.reorder(mx.array(flat.astype(np.int32)))
        tokens = mx.array(running[:, :, cur_len].reshape(-1).astype(np.int32))
        cur_len += 1

        if early_stopping == "never" and length_penalty > 0.0:
            best_len = max_length - 1
        else:
            best_len = cur_len - 1
        best_running = running_scores[:, :1] / np.float32(best_len**length_penalty)
        worst_done = np.where(finished, np.min(scores, axis=1, keepdims=True), np.float32(-1.0e9))
        improvable = improvable & np.any(best_running > worst_done, axis=-1, keepdims=True)
        open_beam = not (np.all(finished) and early_stopping is True)
        if not (np.any(improvable) and open_beam and not np.all(hits)):
            break
    return [[int(t) for t in sequences[b, 0, 1:]] for b in range(batch)]


def _until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def decode_tokens(tokenizer: Any, tokens: list[int]) -> str:
    """The text of generated token ids (ids past the vocabulary and special tokens left out)."""
    vocab = len(tokenizer)
    return tokenizer.decode([t for t in tokens if t < vocab], skip_special_tokens=True)


def _hidden_tokens(tokenizer: Any) -> set[int]:
    """The ids `decode_tokens` drops besides those past the vocabulary (skip_special_tokens)."""
    return set(tokenizer.all_special_ids)


def is_greedy(temperature: float, top_p: float) -> bool:
    """Whether these sampling settings mean argmax decoding (see `GREEDY_BELOW`)."""
    return temperature < GREEDY_BELOW or top_p < GREEDY_BELOW


def make_student_sampler(temperature: float, top_p: float) -> Callable[[mx.array], mx.array]:
    """mlx-lm's sampler for these settings; argmax when `is_greedy`. It reads log-probabilities."""
    from mlx_lm.sample_utils import make_sampler  # mlx_lm imports transformers: load it only to generate

    if is_greedy(temperature, top_p):
        return make_sampler(temp=0.0)
    return make_sampler(temp=temperature, top_p=top_p)


def check_generation_args(max_tokens: int, num_beams: int, temperature: float, top_p: float) -> None:
    if max_tokens < 1:
        raise DistillError(f"max_tokens must be at least 1, got {max_tokens}")
    if max_tokens > MAX_NEW_TOKENS:
        raise DistillError(f"max_tokens {max_tokens} is more than a student writes; give at most {MAX_NEW_TOKENS}")
    if not (math.isfinite(temperature) and math.isfinite(top_p)):
        raise DistillError(f"temperature and top_p must be finite numbers, got {temperature} and {top_p}")
    if temperature < 0:
        raise DistillError(f"temperature must be at least 0, got {temperature}")
    if num_beams < 1:
        raise DistillError(f"num_beams must be at least 1, got {num_beams}")
    if num_beams > 1 and not is_greedy(temperature, top_p):
        raise DistillError("beam search with temperature sampling is not supported; use num_beams=1 or temperature=0")
    if not 0.0 < top_p <= 1.0:
        raise DistillError(f"top_p must be in (0, 1], got {top_p}")


class _EvalMode:
    """Run with dropout off, and give the model back in the mode it came in."""

    def __init__(self, model: Model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        if self.was_training:
            self.model.train()


def generate_tokens(model: Model, tokenizer: Any, prompts: list[str], max_tokens: int = 64, num_beams: int = 1,
                    temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 32,
                    max_input_tokens: int = MAX_INPUT_TOKENS,
                    on_truncated: OnTruncated = _ignore_truncated) -> list[list[int]]:
    """Token ids generated for each prompt (without the start token, cut before EOS).

    Takes the arguments of `generate`.
    """
    check_generation_args(max_tokens, num_beams, temperature, top_p)
    if not prompts:
        return []
    ids, truncated = encode_prompts(tokenizer, prompts, max_input_tokens)
    if truncated:
        on_truncated(truncated)
    order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
    results: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        input_ids, mask = _pad(tokenizer, [ids[i] for i in rows])
        outputs = generate_batch(model, input_ids, mask, max_tokens, num_beams, temperature, top_p)
        for row, tokens in zip(rows, outputs):
            results[row] = tokens
    return results


def generate_batch(model: Model, input_ids: np.ndarray, attention_mask: np.ndarray, max_tokens: int = 64,
                   num_beams: int = 1, temperature: float = 0.0, top_p: float = 1.0) -> list[list[int]]:
    """Token ids generated for one padded batch of token ids (B x T int arrays, right padding)."""
    check_generation_args(max_tokens, num_beams, temperature, top_p)
    input_ids, attention_mask = np.asarray(input_ids, dtype=np.int32), np.asarray(attention_mask, dtype=np.int32)
    with _EvalMode(model):
        if num_beams > 1:
            outputs = _beam_search(model, input_ids, attention_mask, max_tokens, num_beams)
        else:
            steps = list(_sample_tokens(model, input_ids, attention_mask, max_tokens, temperature, top_p))
            outputs = np.stack(steps, axis=1).tolist()
    return [_until_eos(tokens, model.args.eos_token_id) for tokens in outputs]


def generate(model: Model, tokenizer: Any, prompts: list[str], max_tokens: int = 64, num_beams: int = 1,
             temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 32,
             max_input_tokens: int = MAX_INPUT_TOKENS, on_truncated: OnTruncated = _ignore_truncated) -> list[str]:
    """Generate an answer for each prompt, in batches.

    Args:
        model: The T5 student.
        tokenizer: Its tokenizer.
        prompts: Input texts (prefixes such as ``predict:`` included by the caller).
        max_tokens: Most new tokens per answer. Default: ``64``.
        num_beams: 1 for greedy/sampling, more for beam search (transformers' rules:
            length_penalty 1.0, early_stopping False). Default: ``1``.
        temperature: 0 for greedy, > 0 to sample (mlx-lm's ``make_sampler``). Default: ``0.0``.
        top_p: Nucleus sampling mass when sampling. Default: ``1.0``.
        batch_size: Prompts per batch (prompts are grouped by length). Default: ``32``.
        max_input_tokens: Longer prompts are cut to this many tokens (their start and EOS are
            kept), as training cuts them. Default: ``512``.
        on_truncated: Called once, before generating, with the indices of the prompts that were
            cut, when there are any. Default: do nothing.

    Returns:
        The generated texts, in the order of `prompts`.

    Raises:
        DistillError: a bad generation argument.
    """
    tokens = generate_tokens(model, tokenizer, prompts, max_tokens, num_beams, temperature, top_p, batch_size,
                             max_input_tokens, on_truncated)
    return [decode_tokens(tokenizer, t) for t in tokens]


def stream_generate(model: Model, tokenizer: Any, prompt: str, max_tokens: int = 256, temperature: float = 0.0,
                    top_p: float = 1.0, max_input_tokens: int = MAX_INPUT_TOKENS) -> Iterator[StudentResponse]:
    """Generate for one prompt, yielding a `StudentResponse` per token as soon as it exists.

    The text pieces join to the text `generate` gives for the same prompt; each token costs the
    same to detokenize, however long the answer is.

    Args:
        model: The T5 student.
        tokenizer: Its tokenizer.
        prompt: The input text.
        max_tokens: Most new tokens. Default: ``256``.
        temperature: 0 for greedy, > 0 to sample. Default: ``0.0``.
        top_p: Nucleus sampling mass when sampling. Default: ``1.0``.
        max_input_tokens: A longer prompt is cut to this many tokens; every response then has
            ``prompt_truncated`` set, so a caller can say so once. Default: ``512``.

    Yields:
        One `StudentResponse` per generated token; the last has ``finish_reason`` ``"stop"``
        (EOS) or ``"length"`` (max_tokens).
    """
    check_generation_args(max_tokens, 1, temperature, top_p)
    (ids,), truncated = encode_prompts(tokenizer, [prompt], max_input_tokens)
    input_ids, mask = _pad(tokenizer, [ids])
    text = TokenText(tokenizer, model.args.eos_token_id)
    count = 0
    start = time.perf_counter()
    with _EvalMode(model):
        for step in _sample_tokens(model, input_ids, mask, max_tokens, temperature, top_p):
            token = int(step[0])
            count += 1
            finish = "stop" if token == model.args.eos_token_id else ("length" if count == max_tokens else None)
            piece = text.add(token, last=finish is not None)
            elapsed = max(time.perf_counter() - start, 1e-9)
            yield StudentResponse(piece, token, count, count / elapsed, finish,
                                  prompt_tokens=len(ids), prompt_truncated=bool(truncated))
            if finish:
                return


class TokenText:
    """The text of generated tokens as they come, one piece per token (mlx-lm's streaming detokenizer).

    The pieces join to `decode_tokens` of the same tokens: EOS, special tokens and ids past the
    vocabulary give no text. Each token costs the same, however long the text is.
    """

    def __init__(self, tokenizer: Any, eos_token_id: int):
        from mlx_distill.student.detokenize import streaming_detokenizer  # imports mlx_lm (and transformers)

        self.detokenizer = streaming_detokenizer(tokenizer)
        self.hidden = _hidden_tokens(tokenizer) | {eos_token_id}
        self.vocab = len(tokenizer)

    def add(self, token: int, last: bool = False) -> str:
        """The new text of ``token`` ("" while a word is incomplete); ``last`` flushes what is held."""
        if token < self.vocab and token not in self.hidden:
            self.detokenizer.add_token(token)
        if last:
            self.detokenizer.finalize()
        return self.detokenizer.last_segment
