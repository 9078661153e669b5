"""The memory estimate of a converted GGUF teacher counts what is held: each layer at its own bit
width (an 8-bit embedding beside 4-bit layers), float32 weights on the CPU path, and the scales as
stored (float32 for the CPU, float16 for Metal)."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest

from mlx_distill.teacher import convert_gguf
from mlx_distill.teacher.gguf import read_gguf_header
from mlx_distill.teacher.model import runtime_weight_bytes
from mlx_distill.testing.gguf_models import largest_tensor_float32_bytes, measure_conversion, write_tiny_gguf


def _weights(header) -> int:
    return sum(tensor.elements for tensor in header.tensors)


def test_each_layer_is_counted_at_its_own_bits(tmp_path):
    gguf = write_tiny_gguf(tmp_path / "m.gguf", "llama", "Q4_0", kinds={"token_embd.weight": "Q8_0"})
    header = read_gguf_header(gguf)
    for scale_dtype, scale_bytes in ((mx.float32, 4), (mx.float16, 2)):
        folder = tmp_path / f"mlx-{scale_bytes}"
        config = convert_gguf(gguf, folder, scale_dtype=scale_dtype)
        assert config["quantization"]["model.embed_tokens"]["bits"] == 8 and config["quantization"]["bits"] == 4
        # On the CPU path every weight is dequantized to float32: 4 bytes a weight, no scales kept.
        assert runtime_weight_bytes(folder, config, to_float32=True, quantize=None) == 4 * _weights(header)
        # As stored (Metal): the files' tensors, scales at their own width.
        stored = runtime_weight_bytes(folder, config, to_float32=False, quantize=None)
        weights = mx.load(str(folder / "model.safetensors"))
        assert stored == sum(array.nbytes for array in weights.values())
        assert weights["model.embed_tokens.scales"].dtype == scale_dtype
        assert json.loads((folder / "config.json").read_text())["mlx_distill_gguf"]["scale_dtype"] == \
            str(scale_dtype).removeprefix("mlx.core.")


# What a conversion holds beyond its output and one tensor: the tokenizer step (transformers reads
# the GGUF's metadata) and the allocators' slack. Measured here: about 40 MB.
CONVERSION_BASELINE = 96 * 1024**2


@pytest.mark.slow
def test_a_conversion_peaks_near_one_shard_plus_one_tensor_not_the_whole_model(tmp_path):
    # About 150 MB of Q4_K (a float16 copy of its weights would be 600 MB); measured in a process
    # of its own, above what it held once Python, MLX and transformers were imported.
    gguf = write_tiny_gguf(tmp_path / "big.gguf", "llama", "Q4_K", hidden=2048, layers=6, heads=32, kv_heads=8,
                           ffn=5632)
    result = measure_conversion(gguf, tmp_path / "mlx")
    above = result["peak"] - result["baseline"]
    assert above <= result["output"] + largest_tensor_float32_bytes(gguf) + CONVERSION_BASELINE, result


def test_a_gguf_teacher_that_cannot_fit_is_refused_before_converting(tmp_path, monkeypatch):
    from mlx_distill.errors import DistillError
    from mlx_distill.teacher import load_teacher
    from mlx_distill.teacher.model import gguf_memory_estimate

    monkeypatch.setenv("MLX_DISTILL_CACHE", str(tmp_path / "cache"))
    # A header that says a million layers: its KV cache alone cannot fit any machine.
    gguf = write_tiny_gguf(tmp_path / "m.gguf", "llama", "Q4_0", extra_metadata={"llama.block_count": 1_000_000})
    with pytest.raises(DistillError, match="needs about .* but only .* is available"):
        load_teacher(str(gguf), batch_size=16)
    assert not (tmp_path / "cache").exists()  # nothing converted
    # The early estimate of a normal file: float32 weights on the CPU path, the file's size otherwise.
    small = read_gguf_header(write_tiny_gguf(tmp_path / "s.gguf", "llama", "Q4_0"))
    cpu = gguf_memory_estimate(small, batch_size=1, prompt_tokens=8, max_tokens=8, to_float32=True)
    assert cpu.weight_bytes == 4 * _weights(small)
    metal = gguf_memory_estimate(small, batch_size=1, prompt_tokens=8, max_tokens=8, to_float32=False)
    assert metal.weight_bytes == (tmp_path / "s.gguf").stat().st_size
