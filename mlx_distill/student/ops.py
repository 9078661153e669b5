"""CPU fast paths for the T5 student: ``exp`` of non-positive inputs and a softmax built on it.

MLX's CPU ``exp`` is slow inside compiled training steps; these are plain array ops that
``mx.compile`` fuses. On other devices (and for other dtypes) they are the usual MLX ops.
"""

from __future__ import annotations

import mlx.core as mx


def on_cpu() -> bool:
    """True when MLX computes on the CPU (where the fast paths here pay off)."""
    return mx.default_device().type == mx.DeviceType.cpu


def exp_nonpositive(x: mx.array) -> mx.array:
    """``exp(x)`` for float32 ``x <= 0`` (softmax, log-sum-exp), fast on the CPU inside ``mx.compile``.

    MLX's CPU ``exp`` calls libm's ``fma``/``floor`` per element (~14 ns/element on x86); this is
    the same Cephes range reduction and polynomial written as plain array ops, which ``mx.compile``
    fuses into vectorised loops (~4x faster, relative error < 1e-7; inputs below -88 give 0, as
    ``exp`` underflows). On other devices it is ``mx.exp``.
    """
    if not on_cpu() or x.dtype != mx.float32:
        return mx.exp(x)
    x = mx.maximum(x, -88.0)
    # Round x·log2(e) to the nearest integer n with the 1.5·2^23 trick (no floor call).
    n = (x * 1.4426950408889634 + 12582912.0) - 12582912.0
    r = x - n * 0.693359375 + n * 2.12194440e-4  # x - n·ln2 in two parts
    p = 1.9875691500e-4
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = p * r + c
    p = p * r * r + r + 1.0
    # 2^n from its exponent bits; n = -127 (x <= -88) gives exactly 0.
    return p * mx.view(mx.left_shift(n.astype(mx.int32) + 127, 23), mx.float32)


@mx.custom_function
def softmax_last_axis(x: mx.array) -> mx.array:
    """``mx.softmax(x, axis=-1)`` for float32 through `exp_nonpositive`; the VJP uses the output."""
    e = exp_nonpositive(x - mx.stop_gradient(x.max(axis=-1, keepdims=True)))
    return e / e.sum(axis=-1, keepdims=True)


@softmax_last_axis.vjp
def _softmax_last_axis_vjp(primals, cotangent, output):
    return (output * (cotangent - (cotangent * output).sum(axis=-1, keepdims=True)),)
