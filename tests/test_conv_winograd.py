"""1-D Winograd down the columns for 5x5 and 7x7 kernels (issue 18, item 3, fifth
session): the transforms of ``kernels/cpu/conv_winograd.py`` in exact arithmetic, the
rule that picks them (``conv_tuning.winograd_outputs``), and the fused kernels built
on them, ``conv_rows._conv_winograd_kernel`` (forward and grad-input, every store
mode) and ``conv_weight_grad.weight_gradient_winograd_kernel``, against the float64
reference and the direct plane bodies. Tiny VGG's 5x5 layer in both dtypes runs
through them in tests/test_large_kernels.py too. Few shapes: each one compiles."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import numbacnn.fused.bordered_ops as FF
import reference as ref
from helpers import assert_border_zero, assert_close, bordered_copy, random_array
from numbacnn.fused.buffers import bordered_empty, interior
from numbacnn.kernels.cpu import conv_tuning
from numbacnn.kernels.cpu import conv_winograd as winograd


@pytest.mark.parametrize("outputs, kernel", [(2, 3), (2, 5), (4, 5), (2, 7)])
def test_the_transforms_are_exact(outputs, kernel):
    """AT @ ((G @ g) * (BT @ d)) is the correlation of d with g, in exact rational
    arithmetic, for random integer rows (an error in a matrix entry shows here, not
    as a rounding difference); the float64 matrices are those fractions rounded."""
    at, g, bt = winograd.exact_winograd_matrices(outputs, kernel)
    points = outputs + kernel - 1
    rng = np.random.default_rng(kernel)
    for _ in range(20):
        d = [Fraction(int(v)) for v in rng.integers(-50, 50, points)]
        taps = [Fraction(int(v)) for v in rng.integers(-50, 50, kernel)]
        transformed_g = [sum(g[k][j] * taps[j] for j in range(kernel)) for k in range(points)]
        transformed_d = [sum(bt[k][j] * d[j] for j in range(points)) for k in range(points)]
        y = [sum(at[i][k] * transformed_g[k] * transformed_d[k] for k in range(points)) for i in range(outputs)]
        assert y == [sum(taps[j] * d[i + j] for j in range(kernel)) for i in range(outputs)]
    rounded = winograd.winograd_matrices(outputs, kernel)
    for exact, floats in zip((at, g, bt), rounded):
        assert np.array_equal(floats, np.array([[float(v) for v in row] for row in exact]))
    # BT's rows are small integers (the scale went into G): the input transform adds
    # whole multiples of the input, no rounding
    assert all(v.denominator == 1 for row in bt for v in row)


def test_the_rule():
    rule = conv_tuning.winograd_outputs
    assert rule(5, 5, 28, 28, 4, 10) == 4 and rule(7, 7, 28, 28, 4, 10) == 2   # Tiny VGG's 28-wide layers
    assert rule(7, 7, 14, 14, 8, 10) == 2       # 14 float64 columns are two vectors
    assert rule(5, 5, 14, 14, 8, 10) == 0       # 14 rows are not whole tiles of 4
    assert rule(5, 5, 14, 14, 4, 10) == 0       # one float32 vector: the kernel-row body
    assert rule(5, 5, 28, 28, 4, 1) == 0        # one input channel: the transforms cost more
    assert rule(5, 5, 26, 28, 4, 10) == 0       # not whole tiles of 4 rows
    assert rule(7, 7, 27, 28, 4, 10) == 0       # nor of 2
    assert rule(3, 3, 28, 28, 4, 10) == 0 and rule(5, 7, 28, 28, 4, 10) == 0 and rule(9, 9, 28, 28, 4, 10) == 0


# (batch, channels, height, width, filters, kernel, padding, dtype)
CASES = [
    # 7x7, float64: 46 output rows in two blocks of 24 (the second overlapping), 6 filters
    (2, 4, 46, 16, 6, 7, 3, np.float64),
    # Tiny VGG's 7x7 layer (F(2, 7)), float32, batch 17: a grad-weight chunk of two images
    (17, 10, 28, 28, 10, 7, 3, np.float32),
    # 5x5 (F(4, 5)) without padding, float64: 44x28 output, blocks of 22 rows rounded up
    # to whole tiles (24), the second overlapping; 7 filters (blocks of 1). (Tiny VGG's
    # 5x5 layer in float32: tests/test_large_kernels.py)
    (1, 6, 48, 32, 7, 5, 0, np.float64),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])) + "-" + np.dtype(c[7]).name)
def test_winograd_kernels_match_the_reference_and_the_direct_bodies(case, rng, monkeypatch):
    batch, channels, height, width, filters, kernel, padding, dtype = case
    pad = (padding, padding)
    out_shape = (batch, filters, height + 2 * padding - kernel + 1, width + 2 * padding - kernel + 1)
    itemsize = np.dtype(dtype).itemsize
    # Winograd runs in all three passes (forward and grad-weight on x, grad-input on the
    # padded gradient), so the second half below compares it with the direct bodies
    assert conv_tuning.winograd_outputs(kernel, kernel, *out_shape[2:], itemsize, channels) > 0
    assert conv_tuning.winograd_outputs(kernel, kernel, height, width, itemsize, filters) > 0
    x = random_array(rng, (batch, channels, height, width), dtype)
    w = random_array(rng, (filters, channels, kernel, kernel), dtype)
    b = random_array(rng, (filters,), dtype)
    gz = random_array(rng, out_shape, dtype)
    mask = bordered_copy(np.maximum(random_array(rng, x.shape, dtype), 0), pad)
    keep = interior(mask, pad, x.shape) > 0
    x_padded = bordered_copy(x, pad)
    gz_border = (kernel - 1 - padding, kernel - 1 - padding)
    gz_padded = bordered_copy(gz, gz_border)
    pooled_shape = (batch, filters, out_shape[2] // 2, out_shape[3] // 2)

    def run():
        y = bordered_empty(out_shape, (1, 2), dtype)
        FF.conv2d_relu_padded(x_padded, w, b, y, (1, 2))
        pooled = bordered_empty(pooled_shape, (1, 1), dtype)
        indices = np.empty(pooled_shape, np.int64)
        y2 = bordered_empty(out_shape, (0, 0), dtype)
        FF.conv2d_relu_padded(x_padded, w, b, y2, (0, 0), pooled=pooled, pooled_border=(1, 1), indices=indices)
        pooled_only = bordered_empty(pooled_shape, (0, 0), dtype)
        FF.conv2d_relu_padded(x_padded, w, b, None, (0, 0), pooled=pooled_only, pooled_border=(0, 0),
                              indices=np.empty(pooled_shape, np.int64))
        z = np.empty(out_shape, dtype)
        FF.conv2d_padded(x_padded, w, b, z)  # a batch norm block's conv output: the bias, no ReLU
        gx = bordered_empty(x.shape, (2, 1), dtype)
        gx_also = bordered_empty(x.shape, (1, 1), dtype)
        gw, gb = FF.conv2d_backward_padded(gz_padded, gz_border, x_padded, w, pad, gx=gx, gx_border=(2, 1),
                                           mask=mask, mask_border=pad, gx_also=gx_also, gx_also_border=(1, 1))
        gx_plain = bordered_empty(x.shape, (0, 0), dtype)
        FF.conv2d_backward_padded(gz_padded, gz_border, x_padded, w, pad, gx=gx_plain)
        return {"y": interior(y, (1, 2), out_shape), "y beside the pool": y2,
                "pooled": interior(pooled, (1, 1), pooled_shape), "indices": indices, "pooled only": pooled_only,
                "z": z,
                "gx x mask": interior(gx, (2, 1), x.shape), "gx also": interior(gx_also, (1, 1), x.shape),
                "gx": gx_plain, "gw": gw, "gb": gb, "borders": (y, pooled, gx, gx_also)}

    fast = run()
    want_z = ref.conv2d(x, w, b, padding=pad)
    rgx, rgw, rgb = ref.conv2d_backward(gz, x, w, padding=pad)
    expected = {"y": ref.relu(want_z), "y beside the pool": ref.relu(want_z),
                "pooled": ref.max_pool2d(ref.relu(want_z), 2), "pooled only": ref.max_pool2d(ref.relu(want_z), 2),
                "z": want_z, "gx x mask": np.where(keep, rgx, 0),
                "gx": rgx, "gw": rgw, "gb": rgb}
    for name, value in expected.items():
        assert_close(fast[name], value, dtype, name)
    assert np.array_equal(fast["gx also"], fast["gx x mask"]), "the second copy"
    for buffer, border, shape in zip(fast["borders"], ((1, 2), (1, 1), (2, 1), (1, 1)),
                                     (out_shape, pooled_shape, x.shape, x.shape)):
        assert_border_zero(buffer, border, shape, "a bordered output")
    picked = np.take_along_axis(fast["y beside the pool"].reshape(batch, filters, -1),
                                fast["indices"].reshape(batch, filters, -1), axis=2)
    assert np.array_equal(picked.reshape(pooled_shape), fast["pooled"]), "indices point at each maximum"

    if dtype == np.float64:
        # float64 against the float64 reference is the tighter check already; the direct
        # plane bodies in float64 compile a second set of kernels (about 30 s of CI per
        # case) and are pinned in tests/test_large_kernel_planes.py
        return
    monkeypatch.setattr(conv_tuning, "WINOGRAD_ENABLED", False)  # the direct plane bodies, same call
    direct = run()
    for name in expected:
        assert_close(fast[name], direct[name].astype(np.float64), dtype, f"{name} against the direct body")


def test_winograd_kernels_propagate_nan_and_inf(rng):
    """No fast-math flag drops NaN: a NaN input pixel reaches every output whose window
    holds it (and, through the transforms, the other outputs of its tiles, which the
    direct kernels keep finite: documented in conv_winograd.py); an Inf input gives a
    non-finite output there too; a NaN gradient reaches every weight and bias gradient
    of its filter and no other."""
    x = random_array(rng, (1, 4, 28, 28), np.float32)
    x[0, 2, 13, 27] = np.nan
    x[0, 1, 3, 4] = np.inf
    w = np.abs(random_array(rng, (4, 4, 5, 5), np.float32))
    x_padded = bordered_copy(x, (2, 2))
    assert conv_tuning.winograd_outputs(5, 5, 28, 28, 4, 4) == 4  # F(4, 5): tiles of 4 rows
    y = bordered_empty((1, 4, 28, 28), (0, 0), np.float32)
    FF.conv2d_relu_padded(x_padded, w, np.zeros(4, np.float32), y, (0, 0))
    assert np.isnan(y[0, :, 11:16, 25:]).all()
    assert not np.isfinite(y[0, :, 1:6, 2:7]).any()
    # the NaN's rows: its window's (11 .. 15), widened to the tiles of 4 rows that read it
    # (tile t reads padded input rows 4t .. 4t + 7; the NaN is padded row 15: tiles 2, 3)
    nan_rows = np.isnan(y[0, :, :, 20:]).any(axis=(0, 2)).nonzero()[0]
    assert nan_rows.min() >= 8 and nan_rows.max() <= 15
    gz = np.ones((1, 4, 28, 28), np.float32)
    gz[0, 1, 0, 0] = np.nan
    gw, gb = FF.conv2d_backward_padded(bordered_copy(gz, (2, 2)), (2, 2),
                                       bordered_copy(np.nan_to_num(x, posinf=0), (2, 2)), w, (2, 2))
    assert np.isnan(gw[1]).all() and not np.isnan(gw[[0, 2, 3]]).any()
    assert np.isnan(gb[1]) and not np.isnan(gb[[0, 2, 3]]).any()
