"""A second reference: torch.nn.functional, when PyTorch is installed.

Install it with ``pip install torch==2.13.0`` (the CPU build); these tests skip
cleanly without it. Random configurations cover everything PyTorch accepts on
batched float input: strides, paddings (ints, pairs, "same", "valid"),
dilations, groups, ceil_mode.
"""

import numpy as np
import pytest

import numbacnn.functional as F
from helpers import assert_close, on_device

torch = pytest.importorskip("torch")
tf = torch.nn.functional


def _random_conv_config(rng):
    groups = int(rng.choice([1, 2]))
    channels = groups * int(rng.integers(1, 4))
    filters = groups * int(rng.integers(1, 4))
    kernel = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    if rng.random() < 0.25:
        stride, padding = 1, str(rng.choice(["same", "valid"]))
    else:
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        padding = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
    size = (dilation[0] * (kernel[0] - 1) + 1 + int(rng.integers(0, 6)),
            dilation[1] * (kernel[1] - 1) + 1 + int(rng.integers(0, 6)))
    return (int(rng.integers(1, 4)), channels, *size), (filters, channels // groups, *kernel), \
        dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_matches_torch(device, seed, dtype):
    rng = np.random.default_rng(seed)
    x_shape, w_shape, hyper = _random_conv_config(rng)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, w_shape[:1]))
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = tf.conv2d(tx, tw, tb, **hyper)
    gy = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    assert_close(on_device(device, F.conv2d, x, w, b, **hyper), ty.detach().numpy(), dtype, "y")
    gx, gw, gb = on_device(device, F.conv2d_backward, gy, x, w, **hyper)
    assert_close(gx, tx.grad.numpy(), dtype, "gx")
    assert_close(gw, tw.grad.numpy(), dtype, "gw")
    assert_close(gb, tb.grad.numpy(), dtype, "gb")


@pytest.mark.parametrize("seed", range(12))
def test_max_pool2d_matches_torch(device, seed):
    rng = np.random.default_rng(seed)
    kernel = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    hyper = dict(kernel_size=kernel,
                 stride=None if seed % 3 == 0 else (int(rng.integers(1, 4)), int(rng.integers(1, 4))),
                 padding=(int(rng.integers(0, kernel[0] // 2 + 1)), int(rng.integers(0, kernel[1] // 2 + 1))),
                 dilation=(int(rng.integers(1, 3)), int(rng.integers(1, 3))), ceil_mode=bool(seed % 2))
    x = rng.integers(-3, 4, (2, 3, 9, 8)).astype(np.float64)  # ties on purpose
    tx = torch.tensor(x, requires_grad=True)
    ty = tf.max_pool2d(tx, **hyper)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    assert_close(on_device(device, F.max_pool2d, x, **hyper), ty.detach().numpy(), np.float64, "y")
    assert_close(on_device(device, F.max_pool2d_backward, gy, x, **hyper), tx.grad.numpy(), np.float64, "gx")


def test_linear_relu_and_cross_entropy_match_torch(device, rng):
    x, w, b = rng.standard_normal((6, 9)), rng.standard_normal((4, 9)), rng.standard_normal(4)
    labels = rng.integers(0, 4, 6)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    logits = tf.linear(torch.relu(tx), tw, tb)
    loss = tf.cross_entropy(logits, torch.tensor(labels))
    loss.backward()
    hidden = on_device(device, F.relu, x)
    out = on_device(device, F.linear, hidden, w, b)
    value, grad = on_device(device, F.softmax_cross_entropy, out, labels)
    assert abs(value - loss.item()) < 1e-12
    ghidden, gw, gb = on_device(device, F.linear_backward, grad, hidden, w)
    gx = on_device(device, F.relu_backward, ghidden, x)
    for got, expected, name in [
            (gx, tx.grad, "gx"), (gw, tw.grad, "gw"), (gb, tb.grad, "gb")]:
        assert_close(got, expected.numpy(), np.float64, name)
