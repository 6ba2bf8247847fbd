"""kernels/cpu/conv.py's LANES variant (strided convolutions with the images in the vector
lanes: kernels/cpu/conv_lanes.py), forward, grad-input and grad-weight, against the float64
reference, the general (definition) kernels, and PHASES, which the same shapes take at a
smaller batch. More grad-weight tests: test_small_maps.py (shapes, float64),
test_strided_phases.py (the cancelling gradient of test_float64_partial_sums, and
``numbacnn info --kernels`` naming the three LANES kernels that run)."""

import numpy as np
import pytest

import numbacnn.functional as F
import reference as ref
from helpers import assert_close, random_array
from numbacnn.kernels.cpu import conv as cpu_conv
from numbacnn.kernels.cpu import conv_lanes

# (batch, channels, filters, (H, W), (KH, KW), (SH, SW), (pad_h, pad_w))
CASES = {
    "tiny-vgg-conv_2_1": (64, 10, 10, (7, 7), (3, 3), (2, 2), (1, 1)),
    "odd-batch-and-filters": (17, 4, 5, (9, 8), (3, 3), (2, 2), (0, 1)),  # a filter block of 1, a partial vector
    "5x5-stride-2": (16, 4, 6, (11, 10), (5, 5), (2, 2), (2, 1)),
    "7x7-stride-2-pad-6": (16, 4, 4, (8, 9), (7, 7), (2, 2), (6, 3)),  # padding K - 1: rows of zeros only
    "2x5-stride-2x3": (16, 4, 4, (9, 14), (2, 5), (2, 3), (1, 2)),
    "stride-3": (16, 4, 4, (10, 11), (3, 3), (3, 3), (1, 0)),
}
FLOAT32_CASES = ["tiny-vgg-conv_2_1", "odd-batch-and-filters"]


def _out_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


@pytest.mark.parametrize("dtype, case", [(np.float32 if name in FLOAT32_CASES else np.float64, name)
                                         for name in CASES])
def test_lanes_match_reference_general_and_phases(case, dtype, rng):
    batch, channels, filters, size, kernel, stride, pad = CASES[case]
    out = tuple(_out_size(*a) for a in zip(size, kernel, stride, pad))
    assert cpu_conv.choose_forward(filters, *kernel, *stride, 1, 1, 1, out[0], channels, batch, out[1])[0] \
        == cpu_conv.LANES
    assert cpu_conv.choose_backward_input(channels, *kernel, *stride, *pad, 1, 1, 1, size[0], batch, out[1])[0] \
        == cpu_conv.LANES
    assert cpu_conv.choose_backward_weight(filters, *kernel, *stride, 1, 1, 1, batch, out[1],
                                           channels)[0] == cpu_conv.LANES
    x = random_array(rng, (batch, channels, *size), dtype)
    w = random_array(rng, (filters, channels, *kernel), dtype)
    b = random_array(rng, (filters,), dtype)
    hyper = dict(stride=stride, padding=pad)
    y = F.conv2d(x, w, b, **hyper)
    assert y.shape == (batch, filters, *out)
    assert_close(y, ref.conv2d(x, w, b, **hyper), dtype, f"y ({case})")
    general = np.empty_like(y)
    cpu_conv.conv2d_forward_general(general, x, w, b, *stride, *pad, 1, 1, 1)
    assert_close(y, general, dtype, f"y against the general kernel ({case})")
    gy = random_array(rng, y.shape, dtype)
    gx, gw, _ = F.conv2d_backward(gy, x, w, **hyper)
    rgx, rgw, _ = ref.conv2d_backward(gy, x, w, **hyper)
    assert_close(gx, rgx, dtype, f"gx ({case})")
    assert_close(gw, rgw, dtype, f"gw ({case})")
    general_gx = np.full_like(x, np.nan)
    cpu_conv.conv2d_backward_input_general(general_gx, gy, w, *stride, *pad, 1, 1, 1)
    assert_close(gx, general_gx, dtype, f"gx against the general kernel ({case})")
    general_gw = np.full_like(w, np.nan)
    cpu_conv.conv2d_backward_weight_general(general_gw, gy, x, *stride, *pad, 1, 1, 1)
    assert_close(gw, general_gw, dtype, f"gw against the general kernel ({case})")
    # PHASES, which a batch below LANES_MIN_BATCH takes, on the first images
    few = cpu_conv.LANES_MIN_BATCH - 1
    assert cpu_conv.choose_forward(filters, *kernel, *stride, 1, 1, 1, out[0], channels, few, out[1])[0] \
        == cpu_conv.PHASES
    assert_close(F.conv2d(x[:few], w, b, **hyper), y[:few].astype(np.float64), dtype, f"y against PHASES ({case})")
    gx_phases, _, _ = F.conv2d_backward(gy[:few], x[:few], w, **hyper)
    assert_close(gx_phases, gx[:few].astype(np.float64), dtype, f"gx against PHASES ({case})")


