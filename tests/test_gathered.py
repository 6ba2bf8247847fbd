"""kernels/cpu/conv.py's GATHERED variant (the forward of a strided convolution of few
input channels, each image's taps gathered first, and its 3x3 grad-weight:
kernels/cpu/conv_gathered.py) against the float64 reference and the general kernel; the
same layers' backward (GATHERED for 3x3 grad-weights, else LANES, PHASES, the general
kernels) against the reference and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn.functional as F
import reference as ref
from helpers import assert_close, random_array
from numbacnn.kernels.cpu import conv as cpu_conv
from test_gradcheck import assert_gradient, numerical_gradient

# (x shape, filters, kernel, stride, padding)
CASES = {
    "tiny-vgg-conv_1_1": ((5, 1, 28, 28), 10, (3, 3), (2, 2), (1, 1)),   # batch 5: chunks of unequal size
    "rgb-odd-size": ((2, 3, 9, 11), 4, (3, 3), (2, 2), (1, 1)),          # 27 taps, the most that gather
    "5x5-no-padding": ((3, 1, 12, 13), 3, (5, 5), (2, 2), (0, 0)),       # the last input row never read
    "per-axis": ((2, 2, 8, 7), 5, (3, 2), (2, 1), (1, 0)),               # stride 2x1, padding 1x0
    "stride-3-padding-past": ((1, 1, 10, 10), 2, (3, 3), (3, 3), (2, 2)),  # padding 2 of a 3-tap kernel
    "odd-filters-stride-2x3": ((3, 2, 9, 13), 3, (3, 3), (2, 3), (0, 1)),  # the last filter pairs with itself
}


# float64 on one case only: each dtype and shape compiles its own kernels (Tiny VGG's conv1
# in float64: tests/test_kernels_fast_paths.py)
@pytest.mark.parametrize("case, dtype", [(name, np.float32) for name in CASES] + [("per-axis", np.float64)])
def test_gathered_matches_reference_and_general_kernels(case, dtype, rng):
    x_shape, filters, kernel, stride, padding = CASES[case]
    channels = x_shape[1]
    out_h = (x_shape[2] + 2 * padding[0] - kernel[0]) // stride[0] + 1
    out_w = (x_shape[3] + 2 * padding[1] - kernel[1]) // stride[1] + 1
    assert cpu_conv.choose_forward(filters, *kernel, *stride, 1, 1, 1, out_h, channels)[0] == cpu_conv.GATHERED
    weight_variant = cpu_conv.choose_backward_weight(filters, *kernel, *stride, 1, 1, 1, x_shape[0], out_w, channels)[0]
    assert (weight_variant == cpu_conv.GATHERED) == (kernel == (3, 3))
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, (filters, channels, *kernel), dtype)
    b = random_array(rng, (filters,), dtype)
    y = F.conv2d(x, w, b, stride=stride, padding=padding)
    assert_close(y, ref.conv2d(x, w, b, stride=stride, padding=padding), dtype, f"{case} y")
    args = (*stride, *padding, 1, 1, 1)
    general = np.empty_like(y)
    cpu_conv.conv2d_forward_general(general, x, w, b, *args)
    assert_close(y, general, dtype, f"{case} y against the general kernel")
    gy = random_array(rng, y.shape, dtype)
    _, gw, gb = F.conv2d_backward(gy, x, w, stride=stride, padding=padding, input_grad=False)
    _, want_gw, want_gb = ref.conv2d_backward(gy, x, w, stride=stride, padding=padding)
    assert_close(gw, want_gw, dtype, f"{case} gw")
    assert_close(gb, want_gb, dtype, f"{case} gb")
    general_gw = np.empty_like(w)
    cpu_conv.conv2d_backward_weight_general(general_gw, gy, x, *args)
    assert_close(gw, general_gw, dtype, f"{case} gw against the general kernel")


def test_gathered_rule_keeps_many_channels_and_large_kernels_on_phases():
    assert cpu_conv.choose_forward(10, 3, 3, 2, 2, 1, 1, 1, 14, 1)[0] == cpu_conv.GATHERED
    assert cpu_conv.choose_forward(10, 3, 3, 2, 2, 1, 1, 1, 14, 4)[0] == cpu_conv.PHASES  # 4 channels
    assert cpu_conv.choose_forward(10, 7, 7, 2, 2, 1, 1, 1, 14, 1)[0] == cpu_conv.PHASES  # 49 taps
    assert cpu_conv.choose_forward(10, 3, 3, 1, 1, 1, 1, 1, 14, 1)[0] == cpu_conv.FAST  # stride 1
    assert cpu_conv.choose_forward(10, 3, 3, 2, 2, 2, 2, 1, 14, 1)[0] == cpu_conv.GENERAL  # dilation


def test_gathered_nan_reaches_exactly_the_outputs_that_read_it():
    """Only real taps are multiplied (the padding is gathered as zeros, no zero taps past
    the kernel): a NaN pixel makes NaN exactly where the definition does."""
    x = np.ones((2, 1, 9, 9), np.float32)
    x[1, 0, 4, 3] = np.nan
    w = np.ones((4, 1, 3, 3), np.float32)
    b = np.zeros(4, np.float32)
    y = F.conv2d(x, w, b, stride=2, padding=1)
    want = np.empty_like(y)
    cpu_conv.conv2d_forward_general(want, x, w, b, 2, 2, 1, 1, 1, 1, 1)
    assert np.isnan(want).any() and np.array_equal(np.isnan(y), np.isnan(want))


def test_gathered_weight_gradient_nan_reaches_exactly_the_taps_the_reference_makes_nan():
    """A NaN in x or in the output gradient makes NaN exactly in the weight gradient
    entries the float64 reference (and PyTorch) makes NaN, and the others stay finite.
    The padding is gathered as zeros and multiplied, as the reference's zero-padded
    input is: a NaN gradient at an output position beside the border reaches the taps
    that read the padding there (NaN * 0), where the general kernel, which skips padded
    taps, leaves them finite."""
    x = np.ones((3, 1, 9, 9), np.float32)
    x[1, 0, 0, 5] = np.nan  # row 0, column 5: kernel row 1 only (padding 1, stride 2), taps (1, 0) and (1, 2)
    w = np.ones((4, 1, 3, 3), np.float32)
    gy = np.ones((3, 4, 5, 5), np.float32)
    gy[2, 3, 4, 4] = np.nan  # one filter's gradient, at the last output position (its bottom-right taps: padding)
    assert cpu_conv.choose_backward_weight(4, 3, 3, 2, 2, 1, 1, 1, 3, 5, 1)[0] == cpu_conv.GATHERED
    _, gw, _ = F.conv2d_backward(gy, x, w, stride=2, padding=1, input_grad=False)
    _, want, _ = ref.conv2d_backward(gy, x, w, stride=2, padding=1)
    assert np.isnan(want).any() and not np.isnan(want).all()
    assert np.array_equal(np.isnan(gw), np.isnan(want))
    assert_close(np.where(np.isnan(gw), 0, gw), np.where(np.isnan(want), 0, want), np.float32, "finite entries")


def test_gathered_layer_gradients_match_finite_differences(rng):
    x = rng.standard_normal((3, 2, 7, 8))
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    hyper = dict(stride=2, padding=1)
    gy = rng.standard_normal(F.conv2d(x, w, b, **hyper).shape)
    loss = lambda: float(np.sum(gy * F.conv2d(x, w, b, **hyper)))  # noqa: E731
    _, gw, _ = F.conv2d_backward(gy, x, w, input_grad=False, **hyper)
    assert_gradient(gw, numerical_gradient(loss, w), "gw")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gathered_forward_with_relu_writes_the_next_blocks_bordered_input(dtype, rng):
    """The fused wing's strided block without batch norm or pool
    (``bordered_ops.strided_conv2d_relu_padded``): the gathered kernel writes relu(conv)
    into the interior of a bordered buffer (a NaN passes, -0.0 becomes +0.0), the border
    untouched."""
    from numbacnn.fused import bordered_ops

    x = random_array(rng, (5, 1, 28, 28), dtype)
    x[2, 0, 10, 11] = np.nan
    w = random_array(rng, (10, 1, 3, 3), dtype)
    b = random_array(rng, (10,), dtype)
    b[3] = -100.0  # a filter whose outputs are all negative: zeros
    x[4] = 0.0  # image 4, filter 5: every product 0 * w, plus b = -0.0: outputs -0.0, ReLU'd to +0.0
    w[5] = -np.abs(w[5])
    b[5] = -0.0
    x_padded = np.zeros((5, 1, 30, 30), dtype)
    x_padded[:, :, 1:29, 1:29] = x
    out = np.full((5, 10, 16, 18), 5.0, dtype)
    out[:, :, 1:15, 2:16] = np.nan  # stale values: every interior element must be written
    z = np.empty((5, 10, 14, 14), dtype)
    bordered_ops.strided_conv2d_relu_padded(x_padded, w, b, z, out, (1, 2), (2, 2))
    want = ref.relu(ref.conv2d(x, w, b, stride=2, padding=1))
    assert_close(out[:, :, 1:15, 2:16], want, dtype, "relu(conv)")
    assert not np.signbit(out[:, 3, 1:15, 2:16]).any()  # relu(negative) is +0.0
    assert not np.signbit(out[4, 5, 1:15, 2:16]).any()  # relu(-0.0) is +0.0
    border = np.ones(out.shape, bool)
    border[:, :, 1:15, 2:16] = False
    assert (out[border] == 5.0).all()
