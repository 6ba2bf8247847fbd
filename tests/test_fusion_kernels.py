"""The bordered-buffer fused kernels (kernels/cpu/conv_rows.py, conv_weight_grad.py,
bordered.py, through the fused wing's ops in numbacnn/fused/bordered_ops.py) against the float64 NumPy reference, called
directly: Tiny VGG's shapes and awkward ones (odd sizes, batch 1, one channel,
filter counts that are not a multiple of the register block, non-square kernels),
and borders that must stay zero."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn.functional as F
import numbacnn.fused.bordered_ops as FF
from numbacnn.fused import ConvBlock, fast_path
from numbacnn.fused.buffers import bordered_empty, interior
import reference as ref
from helpers import DTYPES, assert_border_zero as _assert_border_zero, assert_close, bordered_copy as _bordered, random_array

# (batch, channels, height, width, filters, (kernel_h, kernel_w), padding)
CASES = [
    (2, 10, 28, 28, 10, (3, 3), 1),   # Tiny VGG, main job
    (1, 10, 30, 30, 10, (3, 3), 0),   # Tiny VGG 64x64's third conv, batch 1
    (1, 1, 7, 9, 7, (3, 3), 1),       # one channel, 7 filters (block of 7), odd sizes
    (3, 5, 9, 6, 11, (3, 3), 0),      # 11 filters, odd height
    (2, 4, 6, 9, 4, (2, 3), (1, 0)),  # non-square kernel, different padding per axis
    (3, 10, 14, 14, 10, (3, 3), 1),   # Tiny VGG main job's second block: one-vector rows, 7 pool windows
    (2, 10, 28, 28, 10, (3, 3), 0),   # 26-wide output: 13 pool windows, a last row block overlapping
    (2, 3, 9, 40, 6, (5, 5), 2),      # 5x5: blocks of 4 rows x 1 filter, 40 wide (3 vectors)
    (1, 4, 3, 5, 4, (2, 2), 0),       # two output rows only
]
# Each (case, dtype) compiles its own kernels (the plane shape, borders and itemsize are
# compiled in: 8-14 s of CI a test), so a case runs in one dtype where both dtypes take
# the same path and blocking (conv_tuning.row_blocking / plane_blocking and
# conv_small_maps.packs_images read the dtype only through the vectors per row and the
# packing rule: forward on the output's width, grad-input on the input's) and the other
# dtype keeps that path in another case:
# - both dtypes where they part: the main job (2 vectors a row in float32, 4 in float64);
#   7x9 and 14x14 (one vector in float32, two in float64); 11 filters on a 4-wide output
#   (float32 packs images side by side, float64 does not); 5x5 40 wide (3 and 5 vectors);
#   the (2, 3) kernel's grad-input (9 wide: one vector in float32, two in float64);
# - batch 1 at 30x30 (pad 0, whole-plane grad-weight): float64; float32's batch 1 is the
#   7x9 case, its pad-0 whole-plane grad-weight the 26-wide and 11-filter cases;
# - 26 wide with an overlapping last row block (row_blocking gives 4 rows a task in both
#   dtypes): float32; float64's pad-0 multi-vector rows (same blocking) are the 30x30 case;
# - the (2, 3) kernel with per-axis padding, forward (7 wide: one vector, 1 row x 4
#   filters in both dtypes): float32; float64's one-vector rows are the 11-filter and 2x2
#   cases, its non-square kernels and per-axis paddings tests/test_fusion_axes.py's;
# - two output rows (2x2, batch 1, one vector, 1 row x 4 filters, no packing in either
#   dtype): float64; float32's one-vector unpacked rows are the 7x9 and (2, 3) cases.
FORWARD_ONE_DTYPE = {1: np.float64, 4: np.float32, 6: np.float32, 8: np.float64}
BACKWARD_ONE_DTYPE = {1: np.float64, 6: np.float32, 8: np.float64}


def _params(one_dtype):
    return [pytest.param(case, dtype, id=f"{'x'.join(map(str, case[:5]))}-p{case[6]}-{np.dtype(dtype).name}"
                         .replace(" ", ""))
            for i, case in enumerate(CASES) for dtype in DTYPES if one_dtype.get(i, dtype) == dtype]


@pytest.mark.parametrize("case, dtype", _params(FORWARD_ONE_DTYPE))
def test_bordered_forward_relu_and_pool_match_reference(case, dtype, rng):
    batch, channels, height, width, filters, kernel, padding = case
    pad = (padding, padding) if isinstance(padding, int) else padding
    x = random_array(rng, (batch, channels, height, width), dtype)
    w = random_array(rng, (filters, channels, *kernel), dtype)
    b = random_array(rng, (filters,), dtype)
    assert fast_path(ConvBlock(w.shape, (1, 1), pad, (1, 1), 1), x.shape, dtype, dtype, dtype, "cpu").pad == pad
    expected_y = ref.relu(ref.conv2d(x, w, b, padding=pad))
    x_padded = _bordered(x, pad)
    out_border = (1, 2)  # any border: the next conv's padding
    y = bordered_empty(expected_y.shape, out_border, dtype)
    FF.conv2d_relu_padded(x_padded, w, b, y, out_border)
    assert_close(interior(y, out_border, expected_y.shape), expected_y, dtype, "conv2d_relu y")
    _assert_border_zero(y, out_border, expected_y.shape, "y")

    y_plain = bordered_empty(expected_y.shape, (0, 0), dtype)
    pooled_shape = (batch, filters, expected_y.shape[2] // 2, expected_y.shape[3] // 2)
    pooled = bordered_empty(pooled_shape, (1, 1), dtype)
    indices = np.empty(pooled_shape, np.int64)
    FF.conv2d_relu_padded(x_padded, w, b, y_plain, (0, 0), pooled=pooled, pooled_border=(1, 1), indices=indices)
    assert_close(y_plain, expected_y, dtype, "y with pool")
    assert_close(interior(pooled, (1, 1), pooled_shape), ref.max_pool2d(expected_y, 2), dtype, "pooled")
    _assert_border_zero(pooled, (1, 1), pooled_shape, "pooled")
    _, want_indices = F.max_pool2d(y_plain, 2, return_indices=True)
    np.testing.assert_array_equal(indices, want_indices)
    # out=None: only the pooled output and indices (what a fused group stores), the same values
    pooled_only = bordered_empty(pooled_shape, (2, 1), dtype)
    indices_only = np.full(pooled_shape, -1, np.int64)
    FF.conv2d_relu_padded(x_padded, w, b, None, (0, 0), pooled=pooled_only, pooled_border=(2, 1),
                          indices=indices_only)
    np.testing.assert_array_equal(interior(pooled_only, (2, 1), pooled_shape), interior(pooled, (1, 1), pooled_shape))
    np.testing.assert_array_equal(indices_only, indices)
    _assert_border_zero(pooled_only, (2, 1), pooled_shape, "pooled (no y)")


@pytest.mark.parametrize("case, dtype", _params(BACKWARD_ONE_DTYPE))
def test_bordered_backward_matches_reference(case, dtype, rng):
    batch, channels, height, width, filters, kernel, padding = case
    pad = (padding, padding) if isinstance(padding, int) else padding
    x = random_array(rng, (batch, channels, height, width), dtype)
    w = random_array(rng, (filters, channels, *kernel), dtype)
    y_shape = ref.conv2d(x, w, padding=pad).shape
    gz = random_array(rng, y_shape, dtype)
    rgx, rgw, rgb = ref.conv2d_backward(gz, x, w, padding=pad)
    gz_border = (kernel[0] - 1 - pad[0], kernel[1] - 1 - pad[1])
    gz_padded = _bordered(gz, gz_border)
    x_padded = _bordered(x, pad)
    mask = _bordered(np.maximum(random_array(rng, x.shape, dtype), 0), pad)  # a ReLU output, zeros included
    gx_border = (2, 1)
    for masked in (False, True):
        gx = bordered_empty(x.shape, gx_border, dtype)
        gw, gb = FF.conv2d_backward_padded(gz_padded, gz_border, x_padded, w, pad, gx=gx, gx_border=gx_border,
                                           mask=mask if masked else None, mask_border=pad)
        want_gx = ref.relu_backward(rgx, interior(mask, pad, x.shape)) if masked else rgx
        assert_close(interior(gx, gx_border, x.shape), want_gx, dtype, f"gx (masked={masked})")
        _assert_border_zero(gx, gx_border, x.shape, "gx")
        assert_close(gw, rgw, dtype, "gw")
        assert_close(gb, rgb, dtype, "gb")
    if kernel == (3, 3) and pad == (0, 0):  # the whole-plane grad-weight through the 1-bordered copy
        by_1 = bordered_empty(y_shape, (1, 1), dtype)
        FF.copy_interior(by_1, (1, 1), gz_padded, gz_border)
        gw, gb = FF.conv2d_backward_padded(gz_padded, gz_border, x_padded, w, pad, gz_bordered_by_1=by_1)
        assert_close(gw, rgw, dtype, "gw (planes)")
        assert_close(gb, rgb, dtype, "gb (planes)")


@pytest.mark.parametrize("case, dtype", [
    ((16, 10, 4, 4, 10, (3, 3), 1), np.float32),      # Tiny VGG --stride 2's 4x4 layer (a batch of 16)
    ((17, 3, 5, 7, 4, (2, 3), (1, 0)), np.float64),   # odd sizes, a non-square kernel, padding on one axis
])
def test_small_maps_weight_gradient_in_the_lanes_matches_reference(case, dtype, rng):
    """Output rows of up to 7 columns and a batch of 16 or more: the fused backward's
    grad-weight runs with the images in the vector lanes (``conv.lanes_weight_gradient_at_stride_1``)."""
    batch, channels, height, width, filters, kernel, padding = case
    pad = (padding, padding) if isinstance(padding, int) else padding
    x = random_array(rng, (batch, channels, height, width), dtype)
    w = random_array(rng, (filters, channels, *kernel), dtype)
    y_shape = ref.conv2d(x, w, padding=pad).shape
    from numbacnn.kernels.cpu import conv
    assert conv.lanes_weight_gradient_at_stride_1(batch, y_shape[3])
    gz = random_array(rng, y_shape, dtype)
    rgx, rgw, rgb = ref.conv2d_backward(gz, x, w, padding=pad)
    gz_border = (kernel[0] - 1 - pad[0], kernel[1] - 1 - pad[1])
    gx = bordered_empty(x.shape, (1, 1), dtype)
    gw, gb = FF.conv2d_backward_padded(_bordered(gz, gz_border), gz_border, _bordered(x, pad), w, pad, gx=gx,
                                       gx_border=(1, 1))
    assert_close(gw, rgw, dtype, "gw")
    assert_close(gb, rgb, dtype, "gb")
    assert_close(interior(gx, (1, 1), x.shape), rgx, dtype, "gx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 10, 28, 28), (1, 3, 7, 9)])
def test_pool_and_relu_backward_into_borders(shape, dtype, rng):
    y = np.maximum(random_array(rng, shape, dtype), 0)
    y[0, 0, 0, :2] = y[0, 0, 1, :2] = 0.0  # a window whose maximum is 0: no gradient through the ReLU
    pooled, indices = F.max_pool2d(y, 2, return_indices=True)
    gp = random_array(rng, pooled.shape, dtype)
    gz = bordered_empty(shape, (2, 1), dtype)
    FF.max_pool2d_relu_backward_padded(gz, (2, 1), gp, indices, _bordered(pooled, (1, 1)), (1, 1))
    assert_close(interior(gz, (2, 1), shape), ref.relu_backward(ref.max_pool2d_backward(gp, y, 2), y), dtype,
                 "max_pool2d_relu_backward")
    _assert_border_zero(gz, (2, 1), shape, "gz")
    gy = random_array(rng, shape, dtype)
    FF.relu_backward_padded(gz, (2, 1), gy, y)
    assert_close(interior(gz, (2, 1), shape), ref.relu_backward(gy, y), dtype, "relu mask")
    _assert_border_zero(gz, (2, 1), shape, "gz")


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_into_a_border_is_f_relu(dtype, rng):
    """A strided block's ReLU (``bordered.relu_into_border_kernel``, its row width compiled
    in): F.relu's values in the interior, NaN passed, -0.0 made +0.0, the border zero."""
    shape = (3, 2, 5, 14)
    z = random_array(rng, shape, dtype)
    z[0, 0, 0, :3] = [np.nan, -0.0, 0.0]
    out = bordered_empty(shape, (1, 2), dtype)
    FF.relu_padded(z, out, (1, 2))
    got = interior(out, (1, 2), shape)
    np.testing.assert_array_equal(got, F.relu(z))  # NaN equal to NaN here
    assert not np.signbit(got[0, 0, 0, 1]) and np.isnan(got[0, 0, 0, 0])
    _assert_border_zero(out, (1, 2), shape, "out")


