"""Every GGUF tensor type the gguf package reads, converted to MLX: exact types bit for bit against
the gguf package's own dequantization, the re-quantized ones within half a quantization step of
each group of 32, floats unchanged, and MLX's bit packing for every width."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize, quantize

from mlx_distill.teacher.gguf import EXACT_TYPES, SUPPORTED_TYPES, convert_tensor, pack_codes
from mlx_distill.teacher.gguf.quants import FLOAT_TYPES
from mlx_distill.testing.gguf_models import q6k_blocks_with_paired_scales, random_blocks

ROWS = 6
REQUANTIZED = sorted(set(SUPPORTED_TYPES) - set(EXACT_TYPES) - set(FLOAT_TYPES) - {"Q6_K"})


def _columns(kind: str) -> int:
    return max(256, GGML_QUANT_SIZES[GGMLQuantizationType[kind]][0])


def _as_mlx(converted) -> np.ndarray:
    return np.array(mx.dequantize(converted.weight, converted.scales, converted.biases, group_size=32,
                                  bits=converted.bits).astype(mx.float32))


@pytest.mark.parametrize("kind", sorted(EXACT_TYPES))
def test_exact_types_are_llama_cpp_s_weights_bit_for_bit(kind):
    rng = np.random.default_rng(1)
    raw = random_blocks(kind, ROWS, 512, rng)
    expected = dequantize(raw, GGMLQuantizationType[kind])
    converted = convert_tensor(raw, kind, (ROWS, 512), mx.float32)
    assert converted.exact and converted.bits == EXACT_TYPES[kind]
    assert converted.weight.dtype == mx.uint32 and converted.scales.dtype == mx.float32
    np.testing.assert_array_equal(_as_mlx(converted), expected)


def test_q6_k_is_6_bit_where_its_scales_pair_up_else_8_bit():
    rng = np.random.default_rng(2)
    paired = q6k_blocks_with_paired_scales(ROWS, 512, rng)
    converted = convert_tensor(paired, "Q6_K", (ROWS, 512), mx.float32)
    assert converted.exact and converted.bits == 6
    np.testing.assert_array_equal(_as_mlx(converted), dequantize(paired, GGMLQuantizationType.Q6_K))
    mixed = random_blocks("Q6_K", ROWS, 512, rng)
    converted = convert_tensor(mixed, "Q6_K", (ROWS, 512), mx.float32)
    assert not converted.exact and converted.bits == 8
    _assert_within_half_a_step(_as_mlx(converted), dequantize(mixed, GGMLQuantizationType.Q6_K), 8)


def _assert_within_half_a_step(got: np.ndarray, expected: np.ndarray, bits: int) -> None:
    """The stated tolerance of a re-quantized tensor: each weight within half a step of its group
    of 32 (the group's range over 2**bits - 1), plus float32 rounding."""
    groups = expected.reshape(expected.shape[0], -1, 32)
    step = (groups.max(-1) - groups.min(-1)) / (2**bits - 1)
    error = np.abs(got - expected).reshape(groups.shape).max(-1)
    assert np.all(error <= step / 2 * (1 + 1e-4) + 1e-6 * np.abs(groups).max(-1)), (error / step).max()


@pytest.mark.parametrize("kind", REQUANTIZED)
def test_other_types_are_re_quantized_to_4_bits_within_half_a_step(kind):
    rng = np.random.default_rng(3)
    columns = _columns(kind)
    raw = random_blocks(kind, ROWS, columns, rng)
    expected = dequantize(raw, GGMLQuantizationType[kind]).astype(np.float32)
    if not np.isfinite(expected).all():  # random exponent bytes (MXFP4) can overflow float32
        raw = random_blocks(kind, ROWS, columns, np.random.default_rng(4))
        expected = dequantize(raw, GGMLQuantizationType[kind]).astype(np.float32)
    expected = np.nan_to_num(expected)
    converted = convert_tensor(raw, kind, (ROWS, columns), mx.float32)
    assert not converted.exact and converted.bits == 4
    _assert_within_half_a_step(_as_mlx(converted), expected, 4)


@pytest.mark.parametrize("kind", ["F32", "F16", "BF16"])
def test_float_types_stay_as_they_are(kind):
    values = np.random.default_rng(5).normal(size=(ROWS, 64)).astype(np.float32)
    raw = quantize(values, GGMLQuantizationType[kind])
    converted = convert_tensor(np.ascontiguousarray(raw).view(np.uint8).reshape(ROWS, -1), kind, (ROWS, 64), mx.float32)
    assert converted.scales is None
    assert converted.weight.dtype == {"F32": mx.float32, "F16": mx.float16, "BF16": mx.bfloat16}[kind]
    np.testing.assert_array_equal(np.array(converted.weight.astype(mx.float32)),
                                  dequantize(raw, GGMLQuantizationType[kind]))


def test_scales_in_float16_for_metal():
    # Q4_0's scale d and bias -8d are float16 numbers, kept exactly; the weights then come out in
    # float16 (the model's compute dtype there), so within float16 rounding.
    raw = random_blocks("Q4_0", ROWS, 256, np.random.default_rng(6))
    converted = convert_tensor(raw, "Q4_0", (ROWS, 256), mx.float16)
    assert converted.scales.dtype == converted.biases.dtype == mx.float16
    expected = dequantize(raw, GGMLQuantizationType.Q4_0)
    d = raw.reshape(-1, 18)[:, :2].copy().view(np.float16).astype(np.float32).ravel()
    np.testing.assert_array_equal(np.array(converted.scales.astype(mx.float32)).ravel(), d)
    # d * q + (-8d) computed in float16: off by at most a float16 rounding of d * 15.
    np.testing.assert_allclose(_as_mlx(converted), expected, rtol=0, atol=np.abs(d).max() * 16 * 2**-10)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
def test_codes_are_packed_as_mlx_unpacks_them(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, size=(3, 128)).astype(np.uint8)
    ones = mx.ones((3, 4))
    unpacked = mx.dequantize(mx.array(pack_codes(codes, bits)), ones, mx.zeros((3, 4)), group_size=32, bits=bits)
    np.testing.assert_array_equal(np.array(unpacked), codes.astype(np.float32))


def test_a_big_tensor_is_converted_in_slices_and_joined_in_order(monkeypatch):
    from mlx_distill.teacher.gguf import quants

    raw = random_blocks("Q4_K", 40, 512, np.random.default_rng(7))
    monkeypatch.setattr(quants, "SLICE_WEIGHTS", 512 * 7)  # 6 slices of 7 rows, the last shorter
    converted = convert_tensor(raw, "Q4_K", (40, 512), mx.float32)
    np.testing.assert_array_equal(_as_mlx(converted), dequantize(raw, GGMLQuantizationType.Q4_K))
