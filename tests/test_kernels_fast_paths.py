"""The CPU backend's shape-specialised fast paths (kernels/cpu/conv_tuning.py, conv_rows.py and the
2x2 pooling kernels) against the float64 reference, on Tiny VGG's shapes: 64x64x3
images, 10 filters, 3x3 kernels, padding 0 and 1, batch 1 and odd sizes."""

import numpy as np
import pytest

import numbacnn.functional as F
import reference as ref
from helpers import DTYPES, assert_close, random_array
from numbacnn.kernels.cpu.conv_tuning import fast_path_applies

# (batch, in_channels, height, width): Tiny VGG's four conv inputs, an odd batch, odd sizes (odd
# output heights: the forward kernel works on pairs of rows)
CONV_INPUTS = [(1, 3, 64, 64), (3, 10, 62, 62), (1, 10, 30, 30), (2, 10, 28, 28), (1, 10, 13, 17), (5, 3, 7, 5),
               (2, 10, 3, 9), (1, 10, 4, 6)]  # the last two: 1 and 2 output rows at padding 0


def test_tiny_vgg_layers_take_the_fast_path():
    assert fast_path_applies(10, 3, 3, 1, 1, 1, 1, 1)
    assert not fast_path_applies(10, 3, 3, 2, 1, 1, 1, 1)  # stride 2: conv.py's PHASES variant
    assert not fast_path_applies(10, 3, 3, 1, 1, 2, 2, 1)  # dilation 2
    assert not fast_path_applies(10, 3, 3, 1, 1, 1, 1, 2)  # groups 2
    assert not fast_path_applies(3, 3, 3, 1, 1, 1, 1, 1)  # few filters


# 16 filters of 5x5 in float32 only (its float64 compile cost 15 s of CI): the functional
# kernels' blocking (conv_tuning.filter_block_size) does not read the dtype, and float64's
# 5x5 functional kernels run in tests/test_large_kernels.py (6 and 7 filters).
OTHER_FILTERS_PARAMS = [pytest.param(*case, dtype,
                                     id="-".join(map(str, (*case, np.dtype(dtype).name))).replace(" ", ""))
                        for case in [(16, 5, 2), (7, 3, (0, 2)), (4, (1, 3), 1)] for dtype in DTYPES
                        if case[0] != 16 or dtype == np.float32]


@pytest.mark.parametrize("filters, kernel, padding, dtype", OTHER_FILTERS_PARAMS)
def test_other_filter_counts_and_kernels_on_the_fast_path(filters, kernel, padding, dtype, rng):
    kernel_h, kernel_w = (kernel, kernel) if isinstance(kernel, int) else kernel
    assert fast_path_applies(filters, kernel_h, kernel_w, 1, 1, 1, 1, 1)
    x = random_array(rng, (2, 5, 11, 14), dtype)
    w = random_array(rng, (filters, 5, kernel_h, kernel_w), dtype)
    b = random_array(rng, (filters,), dtype)
    y = F.conv2d(x, w, b, padding=padding)
    expected = ref.conv2d(x, w, b, padding=padding)
    assert_close(y, expected, dtype, "conv2d y")
    gy = random_array(rng, expected.shape, dtype)
    for got, want, name in zip(F.conv2d_backward(gy, x, w, padding=padding),
                               ref.conv2d_backward(gy, x, w, padding=padding), ("gx", "gw", "gb")):
        assert_close(got, want, dtype, f"conv2d {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("x_shape", CONV_INPUTS)
def test_fast_conv2d_forward_and_backward_match_reference(x_shape, padding, dtype, rng):
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, (10, x_shape[1], 3, 3), dtype)
    b = random_array(rng, (10,), dtype)
    y = F.conv2d(x, w, b, padding=padding)
    expected = ref.conv2d(x, w, b, padding=padding)
    assert_close(y, expected, dtype, "conv2d y")
    gy = random_array(rng, expected.shape, dtype)
    gx, gw, gb = F.conv2d_backward(gy, x, w, padding=padding)
    rgx, rgw, rgb = ref.conv2d_backward(gy, x, w, padding=padding)
    assert_close(gx, rgx, dtype, "conv2d gx")
    assert_close(gw, rgw, dtype, "conv2d gw")
    assert_close(gb, rgb, dtype, "conv2d gb")


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_conv2d_propagates_nan(dtype, rng):
    x = random_array(rng, (1, 10, 12, 12), dtype)
    x[0, 4, 5, 6] = np.nan
    w = random_array(rng, (10, 10, 3, 3), dtype)
    y = F.conv2d(x, w)
    assert np.isnan(y[0, :, 3:6, 4:7]).all() and np.isnan(y).sum() == 10 * 9
    gy = np.ones_like(y)
    gy[0, :, 0, 0] = np.nan
    gx, gw, gb = F.conv2d_backward(gy, x, w)
    assert np.isnan(gx[0, :, 0:3, 0:3]).all() and np.isnan(gx).sum() == 10 * 9
    assert np.isnan(gw).all() and np.isnan(gb).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(1, 10, 60, 60), (3, 10, 26, 26), (2, 10, 13, 13), (1, 3, 7, 8)])
