"""kernels/cpu/conv.py's PHASES variant (strided convolutions as the stride-1 fast
kernels over the input's phases, images packed side by side: kernels/cpu/conv_phases.py)
and LANES (a strided grad-weight with the images in the vector lanes: conv_lanes.py)
against the float64 reference, the general (definition) kernels and finite differences.

Each case keeps its output size fixed while the padding runs over the stride's smallest
paddings and the widest, K - 1 (every padding modulo the stride, with no border and
with the widest) and the input size
over even and odd (every size with that output): the packed layout, and so the row
kernels compiled for it, depend on the output size only, so each case compiles them
once per dtype; each padding compiles its own phase copies (pack and merge).

Each case runs in one dtype (each (case, dtype) compiles its own 11 to 29 kernels, and
CI time is budgeted): float32 for Tiny VGG's two strided layers (the dtype they train
in; its 16-float vectors compute 128 columns of conv_1_1's 120-column packed rows, 8
doubles exactly 120) and for stride (2, 1); float64 for the others, whose 1e-10 bar
sees a sum kept in a narrower type anywhere in the PHASES path (rows and planes
correlations, row and plane grad-weights). The float64 LANES grad-weight is
test_small_maps.py's (2x5-stride-2x3 in float64, and the finite differences on Tiny
VGG's conv_2_1 geometry, batch 16). 7x7 at stride 2 (with padding K - 1) runs PHASES
in tests/test_conv_lanes.py, compared with LANES and the reference there; which kernels
Tiny VGG's strided layers list and run at batch 16 is tests/test_kernel_choices.py's
stride2-batch16 case (both were here too: 71 s of CI, 2026-12-07).
"""

import numpy as np
import pytest

import numbacnn.functional as F
import reference as ref
from helpers import assert_close, random_array
from numbacnn.kernels.cpu import conv as cpu_conv
from numbacnn.kernels.cpu import conv_phases
from test_float64_partial_sums import _check_reduction, cancelling_gradient
from test_gradcheck import assert_gradient, numerical_gradient

# (batch, channels, filters, (KH, KW), (SH, SW), (OH, OW))
CASES = {
    "tiny-vgg-conv_2_1": (15, 10, 10, (3, 3), (2, 2), (4, 4)),  # 25 images a packed row: one packed, 10 empty slots
    "tiny-vgg-conv_1_1": (9, 4, 10, (3, 3), (2, 2), (14, 14)),  # 8 images a packed row
    "5x5": (2, 4, 6, (5, 5), (2, 2), (5, 3)),
    "2x2-even": (3, 5, 4, (2, 2), (2, 2), (3, 3)),  # one tap per phase: exactly the stride-2 work
    "stride-2x1": (2, 4, 5, (3, 3), (2, 1), (4, 5)),
    "stride-1x2-3x5": (2, 4, 4, (3, 5), (1, 2), (3, 4)),
    "stride-3": (2, 4, 4, (5, 5), (3, 3), (3, 2)),
}
FLOAT32_CASES = ["tiny-vgg-conv_2_1", "tiny-vgg-conv_1_1", "stride-2x1"]  # the others in float64


def _input_size(out, kernel, stride, pad, extra):
    """An input size whose strided output is ``out``: the smallest, plus ``extra`` < stride."""
    return (out - 1) * stride + kernel - 2 * pad + extra


def _paddings(kernel, stride):
    """The paddings p (per axis min(p, K - 1)) a case tries, K and S the largest kernel
    size and stride over the axes: the S smallest (0 .. S - 1: every padding modulo the
    stride, the phase each padded row and column lands in, and 0, no border) and the
    widest, K - 1. Each padding compiles its own phase copies (pack and merge: about 5 s
    of CI), so 7x7 at stride 2 tries 0, 1, 6, 5x5 0, 1, 4 and 5x5 at stride 3 0, 1, 2, 4
    (before: the S largest too, 7x7 0, 1, 5, 6)."""
    largest, step = max(kernel), max(stride)
    return [p for p in range(largest) if p < step or p == largest - 1]


