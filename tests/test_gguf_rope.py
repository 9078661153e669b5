"""Rope settings that GGUF stores as tensors or metadata become the config mlx-lm reads: Llama 3's
scaled frequencies (``rope_freqs``), Phi-3/Phi-4-mini's LongRoPE factors and partial rotary size,
Gemma 3's linear scaling; the converted models load and run in mlx-lm."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from mlx_distill.teacher import convert_gguf
from mlx_distill.testing.gguf_models import write_tiny_gguf


def _runs(folder) -> None:
    from mlx_lm import load

    model, _ = load(str(folder))
    logits = model(mx.array([[1, 2, 3, 4]]))
    assert np.isfinite(np.array(logits.astype(mx.float32))).all()


def _llama3_factors(head_dim: int, base: float = 500000.0, factor: float = 32.0) -> np.ndarray:
    # Llama 3.1's published rope scaling (factor 32 for 3.2, low 1, high 4, original 8192).
    wavelens = 2 * np.pi * base ** (np.arange(0, head_dim, 2) / head_dim)
    smooth = (8192 / wavelens - 1) / 3
    return np.where(wavelens > 8192, factor, np.where(wavelens < 2048, 1.0, 1 / ((1 - smooth) / factor + smooth)))


def test_llama3_rope_freqs_become_llama3_rope_scaling(tmp_path):
    factors = _llama3_factors(64).astype(np.float32)
    gguf = write_tiny_gguf(tmp_path / "l.gguf", "llama", "Q8_0", extra_tensors={"rope_freqs.weight": factors},
                           extra_metadata={"llama.rope.freq_base": 500000.0})
    config = convert_gguf(gguf, tmp_path / "mlx")
    assert config["rope_scaling"]["rope_type"] == "llama3" and config["rope_scaling"]["factor"] == 32.0
    _runs(tmp_path / "mlx")


def test_phi3_longrope_factors_and_partial_rotary(tmp_path):
    long, short = np.linspace(1, 4, 24).astype(np.float32), np.ones(24, np.float32)
    gguf = write_tiny_gguf(tmp_path / "p.gguf", "phi3", "Q4_0",
                           extra_tensors={"rope_factors_long.weight": long, "rope_factors_short.weight": short},
                           extra_metadata={"phi3.rope.scaling.original_context_length": 64,
                                           "phi3.rope.dimension_count": 48})
    config = convert_gguf(gguf, tmp_path / "mlx")
    assert config["partial_rotary_factor"] == 0.75 and config["original_max_position_embeddings"] == 64
    assert config["rope_scaling"]["type"] == "longrope"
    assert np.allclose(config["rope_scaling"]["long_factor"], long)
    _runs(tmp_path / "mlx")


def test_gemma3_linear_rope_scaling(tmp_path):
    gguf = write_tiny_gguf(tmp_path / "g.gguf", "gemma3", "Q8_0", layers=6, heads=2, kv_heads=1, head_dim=256,
                           tied=True, extra_metadata={"gemma3.rope.scaling.type": "linear",
                                                      "gemma3.rope.scaling.factor": 8.0})
    config = convert_gguf(gguf, tmp_path / "mlx")
    assert config["rope_scaling"] == {"rope_type": "linear", "type": "linear", "factor": 8.0}
    _runs(tmp_path / "mlx")


def test_a_vision_tower_in_the_same_file_is_skipped(tmp_path):
    # Ollama's Gemma 3 blobs carry the vision encoder (v.*) and its projector (mm.*) beside the text model.
    vision = {"v.blk.0.attn_q.weight": np.ones((32, 32), np.float32), "mm.input_projection.weight":
              np.ones((32, 256), np.float32), "v.patch_embd.weight": np.ones((32, 32), np.float32)}
    gguf = write_tiny_gguf(tmp_path / "g.gguf", "gemma3", "Q8_0", layers=6, heads=2, kv_heads=1, head_dim=256,
                           tied=True, extra_tensors=vision)
    logs = []
    convert_gguf(gguf, tmp_path / "mlx", lambda event: logs.append(getattr(event, "message", "")))
    assert "3 vision tensors skipped (the teacher reads text only)" in logs
    weights = mx.load(str(tmp_path / "mlx" / "model.safetensors"))
    assert not [name for name in weights if "patch" in name or "projection" in name]
    _runs(tmp_path / "mlx")
