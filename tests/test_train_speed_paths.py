"""The CPU fast paths of the training step give the same numbers as the plain MLX ops."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_distill.student import exp_nonpositive
from mlx_distill.train.step import token_cross_entropy


def test_exp_nonpositive_matches_exp_including_underflow():
    x = np.concatenate([np.linspace(-100.0, 0.0, 20001), [-np.inf, -1e9, -88.0, -87.0, -1e-8, 0.0]])
    x = x.astype(np.float32)
    for fn in (exp_nonpositive, mx.compile(exp_nonpositive)):
        got = np.array(fn(mx.array(x))).astype(np.float64)
        want = np.exp(x.astype(np.float64))
        normal = want > 1e-37
        assert np.max(np.abs(got - want)[normal] / want[normal]) < 1e-6
        assert np.all(got[~normal] < 1e-37) and np.all(got >= 0)
        assert got[x == -np.inf][0] == 0.0 and got[x == 0.0][0] == 1.0


def test_token_cross_entropy_matches_mlx_loss_and_gradient():
    mx.random.seed(3)
    logits = mx.random.normal((3, 5, 101)) * 4
    targets = mx.random.randint(0, 101, (3, 5))
    mask = (mx.random.uniform(shape=(3, 5)) > 0.3).astype(mx.float32)

    def ours(z):
        return (token_cross_entropy(z, targets) * mask).sum()

    def reference(z):
        return (nn.losses.cross_entropy(z, targets, reduction="none") * mask).sum()

    want_value, want_grad = mx.value_and_grad(reference)(logits)
    for fn in (mx.value_and_grad(ours), mx.compile(mx.value_and_grad(ours))):
        value, grad = fn(logits)
        assert abs(value.item() - want_value.item()) < 1e-4 * abs(want_value.item())
        assert mx.allclose(grad, want_grad, atol=1e-6).item()
    # Masked-out tokens get no gradient; every kept row's gradient sums to 0 (softmax - one-hot).
    _, grad = mx.value_and_grad(ours)(logits)
    assert np.all(np.array(grad)[np.array(mask) == 0] == 0)
    assert mx.allclose(grad.sum(-1), mx.zeros((3, 5)), atol=1e-5).item()


def test_token_cross_entropy_is_stable_for_large_logits():
    logits = mx.array([[1000.0, 0.0, -1000.0], [-1e9, 5.0, 5.0]])
    targets = mx.array([0, 1])
    loss = token_cross_entropy(logits, targets)
    assert np.allclose(np.array(loss), [0.0, np.log(2.0)], atol=1e-6)


def test_softmax_last_axis_matches_mlx_softmax_and_gradient():
    from mlx_distill.student import softmax_last_axis

    mx.random.seed(4)
    scores = mx.random.normal((2, 3, 7, 9)) * 5
    scores = mx.where(mx.arange(9) > 6, -1e9, scores)  # masked keys, as the decoder's causal bias
    weights = mx.random.normal((2, 3, 7, 9))

    def loss(fn):
        return lambda s: (fn(s) * weights).sum()

    want_value, want_grad = mx.value_and_grad(loss(lambda s: mx.softmax(s, axis=-1)))(scores)
    for fn in (mx.value_and_grad(loss(softmax_last_axis)), mx.compile(mx.value_and_grad(loss(softmax_last_axis)))):
        value, grad = fn(scores)
        assert abs(value.item() - want_value.item()) < 1e-5
        assert mx.allclose(grad, want_grad, atol=1e-6).item()
    assert mx.all(softmax_last_axis(scores)[..., 7:] == 0).item()


def test_gelu_approx_matches_the_tanh_gelu_and_its_gradient():
    from mlx_distill.student.ops import gelu_approx, gelu_approx_sigmoid

    x64 = np.concatenate([np.linspace(-12.0, 12.0, 4001), [0.0, -1e-6, 1e-6, 30.0, -30.0]])
    x = mx.array(x64.astype(np.float32))
    x64 = np.array(x).astype(np.float64)
    u = np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)
    want = 0.5 * x64 * (1 + np.tanh(u))
    want_grad = 0.5 * (1 + np.tanh(u)) + 0.5 * x64 * (1 - np.tanh(u) ** 2) * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x64**2)

    def close(got: mx.array, expected: np.ndarray) -> bool:
        return bool(np.all(np.abs(np.array(got) - expected) <= 1e-6 + 1e-5 * np.abs(expected)))

    for fn in (gelu_approx, mx.compile(gelu_approx), gelu_approx_sigmoid, mx.compile(gelu_approx_sigmoid)):
        assert close(fn(x), want)
    for grad in (mx.grad(lambda z: gelu_approx(z).sum()), mx.compile(mx.grad(lambda z: gelu_approx(z).sum()))):
        assert close(grad(x), want_grad)
    # and MLX's own, in float32, agrees to float32 rounding
    assert mx.allclose(gelu_approx(x), nn.gelu_approx(x), atol=1e-5).item()
