"""The kernel-row bodies for kernels larger than 3x3 (issue 18, item 3): the forward /
grad-input row body ``conv_rows._accumulate_rows_by_kernel_row`` (in
``correlation_kernel`` and ``conv_rows_kernel``) and the whole-plane grad-weight
``conv_weight_grad._weight_gradient_planes_kernel``, against the general kernels of
``conv.py`` and the float64 reference: 5x5 and 7x7, with and without padding, odd sizes,
one-vector and two-vector rows, float32 and float64. Few shapes: each one compiles.
(Since the fifth session the fused cases whose shapes ``conv_tuning.winograd_outputs``
accepts, Tiny VGG's 28x28 5x5 layer in both dtypes and the 14x14 7x7 one in float64, run
the 1-D Winograd bodies instead: tests/test_conv_winograd.py holds those against the
direct plane bodies. Here the Tiny VGG layers run in float32 only: FUSED_CASES.)"""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn.functional as F
import numbacnn.fused.bordered_ops as FF
import reference as ref
from helpers import DTYPES, assert_border_zero as _assert_border_zero, assert_close, bordered_copy as _bordered, random_array
from numbacnn.fused.buffers import bordered_empty, interior
from numbacnn.kernels.cpu import conv as cpu_conv
from numbacnn.kernels.cpu import conv_tuning


def _general(x, w, b, gy, pad):
    """(y, gx, gw) of the readable kernels of conv.py (stride 1)."""
    args = (1, 1, pad[0], pad[1], 1, 1, 1)
    y = np.empty(gy.shape, x.dtype)
    cpu_conv.conv2d_forward_general(y, x, w, b, *args)
    gx = np.empty_like(x)
    cpu_conv.conv2d_backward_input_general(gx, gy, w, *args)
    gw = np.empty_like(w)
    cpu_conv.conv2d_backward_weight_general(gw, gy, x, *args)
    return y, gx, gw


def test_the_rules_pick_the_kernel_row_bodies_for_large_kernels_only():
    assert not conv_tuning.kernel_rows_outside(3, 3) and not conv_tuning.weight_gradient_by_planes(3, 3)
    for kernel_h, kernel_w in ((5, 5), (7, 7), (5, 3), (2, 7)):
        assert conv_tuning.kernel_rows_outside(kernel_h, kernel_w)
        assert conv_tuning.weight_gradient_by_planes(kernel_h, kernel_w)
    assert not conv_tuning.weight_gradient_by_planes(2, 9)  # wider than the spelled-out taps: row dot products
    # the 3x3 blocking is what it was; larger kernels get a block of rows and filters again
    assert conv_tuning.row_blocking(10, 3, 3, 28, 2) == (4, 2, 4)
    assert conv_tuning.row_blocking(10, 3, 3, 14, 1) == (1, 10, 2)
    assert conv_tuning.row_blocking(10, 5, 5, 28, 2) == (4, 2, 4)
    assert conv_tuning.row_blocking(10, 7, 7, 28, 2) == (2, 2, 2)
    assert conv_tuning.row_blocking(10, 7, 7, 14, 1) == (1, 5, 2)
    assert [conv_tuning.filter_block_size(10, k, k) for k in (3, 5, 7)] == [5, 5, 2]  # the functional kernel's


# (x shape (N, C, H, W), filters, (kernel_h, kernel_w), padding): odd sizes, filter and
# channel counts that are not a multiple of the block, an odd number of output rows
FUNCTIONAL_CASES = [
    ((2, 5, 11, 13), 6, (5, 5), (2, 2)),
    ((3, 4, 9, 10), 7, (5, 5), (0, 0)),   # 5x6 output, 7 filters (block of 1)
    ((2, 6, 12, 9), 4, (7, 7), (3, 3)),
    ((1, 4, 10, 17), 5, (7, 7), (0, 0)),  # 4x11 output, batch 1
    ((2, 4, 8, 11), 4, (2, 9), (1, 4)),   # wider than 7: the row grad-weight, kernel-row forward
]


