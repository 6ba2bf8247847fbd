"""The optimizer kernels run small updates on one thread (no parallel region, issue 10
item 5) and large ones in parallel: both branches must compute PyTorch's update.

References are float64 NumPy transcriptions of PyTorch's SGD / Adam formulas, on
sizes just below and above ``SERIAL_BELOW``.
"""

from __future__ import annotations

import numpy as np
import pytest

from numbacnn.kernels.cpu import optim as K
from tests.helpers import assert_close

SIZES = [1, K.SERIAL_BELOW - 1, K.SERIAL_BELOW + 7]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_step_both_branches(n, dtype, nesterov):
    rng = np.random.default_rng(n)
    param, grad, velocity = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    lr, momentum, dampening, weight_decay = 0.1, 0.9, 0.25, 0.01
    g = grad.astype(np.float64) + weight_decay * param.astype(np.float64)
    v = momentum * velocity.astype(np.float64) + (1 - dampening) * g
    step = g + momentum * v if nesterov else v
    expected_param = param.astype(np.float64) - lr * step
    K.sgd_step(param, grad, velocity, lr, momentum, dampening, weight_decay, nesterov)
    assert_close(param, expected_param, dtype, "param")
    assert_close(velocity, v, dtype, "velocity")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_step_both_branches(n, decoupled):
    rng = np.random.default_rng(n + 1)
    param, grad = rng.standard_normal(n), rng.standard_normal(n)
    exp_avg, exp_avg_sq = rng.standard_normal(n), rng.random(n)
    lr, beta1, beta2, eps, weight_decay, t = 1e-3, 0.9, 0.999, 1e-8, 0.01, 3
    bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
    p, g = param.copy(), grad.copy()
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta1 * exp_avg + (1 - beta1) * g
    v = beta2 * exp_avg_sq + (1 - beta2) * g * g
    expected = p - (lr / bc1) * m / (np.sqrt(v) / np.sqrt(bc2) + eps)
    K.adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled, bc1, bc2)
    assert_close(param, expected, np.float64, "param")
    assert_close(exp_avg, m, np.float64, "exp_avg")
    assert_close(exp_avg_sq, v, np.float64, "exp_avg_sq")


@pytest.mark.parametrize("n", SIZES)
def test_grad_accumulate_both_branches(n):
    rng = np.random.default_rng(n + 2)
    grad, delta = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    expected = grad.astype(np.float64) + delta
    K.grad_accumulate(grad, delta)
    assert_close(grad, expected, np.float32, "grad")


@pytest.mark.parametrize("shape", [(64, 490, 10), (3, 5, 2), (64, 2048, 10)])  # serial, serial, parallel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_kernels_both_branches(shape, dtype):
    from numbacnn.kernels.cpu import linear as L

    batch, inputs, outputs = shape
    assert (batch * inputs * outputs < L.SERIAL_BELOW) == (inputs != 2048)
    rng = np.random.default_rng(batch + inputs)
    x, w = rng.standard_normal((batch, inputs)).astype(dtype), rng.standard_normal((outputs, inputs)).astype(dtype)
    b, gy = rng.standard_normal(outputs).astype(dtype), rng.standard_normal((batch, outputs)).astype(dtype)
    out, gx, gw = np.empty((batch, outputs), dtype), np.full((batch, inputs), np.nan, dtype), \
        np.full((outputs, inputs), np.nan, dtype)
    L.linear_forward(out, x, w, b)
    L.linear_backward_input(gx, gy, w)
    L.linear_backward_weight(gw, gy, x)
    x64, w64, gy64 = x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64)
    assert_close(out, x64 @ w64.T + b, dtype, "out")
    assert_close(gx, gy64 @ w64, dtype, "gx")
    assert_close(gw, gy64.T @ x64, dtype, "gw")


@pytest.mark.parametrize("batch", [32, 64, 8000])  # serial (320 logits), parallel, parallel
def test_softmax_cross_entropy_both_branches(batch):
    from numbacnn.kernels.cpu import loss as S

    assert (batch * 10 < S.SERIAL_BELOW) == (batch == 32)

    rng = np.random.default_rng(batch)
    logits = rng.standard_normal((batch, 10)) * 5
    labels = rng.integers(0, 10, batch)
    grad, losses = np.full(logits.shape, np.nan), np.full(batch, np.nan)
    S.softmax_cross_entropy(grad, losses, logits, labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert_close(losses, -log_probs[np.arange(batch), labels], np.float64, "losses")
    expected = np.exp(log_probs)
    expected[np.arange(batch), labels] -= 1
    assert_close(grad, expected / batch, np.float64, "grad")


@pytest.mark.parametrize("shape", [(64, 10, 1, 1), (64, 10, 4, 4), (64, 10, 14, 14)])  # serial, serial, parallel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_bias_gradient_both_branches(shape, dtype):
    from numbacnn.kernels.cpu import conv as C

    assert (np.prod(shape) < C.BIAS_SERIAL_BELOW) == (shape[2] != 14)
    dout = np.random.default_rng(shape[2]).standard_normal(shape).astype(dtype)
    db = np.full(shape[1], np.nan, dtype)
    C.conv2d_backward_bias(db, dout)
    assert_close(db, dout.astype(np.float64).sum(axis=(0, 2, 3)), dtype, "db")