def _geometries(kernel, stride, out):
    """(padding, (H, W)) pairs: each padding of :func:`_paddings` once, on the smallest
    input or (on strided axes) one more row / column, alternately, so that both sizes
    are tried. (Both for every padding compiled twice the per-layer copy kernels, and
    CI time is budgeted.)"""
    for p in _paddings(kernel, stride):
        pad = (min(p, kernel[0] - 1), min(p, kernel[1] - 1))
        for extra in ((p % 2, 1 - p % 2) if max(stride) > 1 else (0,)):
            size = tuple(_input_size(o, k, s, q, extra % s) for o, k, s, q in zip(out, kernel, stride, pad))
            if min(size) >= 1:
                yield pad, size
                break


def _general_gradients(gy, x, w, stride, pad):
    args = (*stride, *pad, 1, 1, 1)
    gx, gw = np.empty_like(x), np.empty_like(w)
    cpu_conv.conv2d_backward_input_general(gx, gy, w, *args)
    cpu_conv.conv2d_backward_weight_general(gw, gy, x, *args)
    return gx, gw


@pytest.mark.parametrize("dtype, case", [(np.float32 if name in FLOAT32_CASES else np.float64, name)
                                         for name in CASES])
def test_phases_match_reference_and_general_kernels(case, dtype, rng):
    batch, channels, filters, kernel, stride, out = CASES[case]
    # a batch of LANES_MIN_BATCH or more takes LANES (tests/test_conv_lanes.py): these run PHASES
    assert batch < cpu_conv.LANES_MIN_BATCH
    assert cpu_conv.choose_forward(filters, *kernel, *stride, 1, 1, 1, out[0], None, batch, out[1])[0] == cpu_conv.PHASES
    assert cpu_conv.choose_backward_weight(filters, *kernel, *stride, 1, 1, 1, batch, out[1],
                                           channels)[0] == cpu_conv.PHASES
    w = random_array(rng, (filters, channels, *kernel), dtype)
    b = random_array(rng, (filters,), dtype)
    tried = 0
    for pad, (height, width) in _geometries(kernel, stride, out):
        assert (cpu_conv.choose_backward_input(channels, *kernel, *stride, *pad, 1, 1, 1, height, batch, out[1])[0]
                == cpu_conv.PHASES)
        where = f"{case}, padding {pad}, input {height}x{width}"
        x = random_array(rng, (batch, channels, height, width), dtype)
        y = F.conv2d(x, w, b, stride=stride, padding=pad)
        assert y.shape == (batch, filters, *out), where
        assert_close(y, ref.conv2d(x, w, b, stride=stride, padding=pad), dtype, f"y ({where})")
        general = np.empty_like(y)
        cpu_conv.conv2d_forward_general(general, x, w, b, *stride, *pad, 1, 1, 1)
        assert_close(y, general, dtype, f"y against the general kernel ({where})")

        gy = random_array(rng, y.shape, dtype)
        gx, gw, gb = F.conv2d_backward(gy, x, w, stride=stride, padding=pad)
        rgx, rgw, rgb = ref.conv2d_backward(gy, x, w, stride=stride, padding=pad)
        assert_close(gx, rgx, dtype, f"gx ({where})")
        assert_close(gw, rgw, dtype, f"gw ({where})")
        assert_close(gb, rgb, dtype, f"gb ({where})")
        general_gx, general_gw = _general_gradients(gy, x, w, stride, pad)
        assert_close(gx, general_gx, dtype, f"gx against the general kernel ({where})")
        assert_close(gw, general_gw, dtype, f"gw against the general kernel ({where})")
        tried += 1
    assert tried == len(_paddings(kernel, stride))  # every padding tried, on one input size


def test_phases_gradients_match_finite_differences(rng):
    x = rng.standard_normal((2, 4, 7, 8))
    w = rng.standard_normal((4, 4, 3, 3))
    b = rng.standard_normal(4)
    hyper = dict(stride=2, padding=1)
    assert cpu_conv.choose_backward_input(4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 7)[0] == cpu_conv.PHASES
    gy = rng.standard_normal(F.conv2d(x, w, b, **hyper).shape)
    loss = lambda: float(np.sum(gy * F.conv2d(x, w, b, **hyper)))  # noqa: E731
    gx, gw, gb = F.conv2d_backward(gy, x, w, **hyper)
    assert_gradient(gx, numerical_gradient(loss, x), "gx")
    assert_gradient(gw, numerical_gradient(loss, w), "gw")
    assert_gradient(gb, numerical_gradient(loss, b), "gb")


