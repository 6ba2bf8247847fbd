"""Lanes blocks (``FastPath.lanes``: fused blocks on small maps at a large batch, run
with the images in the vector lanes, ``fused/lanes_ops.py``): their own kernels
(``kernels/cpu/lanes_blocks.py``) against the float64 reference, and chains of them
beside every kind of neighbour against the layers one by one and the reference."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from helpers import assert_close, random_array
from numbacnn import nn
from numbacnn.fused import ConvBlock, NormSpec, fast_path, lanes_ops
from numbacnn.kernels.cpu import conv as cpu_conv
from numbacnn.kernels.cpu import lanes_blocks
from numbacnn.models import tiny_vgg
from test_fusion import FUSED_TOLERANCE, _assert_fused_equals_unfused, _assert_matches_reference, _relative_error


def _to_lanes(a):
    return np.ascontiguousarray(np.moveaxis(a, 0, -1))  # (N, C, H, W) -> (C, H, W, N)


def _from_lanes(a):
    return np.moveaxis(a, -1, 0)


def _awkward_z(rng, shape, dtype):
    """A conv output (N, F, H, W) with ties, zeros, -0.0, a NaN, windows all negative."""
    z = random_array(rng, shape, dtype)
    z[0, 0, 0, :2] = 1.5  # a tie in the first window: the first one wins
    z[1, 0, :2, :2] = -1.0  # a window with nothing > 0: no gradient passes
    z[2, 1, 0, 0] = np.nan  # NaN wins its window and passes the ReLU, no gradient
    z[3, 1, 1, 1] = -0.0
    return z


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [(4, 4), (5, 7)])  # 5x7: the last row and column are not pooled
def test_relu_pool_and_backwards_match_the_reference(dtype, size, rng):
    batch, filters = 17, 3
    z = _awkward_z(rng, (batch, filters) + size, dtype)
    top, left = 1, 2
    # ReLU into a bordered buffer: the interior, and the border left alone
    out = np.zeros((filters, size[0] + 2 * top, size[1] + 2 * left, batch), dtype)
    lanes_ops.relu_pool(out, None, _to_lanes(z), (top, left))  # the NCHW ReLU kernel on the lanes
    y = _from_lanes(out[:, top:top + size[0], left:left + size[1]])
    assert_close(y, ref.relu(z), dtype, "relu")
    assert np.signbit(y[3, 1, 1, 1]) == np.False_  # -0.0 becomes +0.0, as F.relu
    assert np.count_nonzero(out) == np.count_nonzero(out[:, top:top + size[0], left:left + size[1]])
    # ReLU + pool
    pooled_size = (size[0] // 2, size[1] // 2)
    pooled = np.zeros((filters, pooled_size[0] + 2 * top, pooled_size[1] + 2 * left, batch), dtype)
    which = np.empty((filters,) + pooled_size + (batch,), np.int8)
    lanes_blocks.relu_pool_into_border(pooled, which, _to_lanes(z), top, left)
    relu_z = ref.relu(z)
    assert_close(_from_lanes(pooled[:, top:top + pooled_size[0], left:left + pooled_size[1]]),
                 ref.max_pool2d(relu_z, 2), dtype, "pooled")
    # the pool's backward through the ReLU mask, into the bordered gradient buffer (full
    # of a stale value first: every interior element must be written, nothing outside it)
    gp = random_array(rng, (batch, filters) + pooled_size, dtype)
    gz = np.full((filters, size[0] + 2, size[1] + 3, batch), 7.0, dtype)
    lanes_ops.output_gradient(gz, _to_lanes(gp), _to_lanes(z), which, (1, 2))
    expected = ref.relu_backward(ref.max_pool2d_backward(gp, relu_z, 2), relu_z)
    assert_close(_from_lanes(gz[:, 1:1 + size[0], 2:2 + size[1]]), expected, dtype, "pool backward")
    outside = np.ones(gz.shape, bool)
    outside[:, 1:1 + size[0], 2:2 + size[1]] = False
    assert np.all(gz[outside] == 7.0)
    # the ReLU's backward and the copy of a gradient already masked: the NCHW kernels on
    # the lanes viewed as rows
    gy = random_array(rng, z.shape, dtype)
    lanes_ops.output_gradient(gz, _to_lanes(gy), _to_lanes(z), None, (1, 2))
    assert_close(_from_lanes(gz[:, 1:1 + size[0], 2:2 + size[1]]), ref.relu_backward(gy, z), dtype, "relu backward")
    assert np.all(gz[outside] == 7.0)
    gz[:, 1:1 + size[0], 2:2 + size[1]] = 7.0
    lanes_ops.output_gradient(gz, _to_lanes(gy), _to_lanes(z), None, (1, 2), masked=True)
    assert np.array_equal(_from_lanes(gz[:, 1:1 + size[0], 2:2 + size[1]]), gy) and np.all(gz[outside] == 7.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_and_bias_gradients_in_the_lanes(dtype, rng):
    """``lanes_ops.weight_bias_gradient``: the LANES grad-weight reading the gradient inside
    the grad-input's zero border, and the conv's bias kernel on the whole bordered buffer
    viewed as rows of images, against the float64 reference."""
    x = random_array(rng, (19, 3, 6, 5), dtype)
    w = random_array(rng, (4, 3, 3, 3), dtype)
    gz = random_array(rng, (19, 4, 3, 3), dtype)  # stride 2, padding 1: 3x3 outputs
    x_t = np.zeros((3, 8, 7, 19), dtype)
    x_t[:, 1:7, 1:6] = _to_lanes(x)
    for border in ((0, 0), (1, 1), (2, 1)):
        gz_t = np.zeros((4, 3 + 2 * border[0] + 1, 3 + 2 * border[1], 19), dtype)  # a row more below, as chains have
        gz_t[:, border[0]:border[0] + 3, border[1]:border[1] + 3] = _to_lanes(gz)
        gw, gb = lanes_ops.weight_bias_gradient(gz_t, border, x_t, w, (2, 2))
        _, want_gw, want_gb = ref.conv2d_backward(gz, x, w, stride=2, padding=1)
        assert_close(gw, want_gw, dtype, f"gw, border {border}")
        assert_close(gb, want_gb, dtype, f"gb, border {border}")


def test_the_rule_takes_small_maps_at_a_large_batch_without_batch_norm():
    block = ConvBlock((10, 10, 3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert fast_path(block, (16, 10, 7, 7), np.float32, np.float32, np.float32, "cpu").lanes
    assert not fast_path(block, (15, 10, 7, 7), np.float32, np.float32, np.float32, "cpu").lanes  # batch
    assert not fast_path(block, (16, 10, 8, 8), np.float32, np.float32, np.float32, "cpu").lanes  # 8 columns
    assert cpu_conv.lanes_block_applies(16, cpu_conv.LANES_BLOCK_MAX_OUT_WIDTH)
    with_norm = ConvBlock((10, 10, 3, 3), (1, 1), (1, 1), (1, 1), 1, norm=NormSpec(1e-5, True, True))
    assert not fast_path(with_norm, (16, 10, 7, 7), np.float32, np.float32, None, "cpu").lanes


def _stride_2_tiny_vgg(dtype):
    return tiny_vgg(1, 10, 28, padding=1, stride=2, dtype=dtype, seed=3)


@pytest.mark.parametrize("batch", [16, 17])  # 17: a partial vector of images
def test_stride_2_tiny_vgg_lanes_blocks_equal_the_layers_and_reference(batch):
    model = _stride_2_tiny_vgg(np.float32)
    chain = model.features._fusion_steps()[0]
    paths = [fast_path(block, shape, np.float32, np.float32, np.float32, "cpu")
             for block, shape in zip(chain.blocks(), [(batch, 1, 28, 28), (batch, 10, 14, 14), (batch, 10, 7, 7),
                                                      (batch, 10, 4, 4)])]
    assert [p.lanes for p in paths] == [False, False, True, True]  # the two 4x4 blocks
    x = random_array(np.random.default_rng(batch), (batch, 1, 28, 28), np.float32)
    result = _assert_fused_equals_unfused(model, x)
    _assert_matches_reference(model, x, result)
    _assert_fused_equals_unfused(model, x, input_grad=False)
    # eval mode: the lanes forward without its saved state
    model.eval()
    with nn.fusion.disabled():
        expected = model(x)
    assert _relative_error(model(x), expected) <= FUSED_TOLERANCE[np.dtype(np.float32)]


def _neighbours(dtype):
    """Lanes blocks beside every kind of block (batch 16, 9x9 input): an NCHW fast block
    without pool before a strided lanes block (the input gradient into its bordered
    gradient through its ReLU mask); lanes into lanes; a lanes block with a pool of an
    odd map (5x5: the last row and column unpooled) before another lanes block (its
    gradient handed over in the lanes for the pool); the first block a lanes block."""
    rng = np.random.default_rng(4)
    c = dict(dtype=dtype, rng=rng)
    return {
        "nchw, lanes, lanes + pool, lanes": ((16, 3, 9, 9), nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, **c), nn.ReLU(),
            nn.Conv2d(6, 5, 3, stride=2, padding=1, **c), nn.ReLU(),
            nn.Conv2d(5, 4, 3, padding=1, **c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 6, (2, 3), padding=(1, 1), **c), nn.ReLU())),
        "lanes first, then lanes + pool": ((16, 2, 6, 6), nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1, bias=False, **c), nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1, **c), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(4 * 3 * 3, 3, **c))),
    }


@pytest.mark.parametrize("name", ["nchw, lanes, lanes + pool, lanes", "lanes first, then lanes + pool"])
def test_lanes_blocks_beside_other_blocks_equal_the_layers_and_reference(name):
    shape, model = _neighbours(np.float64)[name]
    x = random_array(np.random.default_rng(1), shape, np.float64)
    result = _assert_fused_equals_unfused(model, x)
    _assert_matches_reference(model, x, result)


def test_lanes_blocks_beside_composed_and_batch_norm_blocks_equal_the_layers():
    """A composed block (dilation 2) without pool before a lanes block (its mask read from
    the plain input), and a batch norm block (NCHW, fast) after it (the output back out of
    the lanes; its input gradient handed over plain)."""
    rng = np.random.default_rng(6)
    c = dict(dtype=np.float64, rng=rng)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=2, dilation=2, **c), nn.ReLU(),
                          nn.Conv2d(5, 6, 3, stride=2, padding=1, **c), nn.ReLU(),
                          nn.Conv2d(6, 4, 3, padding=1, bias=False, **c), nn.BatchNorm2d(4, dtype=np.float64),
                          nn.ReLU())  # (a bias before batch norm has a zero gradient: rounding noise)
    x = random_array(np.random.default_rng(2), (16, 3, 9, 9), np.float64)
    _assert_fused_equals_unfused(model, x)


def _listing_models(dtype):
    """The neighbour models, and two more: a 3x3 block without padding (NCHW, with a
    second 1-bordered copy of its gradient) before a lanes block; a one-channel first
    layer that would gather its taps (GATHERED) but is a lanes block."""
    rng = np.random.default_rng(8)
    c = dict(dtype=dtype, rng=rng)
    return {
        **_neighbours(dtype),
        "3x3 without padding, then lanes": ((16, 3, 10, 10), nn.Sequential(
            nn.Conv2d(3, 8, 3, **c), nn.ReLU(), nn.Conv2d(8, 8, 3, **c), nn.ReLU())),
        "a one-channel first layer as a lanes block": ((16, 1, 8, 8), nn.Sequential(
            nn.Conv2d(1, 6, 3, stride=2, padding=1, **c), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1, **c), nn.ReLU(),
            nn.MaxPool2d(2))),
    }


@pytest.mark.parametrize("name", list(_listing_models(np.float64)))
def test_listed_kernels_are_the_ones_that_run_beside_lanes_blocks(name, monkeypatch):
    """``numbacnn info --kernels`` beside lanes blocks: each kernel as many times as it
    runs in a training step (the first layer without its input gradient); and that step
    equals the layers one by one."""
    from collections import Counter

    from numbacnn.report.kernels import kernel_choices
    from test_kernel_choices import COUNTED, _count_calls

    shape, model = _listing_models(np.float64)[name]
    x = random_array(np.random.default_rng(3), shape, np.float64)
    _assert_fused_equals_unfused(model, x, input_grad=False)
    listed = Counter(c.kernel for c in kernel_choices(model, shape, "cpu", np.float64)
                     if c.kernel.split(".")[0] in COUNTED)
    calls = _count_calls(monkeypatch)
    y = model(x)
    model.backward(np.ones_like(y), input_grad=False)
    ran = Counter({kernel: count for kernel, count in calls.items() if count})
    assert listed == ran, f"listed but not run: {listed - ran}; run but not listed: {ran - listed}"