# Each (case, dtype) compiles its own kernels (5-9 s of CI), so three cases run in one
# dtype: 5x5 without padding (7 filters, blocks of 1) and the 2x9 kernel (the row
# grad-weight) in float64, which take the same kernels in both dtypes (conv.choose_* and
# filter_block_size do not read it, the rows are rounded up to whole vectors at run time,
# and 5 or 9 rows, not whole tiles of 4, or a 2x9 kernel never take 1-D Winograd); 7x7
# without padding (batch 1) in float32 (the direct forward, the Winograd grad-input of
# 17-wide rows). Its float64 run took F(2, 7) Winograd in all three passes (rows of two
# or more vectors), which the 7x7 padding-3 case runs in float64 too. Both dtypes keep
# 5x5 and 7x7 with padding.
FUNCTIONAL_ONE_DTYPE = {1: np.float64, 3: np.float32, 4: np.float64}
FUNCTIONAL_PARAMS = [pytest.param(case, dtype, id=f"{case[2][0]}x{case[2][1]}-p{case[3][0]}-{case[0]}-"
                                                 f"{np.dtype(dtype).name}")
                     for i, case in enumerate(FUNCTIONAL_CASES) for dtype in DTYPES
                     if FUNCTIONAL_ONE_DTYPE.get(i, dtype) == dtype]


@pytest.mark.parametrize("case, dtype", FUNCTIONAL_PARAMS)
def test_functional_large_kernels_match_general_and_reference(case, dtype, rng):
    x_shape, filters, (kernel_h, kernel_w), pad = case
    assert cpu_conv.choose_forward(filters, kernel_h, kernel_w, 1, 1, 1, 1, 1, 2)[0] == cpu_conv.FAST
    assert cpu_conv.choose_backward_input(x_shape[1], kernel_h, kernel_w, 1, 1, *pad, 1, 1, 1, 2)[0] == cpu_conv.FAST
    assert cpu_conv.choose_backward_weight(filters, kernel_h, kernel_w, 1, 1, 1, 1, 1, x_shape[0],
                                           x_shape[3])[0] == cpu_conv.FAST
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, (filters, x_shape[1], kernel_h, kernel_w), dtype)
    b = random_array(rng, (filters,), dtype)
    y = F.conv2d(x, w, b, padding=pad)
    want_y = ref.conv2d(x, w, b, padding=pad)
    assert_close(y, want_y, dtype, "y")
    gy = random_array(rng, want_y.shape, dtype)
    gx, gw, gb = F.conv2d_backward(gy, x, w, padding=pad)
    rgx, rgw, rgb = ref.conv2d_backward(gy, x, w, padding=pad)
    assert_close(gx, rgx, dtype, "gx")
    assert_close(gw, rgw, dtype, "gw")
    assert_close(gb, rgb, dtype, "gb")
    general_y, general_gx, general_gw = _general(x, w, b, gy, pad)
    assert_close(y, general_y, dtype, "y against the general kernel")
    assert_close(gx, general_gx, dtype, "gx against the general kernel")
    assert_close(gw, general_gw, dtype, "gw against the general kernel")


# (batch, channels, height, width, filters, kernel, padding, dtypes): Tiny VGG's 5x5 and 7x7
# layers (two-vector and one-vector rows) in float32, the dtype they train in; odd shapes
# in float64. (In float64 both Tiny VGG layers sum by 1-D Winograd, 28 and 14 wide, and
# compiled 24-33 s each here: tests/test_conv_winograd.py holds Winograd in float64 for
# 5x5 (F(4, 5), 28 wide, no padding) and 7x7 (F(2, 7), 16 wide, padding 3) against the
# reference and the direct plane bodies; Tiny VGG's filter block of 5 runs in float32
# here and in its 7x7 case.)
FUSED_CASES = [
    (2, 10, 28, 28, 10, 5, 2, (np.float32,)),
    (3, 10, 14, 14, 10, 7, 3, (np.float32,)),
    (2, 4, 11, 10, 6, 5, 0, (np.float64,)),  # 7x6 output: an odd last row block, 3 pool windows
    (1, 5, 9, 13, 4, 7, 1, (np.float64,)),   # 5x9 output, batch 1
]


@pytest.mark.parametrize("case, dtype", [(c, d) for c in FUSED_CASES for d in c[-1]],
                         ids=lambda v: "x".join(map(str, v[:7])) if isinstance(v, tuple) else np.dtype(v).name)