def test_fast_max_pool2x2_matches_reference(x_shape, dtype, rng):
    x = random_array(rng, x_shape, dtype)
    x[0, 0, :2, :2] = 1.5  # ties: the gradient goes to the first maximum
    x[-1, -1, 1, 1] = np.nan
    y = F.max_pool2d(x, 2)
    assert_close(y, ref.max_pool2d(x, 2), dtype, "max_pool2d y")
    gy = random_array(rng, y.shape, dtype)
    assert_close(F.max_pool2d_backward(gy, x, 2), ref.max_pool2d_backward(gy, x, 2), dtype, "max_pool2d gx")


STRIDED_CASES = [
    ((2, 1, 28, 28), 10, 3, 2, 1),        # Tiny VGG --stride 2, conv_1_1 (grad-input: too few channels)
    ((3, 10, 7, 7), 10, 3, 2, 1),         # conv_2_1: 7 -> 4, the last stride reads padding only
    ((2, 6, 8, 8), 4, 3, 2, 0),           # no padding: the last input row is never read
    ((1, 5, 9, 8), 5, 3, (2, 1), (1, 0)), # per-axis stride and padding
    ((2, 4, 11, 10), 6, 5, 2, 2),         # 5x5, odd sizes
    ((1, 4, 8, 9), 4, (3, 5), (1, 2), (1, 2)),
]
# Each (case, dtype) compiles its own PHASES kernels (10-17 s of CI). The packed layout
# (conv_phases.phase_layout) does not depend on the dtype, and every case's packed rows are
# 8 or more vectors in both dtypes, with the same conv_tuning.row_blocking, so the last
# four cases run in one dtype; the other keeps PHASES on that geometry in
# tests/test_strided_phases.py, which runs every case over its paddings, both input-size
# parities, against the reference and the general kernels:
# - no padding (2, 6, 8, 8): float32; float64's padding 0 is every float64 case there;
# - per-axis stride (2, 1) with padding (1, 0), batch 1: float64; float32's stride (2, 1)
#   is "stride-2x1" there;
# - 5x5 at stride 2, odd sizes: float32; float64's is "5x5" there;
# - (3, 5) at stride (1, 2): float32; float64's is "stride-1x2-3x5" there.
# Both dtypes for Tiny VGG's two layers (conv_1_1 in float64 is also the GATHERED forward's
# float64 case: tests/test_gathered.py).
STRIDED_ONE_DTYPE = {2: np.float32, 3: np.float64, 4: np.float32, 5: np.float32}
STRIDED_PARAMS = [pytest.param(*case, dtype, id=f"shape{i}-{np.dtype(dtype).name}")
                  for i, case in enumerate(STRIDED_CASES) for dtype in DTYPES
                  if STRIDED_ONE_DTYPE.get(i, dtype) == dtype]


@pytest.mark.parametrize("shape, filters, kernel, stride, padding, dtype", STRIDED_PARAMS)
def test_strided_convolutions_take_the_phases_fast_kernels(shape, filters, kernel, stride, padding, dtype, rng):
    """kernels/cpu/conv.py's PHASES variant (the stride-1 rows kernel over the input's
    phases; more in tests/test_strided_phases.py) against the float64 reference and the
    general strided kernels."""
    from numbacnn.kernels.cpu import conv as cpu_conv

    kernel_h, kernel_w = (kernel, kernel) if isinstance(kernel, int) else kernel
    stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
    pad_h, pad_w = (padding, padding) if isinstance(padding, int) else padding
    # a first layer's few channels gather their taps instead (tests/test_gathered.py holds that variant)
    expected = (cpu_conv.GATHERED if cpu_conv.gathered_path_applies(shape[1], kernel_h, kernel_w, stride_h, stride_w,
                                                                    1, 1, 1) else cpu_conv.PHASES)
    assert cpu_conv.choose_forward(filters, kernel_h, kernel_w, stride_h, stride_w, 1, 1, 1, 2, shape[1])[0] == expected
    x = random_array(rng, shape, dtype)
    w = random_array(rng, (filters, shape[1], kernel_h, kernel_w), dtype)
    b = random_array(rng, (filters,), dtype)
    y = F.conv2d(x, w, b, stride=stride, padding=padding)
    assert_close(y, ref.conv2d(x, w, b, stride=stride, padding=padding), dtype, "conv2d y")
    general = np.empty_like(y)
    args = (stride_h, stride_w, pad_h, pad_w, 1, 1, 1)
    cpu_conv.conv2d_forward_general(general, x, w, b, *args)
    assert_close(y, general, dtype, "y against the general kernel")
    gy = random_array(rng, y.shape, dtype)
    for got, want, name in zip(F.conv2d_backward(gy, x, w, stride=stride, padding=padding),
                               ref.conv2d_backward(gy, x, w, stride=stride, padding=padding), ("gx", "gw", "gb")):
        assert_close(got, want, dtype, name)
