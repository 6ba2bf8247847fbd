"""The plane bodies for kernels larger than 3x3 (issue 18, item 3, third session):
``conv_rows._conv_planes_kernel`` (forward / grad-input on rows of two or more vectors,
flattened planes of a task's rows, ``conv_tuning.plane_blocking``) and the whole-vector
dot products of ``conv_weight_grad._weight_gradient_planes_kernel`` (zero-tailed local
copies), against the float64 reference: several row blocks with an overlapping last
block that starts on an odd row, filter counts the block does not divide, a second
destination (``store_twice``), float32 and float64. Few shapes: each one compiles."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn.fused.bordered_ops as FF
import reference as ref
from helpers import assert_border_zero, assert_close, bordered_copy, random_array
from numbacnn.fused.buffers import bordered_empty, interior
from numbacnn.kernels.cpu import conv_tuning


@pytest.fixture(autouse=True)
def direct_bodies(monkeypatch):
    """These tests hold the direct plane bodies: the 1-D Winograd ones, which Tiny VGG's
    5x5 and 7x7 layers with 4 or more input channels take instead, are held by
    tests/test_conv_winograd.py against the same reference."""
    monkeypatch.setattr(conv_tuning, "WINOGRAD_ENABLED", False)


def test_the_plane_rules():
    assert conv_tuning.planes_outside(5, 5, 2) and conv_tuning.planes_outside(7, 7, 4)
    assert not conv_tuning.planes_outside(5, 5, 1)  # one-vector rows keep the kernel-row body
    assert not conv_tuning.planes_outside(3, 3, 2)  # 3x3 is what it was
    # Tiny VGG's 28x28 planes: 5 of 10 filters, the whole plane in one task
    assert conv_tuning.plane_blocking(10, 28, 32, 4) == (5, 28)
    assert conv_tuning.plane_blocking(10, 28, 34, 4) == (5, 28)
    # a wider plane: equal blocks of an even number of rows within the sums budget
    assert conv_tuning.plane_blocking(10, 62, 66, 4) == (5, 14)
    assert conv_tuning.plane_blocking(6, 41, 44, 4) == (3, 22)
    assert conv_tuning.plane_blocking(7, 9, 20, 8) == (1, 9)


# (batch, channels, height, width, filters, kernel, padding, dtype)
CASES = [
    # 41 output rows in two tasks of 22: the last starts on row 19 (odd), overlapping 3
    (2, 3, 41, 40, 6, 5, 2, np.float32),
    (2, 4, 9, 14, 7, 7, 3, np.float64),   # 7 filters (blocks of 1), 9 rows, two vectors of float64
    (1, 10, 28, 28, 10, 7, 3, np.float32),  # Tiny VGG's 7x7 layer, batch 1
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])) + "-" + np.dtype(c[7]).name)
def test_plane_kernels_match_the_reference(case, rng):
    batch, channels, height, width, filters, kernel, padding, dtype = case
    pad = (padding, padding)
    x = random_array(rng, (batch, channels, height, width), dtype)
    w = random_array(rng, (filters, channels, kernel, kernel), dtype)
    b = random_array(rng, (filters,), dtype)
    vector = conv_tuning.VECTOR_BYTES // np.dtype(dtype).itemsize
    assert conv_tuning.planes_outside(kernel, kernel, -(-width // vector))  # the plane body runs
    want_z = ref.conv2d(x, w, b, padding=pad)
    x_padded = bordered_copy(x, pad)
    y = bordered_empty(want_z.shape, (1, 2), dtype)
    FF.conv2d_relu_padded(x_padded, w, b, y, (1, 2))
    assert_close(interior(y, (1, 2), want_z.shape), ref.relu(want_z), dtype, "relu(conv) y")
    assert_border_zero(y, (1, 2), want_z.shape, "y")
    pooled_shape = (batch, filters, want_z.shape[2] // 2, want_z.shape[3] // 2)
    pooled = bordered_empty(pooled_shape, (1, 1), dtype)
    indices = np.empty(pooled_shape, np.int64)
    y2 = bordered_empty(want_z.shape, (0, 0), dtype)
    FF.conv2d_relu_padded(x_padded, w, b, y2, (0, 0), pooled=pooled, pooled_border=(1, 1), indices=indices)
    assert_close(y2, ref.relu(want_z), dtype, "relu(conv) stored beside the pool")
    assert_close(interior(pooled, (1, 1), pooled_shape), ref.max_pool2d(ref.relu(want_z), 2), dtype, "pooled")
    assert_border_zero(pooled, (1, 1), pooled_shape, "pooled")
    # the indices point at each window's maximum of the ReLU output, inside its window
    picked = np.take_along_axis(y2.reshape(batch, filters, -1), indices.reshape(batch, filters, -1), axis=2)
    assert np.array_equal(picked.reshape(pooled_shape), interior(pooled, (1, 1), pooled_shape)), "indices"
    rows, cols = np.divmod(indices, want_z.shape[3])
    assert (rows // 2 == np.arange(pooled_shape[2])[:, None]).all(), "index rows"
    assert (cols // 2 == np.arange(pooled_shape[3])).all(), "index columns"

    gz = random_array(rng, want_z.shape, dtype)
    rgx, rgw, rgb = ref.conv2d_backward(gz, x, w, padding=pad)
    gz_border = (kernel - 1 - padding, kernel - 1 - padding)
    gz_padded = bordered_copy(gz, gz_border)
    mask = bordered_copy(np.maximum(random_array(rng, x.shape, dtype), 0), pad)
    keep = interior(mask, pad, x.shape) > 0
    gx = bordered_empty(x.shape, (2, 1), dtype)
    gx_also = bordered_empty(x.shape, (1, 1), dtype)
    gw, gb = FF.conv2d_backward_padded(gz_padded, gz_border, x_padded, w, pad, gx=gx, gx_border=(2, 1), mask=mask,
                                       mask_border=pad, gx_also=gx_also, gx_also_border=(1, 1))
    assert_close(interior(gx, (2, 1), x.shape), np.where(keep, rgx, 0), dtype, "gx x mask")
    assert np.array_equal(interior(gx_also, (1, 1), x.shape), interior(gx, (2, 1), x.shape)), "the second copy"
    assert_border_zero(gx, (2, 1), x.shape, "gx")
    assert_border_zero(gx_also, (1, 1), x.shape, "gx_also")
    assert_close(gw, rgw, dtype, "gw")
    assert_close(gb, rgb, dtype, "gb")
    gx_plain = bordered_empty(x.shape, (0, 0), dtype)
    FF.conv2d_backward_padded(gz_padded, gz_border, x_padded, w, pad, gx=gx_plain)
    assert_close(gx_plain, rgx, dtype, "gx")


def test_plane_kernels_propagate_nan(rng):
    """No fast-math flag drops NaN in the plane bodies (nor does a zero tail hide one):
    a NaN input pixel reaches every output it feeds; a NaN gradient every weight
    gradient of its filter."""
    x = random_array(rng, (1, 4, 28, 28), np.float32)
    x[0, 2, 27, 27] = np.nan  # the last pixel: its taps are the ones the dot products' tails end on
    w = random_array(rng, (4, 4, 5, 5), np.float32)
    x_padded = bordered_copy(x, (2, 2))
    y = bordered_empty((1, 4, 28, 28), (0, 0), np.float32)
    FF.conv2d_relu_padded(x_padded, np.abs(w), np.zeros(4, np.float32), y, (0, 0))
    assert np.isnan(y[0, :, 25:, 25:]).all() and np.isnan(y).sum() == 4 * 9
    gz = np.ones((1, 4, 28, 28), np.float32)
    gz[0, 1, 0, 0] = np.nan
    gw, gb = FF.conv2d_backward_padded(bordered_copy(gz, (2, 2)), (2, 2), bordered_copy(np.nan_to_num(x), (2, 2)),
                                       w, (2, 2))
    assert np.isnan(gw[1]).all() and not np.isnan(gw[[0, 2, 3]]).any()
    assert np.isnan(gb[1]) and not np.isnan(gb[[0, 2, 3]]).any()
