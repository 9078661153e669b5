"""Per architecture: where each GGUF tensor goes in the mlx-lm model, what llama.cpp changed in it
on the way in (undone here), and the config.json mlx-lm's own model file for it reads.

llama.cpp's choices undone here, as transformers' GGUF loader undoes them
(``transformers.modeling_gguf_pytorch_utils``): Llama's Q/K rows permuted for its rope layout, and
Gemma's RMSNorm weights stored with the +1 its model adds at run time (mlx-lm adds it too).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from mlx_distill.errors import DistillError

# Architecture (general.architecture) -> the families it covers, for messages.
ARCHITECTURE_NAMES = {
    "llama": "Llama 2/3.x, SmolLM2, Mistral 7B (llama.cpp writes Mistral as llama)",
    "qwen2": "Qwen2/2.5",
    "qwen3": "Qwen3",
    "gemma3": "Gemma 3",
    "phi3": "Phi-3/Phi-4-mini",
}
# The model_type each converts to (the mlx-lm model file that loads it).
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
               "gemma3": "gemma3_text", "phi3": "phi3"}
HF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                    "qwen3": "Qwen3ForCausalLM", "gemma3": "Gemma3ForCausalLM", "phi3": "Phi3ForCausalLM"}

_DECODER = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_QK_NORMS = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
_LAYER_NAMES: dict[str, dict[str, str]] = {
    "llama": _DECODER,
    "qwen2": _DECODER,
    "qwen3": {**_DECODER, **_QK_NORMS},
    # Gemma 3 norms the attention and the MLP both before and after.
    "gemma3": {**_DECODER, **_QK_NORMS, "post_attention_norm": "post_attention_layernorm",
               "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm"},
    # Phi-3 keeps Q, K and V in one matrix, and the gate and up projections in another, as
    # mlx-lm's phi3 model does: nothing to split.
    "phi3": {"attn_qkv": "self_attn.qkv_proj", "attn_output": "self_attn.o_proj", "ffn_up": "mlp.gate_up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"},
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# Tensors that become config values, not weights.
EXTRA_TENSORS = {"llama": ("rope_freqs",), "phi3": ("rope_factors_long", "rope_factors_short")}
# A vision tower packed into the same file (Ollama's Gemma 3 blobs): skipped, the teacher reads text.
VISION_PREFIXES = ("v.", "mm.")
_BLOCK = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_TOP = re.compile(r"^([a-z_]+)\.(weight|bias)$")


def known_tensor(arch: str, name: str) -> bool:
    """Whether a GGUF tensor has a place in an ``arch`` model (a weight, a config value, or a
    vision tensor that is skipped)."""
    if is_vision(name):
        return True
    block = _BLOCK.match(name)
    if block:
        return block.group(2) in _LAYER_NAMES.get(arch, {})
    top = _TOP.match(name)
    return bool(top) and (top.group(1) in _TOP_NAMES or top.group(1) in EXTRA_TENSORS.get(arch, ()))


def is_vision(name: str) -> bool:
    return name.startswith(VISION_PREFIXES)


def is_extra(arch: str, name: str) -> bool:
    return name.rpartition(".")[0] in EXTRA_TENSORS.get(arch, ())


def hf_stem(arch: str, name: str) -> str:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj`` (the leaf is added by the caller)."""
    block = _BLOCK.match(name)
    if block and block.group(2) in _LAYER_NAMES[arch]:
        return f"model.layers.{block.group(1)}.{_LAYER_NAMES[arch][block.group(2)]}"
    top = _TOP.match(name)
    if top and top.group(1) in _TOP_NAMES:
        return _TOP_NAMES[top.group(1)]
    raise DistillError(f"GGUF tensor {name!r} has no place in a {arch} model; use a plain "
                       f"{ARCHITECTURE_NAMES.get(arch, arch)} GGUF file")