def test_nan_in_the_input_reaches_the_output(rng):
    """A NaN reaches every output that reads it (and, through the zero phase taps past
    the kernel, 0 * NaN, possibly a neighbour: see conv_phases.py), never another image."""
    x = rng.standard_normal((2, 4, 9, 9))
    x[1, 2, 4, 5] = np.nan
    w = rng.standard_normal((4, 4, 3, 3))
    y = F.conv2d(x, w, None, stride=2, padding=1)
    expected = np.isnan(ref.conv2d(x, w, None, stride=2, padding=1))
    assert expected.any() and np.isnan(y[expected]).all()
    assert not np.isnan(y[0]).any()


def test_other_strides_and_shapes_take_other_variants():
    assert cpu_conv.choose_forward(10, 3, 3, 5, 5, 1, 1, 1, 4)[0] == cpu_conv.GENERAL  # beyond MAX_PHASE_STRIDE
    assert cpu_conv.choose_forward(10, 3, 3, 2, 2, 2, 2, 1, 4)[0] == cpu_conv.GENERAL  # dilation
    assert cpu_conv.choose_forward(3, 3, 3, 2, 2, 1, 1, 1, 4)[0] == cpu_conv.GENERAL  # few filters
    assert cpu_conv.choose_forward(10, 3, 3, 2, 2, 1, 1, 1, 1)[0] == cpu_conv.GENERAL  # one output row
    assert cpu_conv.choose_backward_input(10, 2, 2, 2, 2, 0, 0, 1, 1, 1, 3)[0] == cpu_conv.GENERAL  # one phase row
    assert cpu_conv.choose_forward(10, 3, 3, 1, 1, 1, 1, 1, 4)[0] == cpu_conv.FAST
    why = cpu_conv.choose_forward(10, 3, 3, 2, 2, 1, 1, 1, 14)[1]
    assert "4 phases" in why and "2x2 phase kernels" in why and "1.78x" in why


def test_phase_weights_round_trip(rng):
    """phase_weights splits every tap out exactly once (zeros past the kernel) and
    merge_phase_weights puts each back."""
    w = rng.standard_normal((3, 2, 5, 3))
    split = conv_phases.phase_weights(w, 2, 3)
    assert split.shape == (3, 2 * 3 * 2, 3, 1)
    assert np.isclose(np.sort(split[split != 0]), np.sort(w.ravel())).all()
    back = np.empty_like(w)
    conv_phases.merge_phase_weights(back, split, 2, 3)
    assert (back == w).all()


def test_lanes_grad_weight_sums_rows_in_float64():
    """LANES sums each image's output row in float32, then rows and images in float64:
    test_float64_partial_sums' cancelling gradient (big rows cancel, small rows hold
    the answer) loses the small rows to any float32 sum across rows or images."""
    rng = np.random.default_rng(29)
    # 4 input channels: with 3 or fewer a 3x3 grad-weight gathers its taps (GATHERED, whole planes)
    x_shape, filters, kernel, stride, padding = (16, 4, 15, 9), 4, (3, 3), (2, 2), (0, 0)
    x = np.ones(x_shape, np.float32)
    w = np.full((filters, x_shape[1]) + kernel, 0.125, np.float32)
    out_shape = F.conv2d(x, w, stride=stride, padding=padding).shape
    assert cpu_conv.choose_backward_weight(filters, *kernel, *stride, 1, 1, 1, out_shape[0],
                                           out_shape[3], x_shape[1])[0] == cpu_conv.LANES
    gy = cancelling_gradient(rng, out_shape, kernel, padding, stride, (1, 1), x_shape[2:])
    _, gw, gb = F.conv2d_backward(gy, x, w, stride=stride, padding=padding)
    _check_reduction(gw, gb, gy, x, w.shape, stride=stride, padding=padding, dilation=(1, 1))