def test_every_element_of_the_outputs_is_written(rng):
    """The backend functions fill whole outputs (forward, grad-input, grad-weight) that
    start as NaN (no element left to the caller's zeros)."""
    batch, channels, filters, size, kernel, stride, pad = CASES["tiny-vgg-conv_2_1"]
    x = random_array(rng, (batch, channels, *size), np.float32)
    w = random_array(rng, (filters, channels, *kernel), np.float32)
    y = np.full((batch, filters, 4, 4), np.nan, np.float32)
    cpu_conv.conv2d_forward(y, x, w, np.zeros(filters, np.float32), *stride, *pad, 1, 1, 1)
    gx = np.full(x.shape, np.nan, np.float32)
    cpu_conv.conv2d_backward_input(gx, y, w, *stride, *pad, 1, 1, 1)
    gw = np.full(w.shape, np.nan, np.float32)
    cpu_conv.conv2d_backward_weight(gw, y, x, *stride, *pad, 1, 1, 1)
    assert np.isfinite(y).all() and np.isfinite(gx).all() and np.isfinite(gw).all()


def test_nan_reaches_only_its_own_image(rng):
    """A NaN in one image reaches the outputs (forward) and input gradients (backward)
    that read it, and nothing of another image: each image is its own vector lane."""
    batch, channels, filters, size, kernel, stride, pad = CASES["tiny-vgg-conv_2_1"]
    x = random_array(rng, (batch, channels, *size), np.float32)
    x[5, 3, 2, 4] = np.nan
    w = random_array(rng, (filters, channels, *kernel), np.float32)
    y = F.conv2d(x, w, None, stride=stride, padding=pad)
    expected = np.isnan(ref.conv2d(x, w, None, stride=stride, padding=pad))
    assert expected.any() and np.isnan(y[expected]).all()
    assert not np.isnan(np.delete(y, 5, axis=0)).any()
    gy = random_array(rng, y.shape, np.float32)
    gy[9, 2, 1, 1] = np.nan
    gx, _, _ = F.conv2d_backward(gy, np.nan_to_num(x), w, stride=stride, padding=pad)
    assert np.isnan(gx[9]).any() and not np.isnan(np.delete(gx, 9, axis=0)).any()


def test_phase_split_puts_each_tap_in_its_phase(rng):
    w = rng.standard_normal((3, 2, 5, 4))
    split = conv_lanes.phase_split(w, 2, 3)  # (2, 3, C, F, 3, 2)
    assert split.shape == (2, 3, 2, 3, 3, 2)
    for f in range(3):
        for c in range(2):
            for kh in range(5):
                for kw in range(4):
                    assert split[kh % 2, kw % 3, c, f, kh // 2, kw // 3] == w[f, c, kh, kw]
    assert np.count_nonzero(split) == w.size  # the taps past the kernel are zero
