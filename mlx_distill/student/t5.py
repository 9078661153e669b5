"""T5 (original, v1.1, FLAN, mT5) in MLX: the one architecture file of the student.

Numerics follow ``transformers.models.t5.modeling_t5``: RMS norm with the variance in float32,
unscaled attention logits plus a relative position bias owned by the first layer of each stack and
shared by all layers, no position bias in cross-attention, and decoder output scaled by
``d_model**-0.5`` only for checkpoints whose config ties the head (original T5).
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlx_distill.student.ops import gelu_approx, gelu_approx_sigmoid, on_cpu, softmax_last_axis

T5_MODEL_TYPES = ("t5", "mt5")


@dataclass
class ModelArgs:
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int | None = None
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    # v4 meaning, as hub files store it: True (the default) = head tied to `shared` and scaled.
    tie_word_embeddings: bool = True
    # Written by transformers >= 5, which always sets tie_word_embeddings=True on save.
    scale_decoder_outputs: bool | None = None
    # A separate lm_head.weight; the loader sets it from the checkpoint's tensors.
    separate_lm_head: bool | None = None
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int | None = None
    model_type: str = "t5"

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "ModelArgs":
        """Build from a config.json dict, dropping keys T5 does not use."""
        known = inspect.signature(cls).parameters
        return cls(**{k: v for k, v in params.items() if k in known})

    def __post_init__(self):
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        if isinstance(self.eos_token_id, (list, tuple)):
            self.eos_token_id = int(self.eos_token_id[0])
        if self.pad_token_id is None:
            self.pad_token_id = 0
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.pad_token_id
        if self.scale_decoder_outputs is None:
            self.scale_decoder_outputs = self.tie_word_embeddings is not False
        if self.separate_lm_head is None:
            self.separate_lm_head = self.tie_word_embeddings is False
        self._check_values()
        act = self.feed_forward_proj.split("-")
        if len(act) > 2 or (len(act) == 2 and act[0] != "gated"):
            raise ValueError(f"feed_forward_proj {self.feed_forward_proj!r} is not 'ACT' or 'gated-ACT'")
        if act[-1] not in _ACTIVATIONS:
            raise ValueError(f"feed_forward_proj activation {act[-1]!r} is not one of {sorted(_ACTIVATIONS)}")

    def _check_values(self) -> None:
        """ValueError naming the first key of config.json that no T5 can have (a size of 0, a string)."""
        for name in _SIZES:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} is {value!r}; it must be a whole number of at least 1")
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if not _is_int(value) or not 0 <= value < self.vocab_size:
                raise ValueError(f"{name} is {value!r}; it must be a token id below vocab_size {self.vocab_size}")
        if not _is_real(self.dropout_rate) or not 0 <= self.dropout_rate < 1:
            raise ValueError(f"dropout_rate is {self.dropout_rate!r}; it must be at least 0 and below 1")
        if not _is_real(self.layer_norm_epsilon) or not 0 < self.layer_norm_epsilon < 1:
            raise ValueError(f"layer_norm_epsilon is {self.layer_norm_epsilon!r}; it must be above 0 and below 1")
        if not isinstance(self.feed_forward_proj, str):
            raise ValueError(f"feed_forward_proj is {self.feed_forward_proj!r}; it must be 'ACT' or 'gated-ACT'")

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        # transformers' rule: only "gated-gelu" means the tanh form; plain "gelu" is exact.
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.split("-")[-1]

    def to_config(self) -> dict[str, Any]:
        """config.json content in the v4 layout that hub checkpoints use (readable by v4 and v5)."""
        return {
            "architectures": ["T5ForConditionalGeneration"],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "d_kv": self.d_kv,
            "d_ff": self.d_ff,
            "num_layers": self.num_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "num_heads": self.num_heads,
            "relative_attention_num_buckets": self.relative_attention_num_buckets,
            "relative_attention_max_distance": self.relative_attention_max_distance,
            "dropout_rate": self.dropout_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_factor": 1.0,
            "feed_forward_proj": self.feed_forward_proj,
            "dense_act_fn": self.activation,
            "is_gated_act": self.is_gated,
            "is_encoder_decoder": True,
            "tie_word_embeddings": bool(self.scale_decoder_outputs),
            "scale_decoder_outputs": bool(self.scale_decoder_outputs),
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "decoder_start_token_id": self.decoder_start_token_id,
            "use_cache": True,
        }


# The sizes in config.json: each a whole number of at least 1.
_SIZES = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
          "relative_attention_num_buckets", "relative_attention_max_distance")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "gelu_new": nn.gelu_approx, "silu": nn.silu}


def _neg_inf(dtype: mx.Dtype) -> float:
    return -6.0e4 if dtype == mx.float16 else -1.0e9


def _table_radius(num_buckets: int, max_distance: int) -> int:
    # Buckets stop changing beyond max_distance (and beyond the exact range, for odd configs).
    return max(max_distance, num_buckets)


@lru_cache(maxsize=64)
def _bucket_table(bidirectional: bool, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of every relative position in [-R, R] (index = rel + R, R = `_table_radius`).

    Computed once on the host in float64 so that exact bucket boundaries (e.g. rel=16) land where
    PyTorch's float32 puts them.
    """
    radius = _table_radius(num_buckets, max_distance)
    rel = np.arange(-radius, radius + 1)
    buckets = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0) * num_buckets
        rel = np.abs(rel)
    else:
        rel = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    large = max_exact + (
        np.log(np.maximum(rel, 1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    buckets += np.where(rel < max_exact, rel, large)
    return buckets.astype(np.int32)


class RelativePositionBias(nn.Module):
    def __init__(self, args: ModelArgs, bidirectional: bool):
        super().__init__()
        self.bidirectional = bidirectional
        self.num_buckets = args.relative_attention_num_buckets
        self.max_distance = args.relative_attention_max_distance
        self.radius = _table_radius(self.num_buckets, self.max_distance)
        self.embeddings = nn.Embedding(args.relative_attention_num_buckets, args.num_heads)

    def __call__(self, query_positions: mx.array, key_positions: mx.array) -> mx.array:
        """(1, heads, Tq, Tk) bias; positions may be traced arrays (compile-friendly)."""
        table = mx.array(_bucket_table(self.bidirectional, self.num_buckets, self.max_distance))
        rel = key_positions[None, :] - query_positions[:, None]
        buckets = table[mx.clip(rel, -self.radius, self.radius) + self.radius]
        return self.embeddings(buckets).transpose(2, 0, 1)[None]


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        inner = args.num_heads * args.d_kv
        self.num_heads = args.num_heads
        self.q = nn.Linear(args.d_model, inner, bias=False)
        self.k = nn.Linear(args.d_model, inner, bias=False)
        self.v = nn.Linear(args.d_model, inner, bias=False)
        self.o = nn.Linear(inner, args.d_model, bias=False)
        self.dropout = nn.Dropout(args.dropout_rate)
        self.dropout_rate = args.dropout_rate

    def project_kv(self, x: mx.array) -> tuple[mx.array, mx.array]:
        B, T, _ = x.shape
        k = self.k(x).reshape(B, T, self.num_heads, -1).transpose(0, 2, 1, 3)
        v = self.v(x).reshape(B, T, self.num_heads, -1).transpose(0, 2, 1, 3)
        return k, v

    def __call__(self, x: mx.array, keys: mx.array, values: mx.array, bias: mx.array) -> mx.array:
        return self.o(self.attend(self.queries(x), keys, values, bias))

    def queries(self, x: mx.array) -> mx.array:
        """(B, H, T, D) queries of ``x`` (B, T, d_model)."""
        B, T, _ = x.shape
        return self.q(x).reshape(B, T, self.num_heads, -1).transpose(0, 2, 1, 3)

    def one_token(self, x: mx.array, projection: nn.Linear) -> mx.array:
        """(B, H, 1, D) from ``projection`` of one token's ``x`` (B, d_model): no transpose needed."""
        return projection(x).reshape(x.shape[0], self.num_heads, 1, -1)

    def attend_one(self, q: mx.array, keys: mx.array, values: mx.array, bias: mx.array) -> mx.array:
        """(B, H·D) attention output of one token's queries ``q`` (B, H, 1, D), before ``o``: what
        `attend` gives, without the transpose of a sequence axis."""
        return self._weighted_values(q, keys, values, bias).reshape(q.shape[0], -1)

    def attend(self, q: mx.array, keys: mx.array, values: mx.array, bias: mx.array) -> mx.array:
        """(B, T, H·D) attention output of queries ``q`` over ``keys``/``values`` (before ``o``)."""
        B, _, T, _ = q.shape
        return self._weighted_values(q, keys, values, bias).transpose(0, 2, 1, 3).reshape(B, T, -1)

    def _weighted_values(self, q: mx.array, keys: mx.array, values: mx.array, bias: mx.array) -> mx.array:
        """(B, H, T, D): each query's attention weights over ``keys`` applied to ``values``."""
        T = q.shape[2]
        cpu_float32 = on_cpu() and q.dtype == mx.float32
        fused_softmax = cpu_float32 and (self.training or T > 1)
        if cpu_float32 or (self.training and self.dropout_rate > 0):
            # fast SDPA has no dropout on the attention weights, which T5 trains with. On the CPU it
            # is these same ops (no fused kernel), and the fused-exp softmax is faster to train
            # through and for whole sequences (the encoder); a one-token decoding step keeps MLX's
            # softmax (fewer ops). The choice depends on the call, never on how many rows share the
            # batch or a rank (what the BLAS does with the row count is in student/continuous.py).
            scores = (q @ keys.swapaxes(-1, -2)).astype(mx.float32)
            if bias is not None:
                scores = scores + bias
            probs = softmax_last_axis(scores) if fused_softmax else mx.softmax(scores, axis=-1)
            return self.dropout(probs.astype(values.dtype)) @ values
        return mx.fast.scaled_dot_product_attention(q, keys, values, scale=1.0, mask=bias)


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gated = args.is_gated
        self.act = _ACTIVATIONS[args.activation]
        if self.gated:
            self.wi_0 = nn.Linear(args.d_model, args.d_ff, bias=False)
            self.wi_1 = nn.Linear(args.d_model, args.d_ff, bias=False)
        else:
            self.wi = nn.Linear(args.d_model, args.d_ff, bias=False)
        self.wo = nn.Linear(args.d_ff, args.d_model, bias=False)
        self.dropout = nn.Dropout(args.dropout_rate)

    def _activate(self, h: mx.array, one_token: bool = False) -> mx.array:
        # T5 v1.1's tanh GELU on the CPU, where MLX's tanh costs ~30 ns an element: through the
        # fused exp in training and for whole sequences; a one-token decoding step takes it as
        # x·sigmoid(2u), the same function in one fused op (the fused exp is more ops, and at one
        # row each op costs more than its elements). The choice depends on the call, never on
        # how many rows share the batch.
        if self.act is nn.gelu_approx and on_cpu():
            sequence = not one_token and h.shape[-2] > 1
            return gelu_approx(h) if self.training or sequence else gelu_approx_sigmoid(h)
        return self.act(h)

    def __call__(self, x: mx.array, one_token: bool = False) -> mx.array:
        """``x`` (..., T, d_model), or with ``one_token`` one token per row (B, d_model)."""
        if self.gated:
            h = self._activate(self.wi_0(x), one_token) * self.wi_1(x)
        else:
            h = self._activate(self.wi(x), one_token)
        return self.wo(self.dropout(h))


class RMSNorm(nn.Module):
    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.weight = mx.ones((dims,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        # mx.fast.rms_norm accumulates in float32, casts, then multiplies by the weight, as T5 does.
        return mx.fast.rms_norm(x, self.weight, self.eps)


def _clamp_fp16(x: mx.array) -> mx.array:
    # transformers clamps the fp16 residual stream so that T5's large activations stay finite.
    if x.dtype == mx.float16:
        return mx.clip(x, -64504.0, 64504.0)
    return x


class EncoderLayer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention = Attention(args)
        self.attention_norm = RMSNorm(args.d_model, args.layer_norm_epsilon)
        self.mlp = FeedForward(args)
        self.mlp_norm = RMSNorm(args.d_model, args.layer_norm_epsilon)
        self.dropout = nn.Dropout(args.dropout_rate)

    def __call__(self, x: mx.array, bias: mx.array) -> mx.array:
        h = self.attention_norm(x)
        k, v = self.attention.project_kv(h)
        x = _clamp_fp16(x + self.dropout(self.attention(h, k, v, bias)))
        return _clamp_fp16(x + self.dropout(self.mlp(self.mlp_norm(x))))


class DecoderLayer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.self_attention = Attention(args)
        self.self_attention_norm = RMSNorm(args.d_model, args.layer_norm_epsilon)
        self.cross_attention = Attention(args)
        self.cross_attention_norm = RMSNorm(args.d_model, args.layer_norm_epsilon)
        self.mlp = FeedForward(args)
        self.mlp_norm = RMSNorm(args.d_model, args.layer_norm_epsilon)
        self.dropout = nn.Dropout(args.dropout_rate)

    def __call__(self, x, self_bias, cross_kv, cross_bias, cache=None, index=0):
        h = self.self_attention_norm(x)
        k, v = self.self_attention.project_kv(h)
        if cache is not None:
            k, v = cache.update(index, k, v)
        x = _clamp_fp16(x + self.dropout(self.self_attention(h, k, v, self_bias)))
        h = self.cross_attention_norm(x)
        x = _clamp_fp16(x + self.dropout(self.cross_attention(h, *cross_kv, cross_bias)))
        return _clamp_fp16(x + self.dropout(self.mlp(self.mlp_norm(x))))

    def step_rows(self, x: mx.array, lanes: list["Lane"], index: int) -> mx.array:
        """One decoding step (eval mode) of one token per row, ``x`` (B, d_model), for rows grouped in
        lanes of consecutive rows, each with its own self-attention cache and cross K/V: a lane's rows
        attend only over its own cache, while the projections and the feed-forward run on all rows at
        once. Each row gets what `__call__` computes for it alone (the same products and ops), without
        the sequence axis's reshapes and transposes: fewer graph nodes, whose dispatch dominates a step."""
        attention, cross = self.self_attention, self.cross_attention
        h = self.self_attention_norm(x)
        q, k, v = (attention.one_token(h, projection) for projection in (attention.q, attention.k, attention.v))
        outs = []
        for lane in lanes:
            keys, values = lane.cache.update(index, k[lane.start : lane.stop], v[lane.start : lane.stop])
            outs.append(attention.attend_one(q[lane.start : lane.stop], keys, values, lane.self_bias))
        x = _clamp_fp16(x + attention.o(outs[0] if len(outs) == 1 else mx.concatenate(outs)))
        q = cross.one_token(self.cross_attention_norm(x), cross.q)
        outs = [cross.attend_one(q[lane.start : lane.stop], *lane.cross_kv[index], lane.cross_bias) for lane in lanes]
        x = _clamp_fp16(x + cross.o(outs[0] if len(outs) == 1 else mx.concatenate(outs)))
        return _clamp_fp16(x + self.mlp(self.mlp_norm(x), one_token=True))


@dataclass
class Lane:
    """Rows ``start:stop`` of a decoding step that share a self-attention cache (see `DecoderLayer.step_rows`)."""

    start: int
    stop: int
    self_bias: mx.array
    cross_kv: list[tuple[mx.array, mx.array]]  # per layer
    cross_bias: mx.array | None
    cache: "DecoderCache"


class DecoderCache:
    """Self-attention keys/values per decoder layer, and cross-attention keys/values (computed once).

    With ``max_length`` the self-attention buffers are preallocated and ``offset`` is an array,
    so one decoding step has the same shapes every time and compiles once (see ``state``).
    Without it, the buffers grow by concatenation.
    """

    def __init__(self, num_layers: int, max_length: int | None = None):
        self.max_length = max_length
        self.keys: list[mx.array | None] = [None] * num_layers
        self.values: list[mx.array | None] = [None] * num_layers
        self.cross: list[tuple[mx.array, mx.array] | None] = [None] * num_layers
        self.offset: int | mx.array = 0 if max_length is None else mx.array(0, dtype=mx.int32)

    @property
    def state(self) -> list:
        return [self.keys, self.values, self.cross, self.offset]

    @classmethod
    def from_state(cls, state: list, max_length: int | None) -> "DecoderCache":
        cache = cls(len(state[0]), max_length)
        cache.keys, cache.values, cache.cross, cache.offset = (list(state[0]), list(state[1]), list(state[2]), state[3])
        return cache

    def update(self, index: int, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.max_length is None:
            if self.keys[index] is not None:
                keys = mx.concatenate([self.keys[index], keys], axis=2)
                values = mx.concatenate([self.values[index], values], axis=2)
            self.keys[index], self.values[index] = keys, values
            return keys, values
        if self.keys[index] is None:
            B, H, _, D = keys.shape
            self.keys[index] = mx.zeros((B, H, self.max_length, D), dtype=keys.dtype)
            self.values[index] = mx.zeros((B, H, self.max_length, D), dtype=values.dtype)
        start = mx.reshape(self.offset, (1,))
        self.keys[index] = mx.slice_update(self.keys[index], keys, start, axes=(2,))
        self.values[index] = mx.slice_update(self.values[index], values, start, axes=(2,))
        return self.keys[index], self.values[index]

    def key_length(self, new_tokens: int) -> int:
        return self.max_length if self.max_length is not None else self.offset + new_tokens

    def reorder(self, indices: mx.array) -> None:
        """Keep batch rows `indices` of the self-attention cache (beam search)."""
        self.keys = [None if k is None else k[indices] for k in self.keys]
        self.values = [None if v is None else v[indices] for v in self.values]


def padding_bias(attention_mask: mx.array | None, dtype: mx.Dtype) -> mx.array | None:
    """(B, 1, 1, T) additive bias from a 1/0 attention mask."""
    if attention_mask is None:
        return None
    return ((1 - attention_mask.astype(mx.float32)) * _neg_inf(dtype))[:, None, None, :].astype(dtype)


class Encoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.relative_attention_bias = RelativePositionBias(args, bidirectional=True)
        self.layers = [EncoderLayer(args) for _ in range(args.num_layers)]
        self.final_norm = RMSNorm(args.d_model, args.layer_norm_epsilon)
        self.dropout = nn.Dropout(args.dropout_rate)

    def __call__(self, x: mx.array, attention_mask: mx.array | None = None) -> mx.array:
        T = x.shape[1]
        positions = mx.arange(T)
        bias = self.relative_attention_bias(positions, positions).astype(x.dtype)
        pad = padding_bias(attention_mask, x.dtype)
        if pad is not None:
            bias = bias + pad
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, bias)
        return self.dropout(self.final_norm(x))


class Decoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.relative_attention_bias = RelativePositionBias(args, bidirectional=False)
        self.layers = [DecoderLayer(args) for _ in range(args.num_decoder_layers)]
        self.final_norm = RMSNorm(args.d_model, args.layer_norm_epsilon)
        self.dropout = nn.Dropout(args.dropout_rate)

    def cross_kv(self, encoder_hidden: mx.array) -> list[tuple[mx.array, mx.array]]:
        return [layer.cross_attention.project_kv(encoder_hidden) for layer in self.layers]

    def __call__(self, x, encoder_hidden, cross_bias, cache: DecoderCache | None = None) -> mx.array:
        T = x.shape[1]
        offset = 0 if cache is None else cache.offset
        key_length = T if cache is None else cache.key_length(T)
        query_positions = mx.arange(T) + offset
        key_positions = mx.arange(key_length)
        causal = key_positions[None, :] > query_positions[:, None]
        bias = self.relative_attention_bias(query_positions, key_positions)
        bias = mx.where(causal, _neg_inf(x.dtype), bias).astype(x.dtype)
        if cache is not None and cache.cross[0] is None:
            cache.cross = self.cross_kv(encoder_hidden)
        cross = cache.cross if cache is not None else self.cross_kv(encoder_hidden)
        x = self.dropout(x)
        for i, layer in enumerate(self.layers):
            x = layer(x, bias, cross[i], cross_bias, cache, i)
        if cache is not None:
            cache.offset = cache.offset + T
        return self.dropout(self.final_norm(x))


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.shared = nn.Embedding(args.vocab_size, args.d_model)
        self.encoder = Encoder(args)
        self.decoder = Decoder(args)
        if args.separate_lm_head:
            self.lm_head = nn.Linear(args.d_model, args.vocab_size, bias=False)

    @property
    def dtype(self) -> mx.Dtype:
        # The compute dtype; not `shared.weight`, which a quantized student packs into uint32.
        return self.encoder.final_norm.weight.dtype

    def encode(self, input_ids: mx.array, attention_mask: mx.array | None = None) -> mx.array:
        return self.encoder(self.shared(input_ids), attention_mask)

    def decode(
        self,
        decoder_input_ids: mx.array,
        encoder_hidden: mx.array | None,
        attention_mask: mx.array | None = None,
        cache: DecoderCache | None = None,
    ) -> mx.array:
        """Logits (float32) for `decoder_input_ids`; `encoder_hidden` may be None once `cache` holds cross K/V."""
        h = self.decoder(
            self.shared(decoder_input_ids), encoder_hidden, padding_bias(attention_mask, self.dtype), cache
        )
        return self.lm_logits(h)

    def lm_logits(self, hidden: mx.array) -> mx.array:
        if self.args.scale_decoder_outputs:
            hidden = hidden * (self.args.d_model**-0.5)
        if self.args.separate_lm_head:
            logits = self.lm_head(hidden)
        else:
            logits = self.shared.as_linear(hidden)
        return logits.astype(mx.float32)

    def __call__(
        self, input_ids: mx.array, decoder_input_ids: mx.array, attention_mask: mx.array | None = None
    ) -> mx.array:
        return self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask)

    def make_cache(self, max_length: int | None = None) -> DecoderCache:
        return DecoderCache(self.args.num_decoder_layers, max_length)

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """Hugging Face tensor names -> this module's names (tied copies dropped)."""
        out = {}
        for name, value in weights.items():
            if _DROPPED.fullmatch(name):
                continue
            out[hf_to_mlx_name(name) or name] = value
        if not self.args.separate_lm_head:
            for part in _QUANTIZED_PARTS:
                out.pop(f"lm_head.{part}", None)
        return out

    def export_weights(self) -> dict[str, mx.array]:
        """This module's weights under Hugging Face names (the inverse of `sanitize`)."""
        weights = {mlx_to_hf_name(k): v for k, v in tree_flatten(self.parameters())}
        if not self.args.separate_lm_head and not self.args.scale_decoder_outputs:
            # Tied but unscaled: a v4 reader only ties when it also scales, so store the head.
            for part in _QUANTIZED_PARTS:
                if f"shared.{part}" in weights:
                    weights[f"lm_head.{part}"] = weights[f"shared.{part}"]
        return weights


# (Hugging Face name, our name), one table for both directions; {fields} are filled from _FIELDS.
_NAMES = [
    ("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
     "{stack}.relative_attention_bias.embeddings.weight"),
    ("encoder.block.{i}.layer.0.SelfAttention.{proj}.weight", "encoder.layers.{i}.attention.{proj}.weight"),
    ("encoder.block.{i}.layer.0.layer_norm.weight", "encoder.layers.{i}.attention_norm.weight"),
    ("encoder.block.{i}.layer.1.DenseReluDense.{ff}.weight", "encoder.layers.{i}.mlp.{ff}.weight"),
    ("encoder.block.{i}.layer.1.layer_norm.weight", "encoder.layers.{i}.mlp_norm.weight"),
    ("decoder.block.{i}.layer.0.SelfAttention.{proj}.weight", "decoder.layers.{i}.self_attention.{proj}.weight"),
    ("decoder.block.{i}.layer.0.layer_norm.weight", "decoder.layers.{i}.self_attention_norm.weight"),
    ("decoder.block.{i}.layer.1.EncDecAttention.{proj}.weight", "decoder.layers.{i}.cross_attention.{proj}.weight"),
    ("decoder.block.{i}.layer.1.layer_norm.weight", "decoder.layers.{i}.cross_attention_norm.weight"),
    ("decoder.block.{i}.layer.2.DenseReluDense.{ff}.weight", "decoder.layers.{i}.mlp.{ff}.weight"),
    ("decoder.block.{i}.layer.2.layer_norm.weight", "decoder.layers.{i}.mlp_norm.weight"),
    ("{stack}.final_layer_norm.weight", "{stack}.final_norm.weight"),
    ("{head}.weight", "{head}.weight"),
]
_FIELDS = {"stack": "encoder|decoder", "i": r"\d+", "proj": "q|k|v|o", "ff": "wi|wi_0|wi_1|wo",
           "head": "shared|lm_head"}


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, ...
    regex = "".join(re.escape(p) if n % 2 == 0 else f"(?P<{p}>{_FIELDS[p]})" for n, p in enumerate(parts))
    return re.compile(regex)


_NAME_MAP = [(_pattern(hf), ours) for hf, ours in _NAMES]
_INVERSE_MAP = [(_pattern(ours), hf) for hf, ours in _NAMES]


# Tied copies of `shared`, and a bias transformers itself ignores on load.
_DROPPED = re.compile(
    r"(encoder|decoder)\.embed_tokens\.weight|decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight"
)


# A quantized layer (MLX affine, named as in mlx-lm) keeps `scales` and `biases` beside its packed `weight`.
_QUANTIZED_PARTS = ("weight", "scales", "biases")


def _rename(name: str, table: list[tuple[re.Pattern, str]]) -> str | None:
    stem, _, part = name.rpartition(".")
    if part not in _QUANTIZED_PARTS:
        return None
    for pattern, template in table:
        match = pattern.fullmatch(f"{stem}.weight")
        if match:
            return template.format(**match.groupdict())[: -len("weight")] + part
    return None


def hf_to_mlx_name(name: str) -> str | None:
    """Our parameter name for a Hugging Face T5 tensor name, or None if it is not a T5 tensor."""
    return _rename(name, _NAME_MAP)


def mlx_to_hf_name(name: str) -> str:
    renamed = _rename(name, _INVERSE_MAP)
    if renamed is not None:
        return renamed
    raise KeyError(f"no Hugging Face name for parameter {name!r}")
