"""The fused path's FFT forward and input gradient (kernels/cpu/conv_fft.py, through
fused/bordered_ops.py) against the float64 reference and against the direct kernels
they stand beside; the rule that picks them (conv_tuning.fft_size_for); and a Tiny VGG
7x7 training step with and without them."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn.fused.bordered_ops as FF
import reference as ref
from helpers import assert_border_zero, assert_close, bordered_copy, random_array
from numbacnn.fused.buffers import bordered_empty, interior
from numbacnn.kernels.cpu import conv_tuning
from numbacnn.shapes import fft_size


def test_the_rule_takes_the_fft_for_tiny_vggs_28x28_7x7_layer_only(monkeypatch):
    assert conv_tuning.fft_size_for(10, 10, 7, 7, 28, 28, 3, 3, 64) == 32
    assert conv_tuning.fft_size_for(10, 10, 7, 7, 28, 28, 3, 3, 16) == 32
    assert conv_tuning.fft_size_for(10, 10, 7, 7, 28, 28, 3, 3, 4) == 0    # the kernels' transforms, per image
    assert conv_tuning.fft_size_for(10, 10, 5, 5, 28, 28, 2, 2, 64) == 0   # 1-D Winograd F(4, 5) is faster there
    assert conv_tuning.fft_size_for(10, 10, 7, 7, 14, 14, 3, 3, 64) == 0   # N = 32 for 17 values: the transforms lose
    assert conv_tuning.fft_size_for(10, 10, 3, 3, 28, 28, 1, 1, 64) == 0
    assert conv_tuning.fft_size_for(10, 1, 7, 7, 28, 28, 3, 3, 64) == 0    # one input channel
    assert conv_tuning.fft_size_for(10, 10, 7, 7, 60, 60, 3, 3, 64) == 0   # N = 64: larger than FFT_MAX_SIZE
    assert [fft_size(28, 3), fft_size(14, 2), fft_size(13, 3), fft_size(1, 0), fft_size(9, 0)] == [32, 16, 16, 1, 16]
    # N covers the kernel too: a 5x9 kernel on a 3x3 input with padding (3, 5) needs 16, not 8
    monkeypatch.setattr(conv_tuning, "FFT_ADVANTAGE", 0.0)
    assert conv_tuning.fft_size_for(16, 16, 5, 9, 3, 3, 3, 5, 64) == 16


# (batch, channels, height, width, filters, kernel, padding, dtype): Tiny VGG's layer, and odd
# sizes with a padding that is not "same" (11x9 outputs) and a non-square input, in float64
CASES = [
    ((3, 10, 28, 28), 10, 7, 3, np.float32),
    ((2, 5, 13, 11), 4, 5, 1, np.float64),
]


@pytest.mark.parametrize("x_shape, filters, kernel, padding, dtype", CASES,
                         ids=["tiny-vgg-7x7-float32", "odd-5x5-float64"])
def test_fft_forward_and_input_gradient_match_reference_and_the_direct_kernels(x_shape, filters, kernel, padding,
                                                                               dtype, rng, monkeypatch):
    pad = (padding, padding)
    x = np.maximum(random_array(rng, x_shape, dtype), 0)  # a ReLU output (the input gradient's mask)
    w = random_array(rng, (filters, x_shape[1], kernel, kernel), dtype)
    b = random_array(rng, (filters,), dtype)
    want_z = ref.conv2d(x, w, b, padding=pad)
    gz = random_array(rng, want_z.shape, dtype)
    want_gx = ref.conv2d_backward(gz, x, w, padding=pad)[0]
    x_padded = bordered_copy(x, pad)
    gz_border = (kernel - 1 - padding,) * 2
    gz_padded = bordered_copy(gz, gz_border)

    def run():
        y = bordered_empty(want_z.shape, (1, 2), dtype)
        FF.conv2d_relu_padded(x_padded, w, b, y, (1, 2), padding=pad)
        pooled_shape = (want_z.shape[0], filters, want_z.shape[2] // 2, want_z.shape[3] // 2)
        pooled = bordered_empty(pooled_shape, (1, 1), dtype)
        indices = np.empty(pooled_shape, np.int64)
        FF.conv2d_relu_padded(x_padded, w, b, None, (0, 0), pooled=pooled, pooled_border=(1, 1), indices=indices,
                              padding=pad)
        gx = bordered_empty(x_shape, (2, 1), dtype)
        also = bordered_empty(x_shape, (1, 1), dtype)
        FF.conv2d_backward_padded(gz_padded, gz_border, x_padded, w, pad, gx=gx, gx_border=(2, 1), mask=x_padded,
                                  mask_border=pad, gx_also=also, gx_also_border=(1, 1))
        return y, pooled, indices, gx, also

    monkeypatch.setattr(conv_tuning, "FFT_ADVANTAGE", 0.0)  # the FFT wherever it can run
    assert FF._fft_size(x_padded, w, pad) == fft_size(max(x_shape[2:]), padding)
    y, pooled, indices, gx, also = run()
    assert_close(interior(y, (1, 2), want_z.shape), ref.relu(want_z), dtype, "relu(conv)")
    assert_border_zero(y, (1, 2), want_z.shape, "y")
    want_gx_masked = ref.relu_backward(want_gx, x)
    assert_close(interior(gx, (2, 1), x_shape), want_gx_masked, dtype, "gx times the mask")
    assert_border_zero(gx, (2, 1), x_shape, "gx")
    np.testing.assert_array_equal(interior(also, (1, 1), x_shape), interior(gx, (2, 1), x_shape))
    # the same outputs as the direct kernels (the pool's indices too, wherever two values are not within rounding)
    monkeypatch.setattr(conv_tuning, "FFT_ENABLED", False)
    assert FF._fft_size(x_padded, w, pad) == 0
    direct_y, direct_pooled, direct_indices, direct_gx, _ = run()
    assert_close(y, direct_y, dtype, "y against the direct kernel")
    assert_close(pooled, direct_pooled, dtype, "pooled against the direct kernel")
    assert (indices == direct_indices).mean() > 0.99
    assert_close(gx, direct_gx, dtype, "gx against the direct kernel")


def test_fft_is_more_exact_than_the_direct_sums_on_tiny_vggs_layer(rng):
    """The transforms round about log2(N) times per value; the direct 7x7 sums add 490
    products: against the float64 reference, the FFT's largest error is smaller."""
    x = random_array(rng, (16, 10, 28, 28), np.float32)
    w = random_array(rng, (10, 10, 7, 7), np.float32)
    b = np.zeros(10, np.float32)
    want = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=(3, 3))
    x_padded = bordered_copy(x, (3, 3))
    assert FF._fft_size(x_padded, w, (3, 3)) == 32
    z = np.empty(want.shape, np.float32)
    FF._fft_correlate(z, (0, 0), x_padded, (3, 3), w, b, 32)
    error = np.abs(z - want).max() / np.abs(want).max()
    assert error < 1e-6, error