def test_nan_reaches_the_fused_outputs():
    """No fast-math flag drops NaN: a NaN input shows in y and in the pooled output."""
    x = np.zeros((1, 4, 6, 6), np.float32)
    x[0, 0, 2, 2] = np.nan
    w = np.ones((4, 4, 3, 3), np.float32)
    y = bordered_empty((1, 4, 6, 6), (0, 0), np.float32)
    pooled = bordered_empty((1, 4, 3, 3), (0, 0), np.float32)
    indices = np.empty((1, 4, 3, 3), np.int64)
    FF.conv2d_relu_padded(_bordered(x, (1, 1)), w, np.zeros(4, np.float32), y, (0, 0), pooled=pooled,
                          indices=indices)
    assert np.isnan(y[0, :, 1:4, 1:4]).all() and np.isnan(pooled[0, :, :2, :2]).all()
    assert not np.isnan(pooled[0, :, 2, 2]).any()


@pytest.mark.parametrize("size", [14, 28])
def test_whole_plane_grad_weight_reads_only_zero_borders_of_the_plane_before(size):
    """weight_bias_gradient_3x3_kernel starts each plane's loop a few elements early, in
    the previous plane's bottom border (zeros), so that it runs whole vectors: a NaN in
    the last interior element of a plane reaches that channel's gradients and no other
    channel's, and the first plane (nothing before it) is summed as the others are."""
    x = np.ones((2, 3, size, size), np.float32)
    x[0, 1, -1, -1] = np.nan  # the last interior element of the plane before channel 2's
    w = np.ones((4, 3, 3, 3), np.float32)
    gz = np.ones((2, 4, size, size), np.float32)
    gw, gb = FF.conv2d_backward_padded(_bordered(gz, (1, 1)), (1, 1), _bordered(x, (1, 1)), w, (1, 1))
    assert np.isnan(gw[:, 1]).any() and not np.isnan(gw[:, [0, 2]]).any() and not np.isnan(gb).any()
    finite = np.nan_to_num(x, nan=1.0)
    _, want, _ = ref.conv2d_backward(gz, finite, w, padding=(1, 1))
    assert_close(gw[:, [0, 2]], want[:, [0, 2]], np.float32, "gw of the channels without the NaN")
