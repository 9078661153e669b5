"""One GGUF tensor's bytes -> MLX arrays: an affine-quantized triple where MLX can hold the type
exactly, a re-quantized triple where it cannot, or a float array.

MLX's affine quantization stores, for each group of 32 weights of a row, ``w = scale * q + bias``
with ``q`` an unsigned integer of ``bits`` bits. The llama.cpp types map onto it:

==========  ========================================  =====================================
GGUF type   llama.cpp's weights                        MLX (group size 32)
==========  ========================================  =====================================
Q4_0        d * (q - 8)                                4 bits, scale d, bias -8d (exact)
Q4_1        d * q + m                                  4 bits, scale d, bias m (exact)
Q5_0        d * (q - 16)                               5 bits, scale d, bias -16d (exact)
Q5_1        d * q + m                                  5 bits, scale d, bias m (exact)
Q8_0        d * q, q signed                            8 bits, scale d, bias -128d (exact)
Q4_K        per 32: d*sc * q - dmin*m                  4 bits, scale d*sc, bias -dmin*m (exact)
Q5_K        per 32: d*sc * q - dmin*m                  5 bits, scale d*sc, bias -dmin*m (exact)
Q6_K        per 16: d*sc * (q - 32)                    6 bits where both halves of a group of 32
                                                       share a scale (exact), else 8 bits
Q2_K, Q3_K, IQ*, TQ*, MXFP4, NVFP4                     dequantized by the gguf package, then
                                                       4 bits (not exact: logged)
F32, F16, BF16                                         kept as they are
==========  ========================================  =====================================

The scales and biases are float32 where the teacher runs in float32 (MLX's CPU path: there the
model is dequantized at load, so every weight is then exactly llama.cpp's), else float16 (Metal).
Rows are converted a slice at a time, so a tensor's intermediates never exceed a few tens of MB.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import _type_traits, dequantize

GROUP_SIZE = 32
REQUANT_BITS = 4
Q6K_REQUANT_BITS = 8
FLOAT_TYPES = ("F32", "F16", "BF16", "F64")
# Converted exactly (see the table above; Q6_K is exact only when its scales allow 6 bits).
EXACT_TYPES = {"Q4_0": 4, "Q4_1": 4, "Q5_0": 5, "Q5_1": 5, "Q8_0": 8, "Q4_K": 4, "Q5_K": 5}
# Everything the gguf package can dequantize.
SUPPORTED_TYPES = (*FLOAT_TYPES, *sorted(kind.name for kind in _type_traits if kind.name != "BF16"))
# Weights converted per slice of a tensor: bounds the intermediates (float32 copies, bit planes).
SLICE_WEIGHTS = 1 << 22


@dataclass
class ConvertedTensor:
    """A tensor as MLX holds it: ``weight`` alone (float), or with ``scales``/``biases`` (quantized)."""

    weight: mx.array
    scales: mx.array | None = None
    biases: mx.array | None = None
    bits: int | None = None
    exact: bool = True

    def arrays(self) -> dict[str, mx.array]:
        leaves = {"weight": self.weight}
        if self.scales is not None:
            leaves.update(scales=self.scales, biases=self.biases)
        return leaves

    def map_rows(self, change) -> "ConvertedTensor":
        """The same tensor with ``change`` applied to every array's rows (the first axis)."""
        return ConvertedTensor(change(self.weight), None if self.scales is None else change(self.scales),
                               None if self.biases is None else change(self.biases), self.bits, self.exact)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ``bits``-bit codes (rows, n) as MLX packs them: a little-endian bit stream per row
    in uint32 words (n * bits / 32 words a row)."""
    rows, n = codes.shape
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if bits == 8:
        packed = codes
    elif bits in (2, 4):
        per_byte = 8 // bits
        packed = np.zeros((rows, n // per_byte), np.uint8)
        for i in range(per_byte):
            packed |= codes[:, i::per_byte] << np.uint8(i * bits)
    else:  # 3, 5, 6 bits: every 8 codes fill ``bits`` whole bytes of the stream
        octets = codes.reshape(rows, n // 8, 8).astype(np.uint64)
        value = np.zeros((rows, n // 8), np.uint64)
        for i in range(8):
            value |= octets[:, :, i] << np.uint64(i * bits)
        packed = value.view(np.uint8).reshape(rows, n // 8, 8)[:, :, :bits].reshape(rows, n // 8 * bits)
    return packed.view(np.uint32)


def _f16(column: np.ndarray) -> np.ndarray:
    return column.copy().view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray, width: int) -> np.ndarray:
    """ggml's 4-bit layout: each run of ``width`` bytes holds ``width`` values in its low nibbles,
    then the next ``width`` in its high nibbles."""
    blocks = qs.shape[0]
    runs = qs.reshape(blocks, -1, 1, width) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    return (runs & np.uint8(0x0F)).reshape(blocks, -1)


def _high_bits(qh: np.ndarray, count: int) -> np.ndarray:
    """Bit i of a little-endian 32-bit field, for i < count, as (blocks, count) 0/1."""
    bits = np.unpackbits(qh, axis=-1, bitorder="little")
    return bits[:, :count]


def _legacy(kind: str, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes (blocks, 32), scale (blocks, 1), bias (blocks, 1)) of Q4_0/Q4_1/Q5_0/Q5_1/Q8_0."""
    d = _f16(blocks[:, 0:2])
    if kind == "Q8_0":
        codes = (blocks[:, 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return codes, d, -128 * d
    offset = 4 if kind in ("Q4_1", "Q5_1") else 2
    m = _f16(blocks[:, 2:4]) if offset == 4 else None
    if kind in ("Q4_0", "Q4_1"):
        codes = _nibbles(blocks[:, offset:], 16)
    else:
        qh = _high_bits(blocks[:, offset:offset + 4], 32)
        codes = _nibbles(blocks[:, offset + 4:], 16) | (qh << 4)
    if m is not None:
        return codes, d, m
    return codes, d, -(8 if kind == "Q4_0" else 16) * d


def _k_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit scales and mins of a Q4_K/Q5_K block (ggml's packing)."""
    blocks = packed.shape[0]
    d, m, m_d = np.split(packed.reshape(blocks, 3, 4), 3, axis=-2)
    sc = np.concatenate([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mins = np.concatenate([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc.reshape(blocks, 8).astype(np.float32), mins.reshape(blocks, 8).astype(np.float32)


def _k_quant(kind: str, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes (blocks, 256), scale (blocks, 8), bias (blocks, 8)) of Q4_K/Q5_K."""
    d, dmin = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    sc, mins = _k_scales(blocks[:, 4:16])
    if kind == "Q4_K":
        codes = _nibbles(blocks[:, 16:], 32)
    else:
        qh = np.unpackbits(blocks[:, 16:48].reshape(-1, 1, 32), axis=1, bitorder="little")  # (blocks, 8, 32)
        codes = _nibbles(blocks[:, 48:], 32) | (qh.reshape(-1, 256) << 4)
    return codes, d * sc, -(dmin * mins)


def _q6k(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q6_K as 6-bit groups of 32 (only right when every pair of its 16-wide sub-blocks shares a scale)."""
    scales = blocks[:, 192:208].view(np.int8)
    n = blocks.shape[0]
    ql = blocks[:, :128].reshape(n, 2, 64)
    qh = blocks[:, 128:192].reshape(n, 2, 32)
    low = (ql.reshape(n, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & np.uint8(0x0F)
    low = low.reshape(n, 2, 4, 32)
    high = (qh.reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & np.uint8(0x03)
    codes = (low | (high << 4)).reshape(n, 256)
    d = _f16(blocks[:, 208:210])
    scale = d * scales[:, 0::2].astype(np.float32)
    return codes, scale, -32 * scale


def _affine(kind: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, scales, biases) of a row slice of an exact type, each row's groups in order."""
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[kind]]
    rows = raw.shape[0]
    blocks = raw.reshape(-1, size)
    if kind in ("Q4_K", "Q5_K"):
        parts = _k_quant(kind, blocks)
    elif kind == "Q6_K":
        parts = _q6k(blocks)
    else:
        parts = _legacy(kind, blocks)
    codes, scale, bias = parts
    return codes.reshape(rows, -1), scale.reshape(rows, -1), bias.reshape(rows, -1)


def _slices(rows: int, columns: int) -> list[slice]:
    step = max(1, SLICE_WEIGHTS // max(columns, 1))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def convert_tensor(raw: np.ndarray, kind: str, shape: tuple[int, ...], scale_dtype: mx.Dtype) -> ConvertedTensor:
    """One tensor: ``raw`` its bytes (uint8, rows x bytes-per-row), ``shape`` as numpy orders it
    (rows first), ``kind`` its GGUF type name."""
    if kind in FLOAT_TYPES:
        dtype = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}[kind]
        values = raw.view(dtype).reshape(shape)
        if kind == "BF16":
            return ConvertedTensor(mx.array(values).view(mx.bfloat16))
        return ConvertedTensor(mx.array(values.astype(np.float32) if kind == "F64" else values))
    if len(shape) != 2:  # norms and biases stored quantized: float32
        return ConvertedTensor(mx.array(dequantize(raw, GGMLQuantizationType[kind]).reshape(shape)))
    rows, columns = shape
    raw = raw.reshape(rows, -1)
    if kind == "Q6_K":
        scales = raw.reshape(-1, GGML_QUANT_SIZES[GGMLQuantizationType.Q6_K][1])[:, 192:208].view(np.int8)
        exact = np.array_equal(scales[:, 0::2], scales[:, 1::2])
        bits = 6 if exact else Q6K_REQUANT_BITS
    else:
        exact = kind in EXACT_TYPES
        bits = EXACT_TYPES.get(kind, REQUANT_BITS)
    pieces: list[tuple[mx.array, mx.array, mx.array]] = []
    for part in _slices(rows, columns):
        if exact:
            codes, scale, bias = _affine(kind, raw[part])
            pieces.append((mx.array(pack_codes(codes, bits)), mx.array(scale).astype(scale_dtype),
                           mx.array(bias).astype(scale_dtype)))
        else:
            pieces.append(_requantize(raw[part], kind, bits, scale_dtype))
        mx.eval(pieces[-1])
    weight, scales, biases = (mx.concatenate([p[i] for p in pieces]) if len(pieces) > 1 else pieces[0][i]
                              for i in range(3))
    del pieces
    mx.eval(weight, scales, biases)  # joined now, so the slices are freed before the next tensor
    return ConvertedTensor(weight, scales, biases, bits, exact)


def _requantize(raw: np.ndarray, kind: str, bits: int, scale_dtype: mx.Dtype) -> tuple[mx.array, mx.array, mx.array]:
    """Dequantize (the gguf package) and fit each group of 32 to ``bits`` bits: scale = range /
    (2**bits - 1), bias = the group's minimum, so the error is at most half a step (MLX's own
    ``mx.quantize`` keeps zero exact and errs up to twice that)."""
    values = dequantize(raw, GGMLQuantizationType[kind]).astype(np.float32)
    rows, columns = values.shape
    groups = values.reshape(rows, columns // GROUP_SIZE, GROUP_SIZE)
    low, high = groups.min(axis=-1), groups.max(axis=-1)
    scale = ((high - low) / (2**bits - 1)).astype(np.float32)
    scale = mx.array(scale).astype(scale_dtype)
    bias = mx.array(low).astype(scale_dtype)
    # Codes from the scales and biases as stored, so rounding them costs no extra step.
    stored_scale = np.array(scale.astype(mx.float32))[..., None]
    stored_bias = np.array(bias.astype(mx.float32))[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        codes = np.where(stored_scale > 0, np.rint((groups - stored_bias) / stored_scale), 0)
    codes = np.clip(codes, 0, 2**bits - 1).astype(np.uint8).reshape(rows, columns)
    return mx.array(pack_codes(codes, bits)), scale, bias
