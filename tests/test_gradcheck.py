"""Backward proven a second way: central finite differences in float64.

For an op f and a random output gradient gy, the scalar L = sum(gy * f(...)) has
dL/dinput equal to what the backward function returns; each input element is
perturbed by +-h and (L(+h) - L(-h)) / 2h compared with the analytic value.
The analytic gradient always comes from ``device``; L is evaluated on
``finite_difference_device(device)`` (the CPU under the CUDA simulator, for speed).
"""

import numpy as np
import pytest

import numbacnn.functional as F
from helpers import finite_difference_device, on_device

STEP = 1e-6
TOLERANCE = 1e-6  # central differences are O(h^2) accurate; rounding gives ~1e-9


def numerical_gradient(scalar_fn, array):
    grad = np.zeros_like(array)
    flat, flat_grad = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + STEP
        plus = scalar_fn()
        flat[i] = saved - STEP
        minus = scalar_fn()
        flat[i] = saved
        flat_grad[i] = (plus - minus) / (2 * STEP)
    return grad


def assert_gradient(analytic, numeric, name):
    scale = max(1.0, np.abs(numeric).max())
    error = np.abs(analytic - numeric).max() / scale
    assert error < TOLERANCE, f"{name}: finite-difference mismatch {error:.3g}"


@pytest.mark.parametrize("hyper", [
    dict(stride=1, padding=0),
    dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
    dict(padding="same", groups=2),
    dict(stride=3, padding=2, dilation=2, groups=2),
])
def test_conv2d_gradients_match_finite_differences(device, rng, hyper):
    fd_device = finite_difference_device(device)
    x = rng.standard_normal((2, 4, 6, 7))
    w = rng.standard_normal((4, 4 // hyper.get("groups", 1), 3, 2))
    b = rng.standard_normal(4)
    gy = rng.standard_normal(on_device(device, F.conv2d, x, w, b, **hyper).shape)
    loss = lambda: float(np.sum(gy * on_device(fd_device, F.conv2d, x, w, b, **hyper)))  # noqa: E731
    gx, gw, gb = on_device(device, F.conv2d_backward, gy, x, w, **hyper)
    assert_gradient(gx, numerical_gradient(loss, x), "gx")
    assert_gradient(gw, numerical_gradient(loss, w), "gw")
    assert_gradient(gb, numerical_gradient(loss, b), "gb")


@pytest.mark.parametrize("hyper", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1)),
])
def test_max_pool2d_gradient_matches_finite_differences(device, rng, hyper):
    fd_device = finite_difference_device(device)
    # a permutation of well-separated values: no ties, no maximum within 2h of another
    x = rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6).astype(np.float64) * 0.01
    gy = rng.standard_normal(on_device(device, F.max_pool2d, x, **hyper).shape)
    loss = lambda: float(np.sum(gy * on_device(fd_device, F.max_pool2d, x, **hyper)))  # noqa: E731
    gx = on_device(device, F.max_pool2d_backward, gy, x, **hyper)
    assert_gradient(gx, numerical_gradient(loss, x), "gx")


def test_relu_gradient_matches_finite_differences(device, rng):
    fd_device = finite_difference_device(device)
    x = rng.standard_normal((2, 3, 4, 4))
    x[np.abs(x) < 1e-3] = 0.5  # away from the kink
    gy = rng.standard_normal(x.shape)
    loss = lambda: float(np.sum(gy * on_device(fd_device, F.relu, x)))  # noqa: E731
    assert_gradient(on_device(device, F.relu_backward, gy, x), numerical_gradient(loss, x), "gx")


def test_linear_gradients_match_finite_differences(device, rng):
    fd_device = finite_difference_device(device)
    x, w, b = rng.standard_normal((4, 6)), rng.standard_normal((3, 6)), rng.standard_normal(3)
    gy = rng.standard_normal((4, 3))
    loss = lambda: float(np.sum(gy * on_device(fd_device, F.linear, x, w, b)))  # noqa: E731
    gx, gw, gb = on_device(device, F.linear_backward, gy, x, w)
    assert_gradient(gx, numerical_gradient(loss, x), "gx")
    assert_gradient(gw, numerical_gradient(loss, w), "gw")
    assert_gradient(gb, numerical_gradient(loss, b), "gb")


def test_softmax_cross_entropy_gradient_matches_finite_differences(device, rng):
    fd_device = finite_difference_device(device)
    logits = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, 5)
    loss = lambda: on_device(fd_device, F.softmax_cross_entropy, logits, labels)[0]  # noqa: E731
    _, grad = on_device(device, F.softmax_cross_entropy, logits, labels)
    assert_gradient(grad, numerical_gradient(loss, logits), "grad")