def test_fused_large_kernels_match_general_and_reference(case, dtype, rng):
    batch, channels, height, width, filters, kernel, padding, _ = case
    pad = (padding, padding)
    x = random_array(rng, (batch, channels, height, width), dtype)
    w = random_array(rng, (filters, channels, kernel, kernel), dtype)
    b = random_array(rng, (filters,), dtype)
    want_z = ref.conv2d(x, w, b, padding=pad)
    gz = random_array(rng, want_z.shape, dtype)
    general_z, general_gx, general_gw = _general(x, w, b, gz, pad)
    assert_close(general_z, want_z, dtype, "the general kernel itself")
    x_padded = _bordered(x, pad)
    # forward: conv + ReLU into a bordered buffer, and conv + ReLU + 2x2 pool
    y = bordered_empty(want_z.shape, (1, 2), dtype)
    FF.conv2d_relu_padded(x_padded, w, b, y, (1, 2))
    assert_close(interior(y, (1, 2), want_z.shape), ref.relu(want_z), dtype, "relu(conv) y")
    assert_close(interior(y, (1, 2), want_z.shape), np.maximum(general_z, 0), dtype, "y against the general kernel")
    _assert_border_zero(y, (1, 2), want_z.shape, "y")
    pooled_shape = (batch, filters, want_z.shape[2] // 2, want_z.shape[3] // 2)
    pooled = bordered_empty(pooled_shape, (1, 1), dtype)
    indices = np.empty(pooled_shape, np.int64)
    FF.conv2d_relu_padded(x_padded, w, b, None, (0, 0), pooled=pooled, pooled_border=(1, 1), indices=indices)
    assert_close(interior(pooled, (1, 1), pooled_shape), ref.max_pool2d(ref.relu(want_z), 2), dtype, "pooled")
    _assert_border_zero(pooled, (1, 1), pooled_shape, "pooled")
    # backward: grad-weight and grad-bias in one pass, grad-input plain and times a ReLU mask
    rgx, rgw, rgb = ref.conv2d_backward(gz, x, w, padding=pad)
    gz_border = (kernel - 1 - padding, kernel - 1 - padding)
    gz_padded = _bordered(gz, gz_border)
    mask = _bordered(np.maximum(random_array(rng, x.shape, dtype), 0), pad)
    for masked in (False, True):
        gx = bordered_empty(x.shape, (2, 1), dtype)
        gw, gb = FF.conv2d_backward_padded(gz_padded, gz_border, x_padded, w, pad, gx=gx, gx_border=(2, 1),
                                           mask=mask if masked else None, mask_border=pad)
        keep = interior(mask, pad, x.shape) > 0 if masked else True
        assert_close(interior(gx, (2, 1), x.shape), np.where(keep, rgx, 0), dtype, f"gx (masked={masked})")
        assert_close(interior(gx, (2, 1), x.shape), np.where(keep, general_gx, 0), dtype, "gx against general")
        _assert_border_zero(gx, (2, 1), x.shape, "gx")
        assert_close(gw, rgw, dtype, "gw")
        assert_close(gw, general_gw, dtype, "gw against the general kernel")
        assert_close(gb, rgb, dtype, "gb")


def test_large_kernels_propagate_nan(rng):
    """No fast-math flag drops NaN in the kernel-row bodies: a NaN input pixel reaches
    every output it feeds, a NaN gradient every weight and bias gradient."""
    x = random_array(rng, (1, 4, 12, 12), np.float32)
    x[0, 2, 6, 5] = np.nan
    w = random_array(rng, (4, 4, 5, 5), np.float32)
    y = F.conv2d(x, w, padding=2)
    assert np.isnan(y[0, :, 4:9, 3:8]).all() and np.isnan(y).sum() == 4 * 25
    gy = np.ones_like(y)
    gy[0, 1, 6, 6] = np.nan
    gx, gw, gb = F.conv2d_backward(gy, np.nan_to_num(x), w, padding=2)
    assert np.isnan(gx[0, :, 4:9, 4:9]).all() and np.isnan(gx).sum() == 4 * 25
    assert np.isnan(gw[1]).all() and not np.isnan(gw[[0, 2, 3]]).any()
    assert np.isnan(gb[1]) and not np.isnan(gb[[0, 2, 3]]).any()