def unpermute_rows(array, heads: int):
    """Undo llama.cpp's Q/K row order (rope pairs interleaved) on whole rows: the first axis."""
    rows = array.shape[0]
    rest = array.shape[1:]
    return array.reshape(heads, rows // heads // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def row_change(arch: str, name: str, meta: Callable[[str, Any], Any]) -> Callable | None:
    """The change llama.cpp made to this tensor's rows, to undo on every array of it (or None)."""
    if arch != "llama":
        return None
    heads = int(meta("attention.head_count", None))
    if ".attn_q." in name:
        return lambda array: unpermute_rows(array, heads)
    if ".attn_k." in name:
        kv_heads = int(meta("attention.head_count_kv", heads))
        return lambda array: unpermute_rows(array, kv_heads)
    return None


def float_change(arch: str, name: str) -> Callable | None:
    """A change to a float tensor's values: Gemma's norms are stored as 1 + weight."""
    if arch == "gemma3" and name.endswith("norm.weight"):
        return lambda array: array - 1
    return None


def _llama3_rope_scaling(factors: np.ndarray, base: float, head_dim: int) -> dict:
    """The ``llama3`` rope_scaling whose per-frequency factors are the GGUF's ``rope_freqs``."""
    scaling = {"rope_type": "llama3", "factor": float(factors.max()), "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    wavelens = 2 * np.pi * base ** (np.arange(0, head_dim, 2) / head_dim)
    low, high = 8192 / 1.0, 8192 / 4.0
    smooth = (8192 / wavelens - 1.0) / (4.0 - 1.0)
    expected = np.where(wavelens > low, scaling["factor"],
                        np.where(wavelens < high, 1.0, 1 / ((1 - smooth) / scaling["factor"] + smooth)))
    if expected.shape != factors.shape or not np.allclose(expected, factors, rtol=1e-3):
        raise DistillError("GGUF rope_freqs are not Llama 3's rope scaling; this model's rope is not supported")
    return scaling


def _float32(value: float) -> float:
    """A GGUF float32 as the short decimal it was written from (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


def _linear_rope_scaling(meta: Callable[[str, Any], Any]) -> dict | None:
    kind = meta("rope.scaling.type", "none")
    factor = meta("rope.scaling.factor", 0.0)
    if kind == "linear" and factor and float(factor) != 1.0:
        return {"rope_type": "linear", "type": "linear", "factor": _float32(factor)}
    if kind not in ("none", "linear", "yarn") and kind:
        raise DistillError(f"GGUF rope scaling {kind!r} is not supported for this architecture")
    return None


def model_config(arch: str, meta: Callable[[str, Any], Any], vocab_size: int, tied: bool,
                 extras: dict[str, np.ndarray]) -> dict:
    """The config.json of the converted model. ``meta(key, default)`` reads ``<arch>.<key>``
    (a missing key without a default is a one-line error)."""
    heads = int(meta("attention.head_count", None))
    hidden = int(meta("embedding_length", None))
    head_dim = int(meta("attention.key_length", 0) or hidden // heads)
    config: dict[str, Any] = {
        "model_type": MODEL_TYPES[arch],
        "architectures": [HF_ARCHITECTURES[arch]],
        "hidden_size": hidden,
        "num_hidden_layers": int(meta("block_count", None)),
        "intermediate_size": int(meta("feed_forward_length", None)),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta("attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": _float32(meta("attention.layer_norm_rms_epsilon", None)),
        "rope_theta": _float32(meta("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta("context_length", None)),
        "vocab_size": vocab_size,
        "tie_word_embeddings": tied,
    }
    if arch == "llama":
        if "rope_freqs" in extras:
            config["rope_scaling"] = _llama3_rope_scaling(extras["rope_freqs"], config["rope_theta"], head_dim)
        elif (linear := _linear_rope_scaling(meta)) is not None:
            config["rope_scaling"] = linear
    elif arch == "gemma3":
        # llama.cpp's Gemma 3: local layers use base 10000 and a window; every 6th layer is global.
        # (Ollama's own converter writes the two bases as rope.local/global.freq_base.)
        config["rope_theta"] = _float32(meta("rope.global.freq_base", config["rope_theta"]))
        config.update(sliding_window=int(meta("attention.sliding_window", 512)), sliding_window_pattern=6,
                      rope_local_base_freq=_float32(meta("rope.local.freq_base", 10000.0)),
                      query_pre_attn_scalar=hidden // heads if config["num_hidden_layers"] == 62 else head_dim)
        if (linear := _linear_rope_scaling(meta)) is not None:
            config["rope_scaling"] = linear
    elif arch == "phi3":
        config["head_dim"] = hidden // heads
        rotary = int(meta("rope.dimension_count", hidden // heads))
        config["partial_rotary_factor"] = rotary / (hidden // heads)
        if "rope_factors_long" in extras:
            original = int(meta("rope.scaling.original_context_length", config["max_position_embeddings"]))
            config["original_max_position_embeddings"] = original
            config["rope_scaling"] = {
                "type": "longrope",
                "long_factor": [float(x) for x in extras["rope_factors_long"]],
                "short_factor": [float(x) for x in extras.get("rope_factors_short", extras["rope_factors_long"])],
            }
    return config