def test_a_nan_in_one_image_stays_in_that_image(rng):
    """The transforms mix a whole plane: a NaN reaches every output of its image (as far
    as its channel's spectrum goes), never another image's."""
    x = random_array(rng, (2, 10, 28, 28), np.float32)
    x[1, 3, 5, 7] = np.nan
    w = random_array(rng, (10, 10, 7, 7), np.float32)
    z = np.empty((2, 10, 28, 28), np.float32)
    FF._fft_correlate(z, (0, 0), bordered_copy(x, (3, 3)), (3, 3), w, np.zeros(10, np.float32), 32)
    assert np.isfinite(z[0]).all() and np.isnan(z[1]).any()


@pytest.mark.slow
def test_a_7x7_tiny_vgg_step_with_and_without_the_fft(monkeypatch):
    """Two SGD steps of Tiny VGG 7x7 (the 28x28 layer takes the FFT in forward and
    grad-input) give the weights of the same steps on the direct kernels, within float32
    rounding."""
    from numbacnn import functional as F
    from numbacnn.models import tiny_vgg
    from numbacnn.optim import SGD

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 16)

    def train(fft: bool):
        monkeypatch.setattr(conv_tuning, "FFT_ENABLED", fft)
        model = tiny_vgg(1, 10, 28, kernel_size=7, padding=3, seed=0)
        optimizer = SGD(model.parameters(), lr=0.05)
        for _ in range(2):
            _, grad = F.softmax_cross_entropy(model(x), labels)
            optimizer.zero_grad()
            model.backward(grad, input_grad=False)
            optimizer.step()
        return [p.data.copy() for p in model.parameters()]

    for with_fft, direct in zip(train(True), train(False)):
        assert_close(with_fft, direct, np.float32, "weights after two steps")
