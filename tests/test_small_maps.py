"""The copies and kernels that strided convolutions on small maps run through
(kernels/cpu/conv_phases.py's pack / merge kernels, compiled per layer with strides
and padding, and conv_lanes.py's grad-weight with a kernel row's taps in one pass)
against readable NumPy definitions, the general kernels, the float64 reference and
finite differences.

Every output array starts filled with NaN, so an element a kernel forgets to write
fails the comparison. The shapes are few (each compiles its own copy kernels).
"""

import numpy as np
import pytest

import numbacnn.functional as F
import reference as ref
from helpers import assert_close, random_array
from numbacnn.kernels.cpu import conv as cpu_conv
from numbacnn.kernels.cpu import conv_phases
from test_gradcheck import assert_gradient, numerical_gradient

# (batch, channels, (H, W), (KH, KW), (SH, SW), (pad_h, pad_w))
COPY_CASES = {
    "tiny-vgg-conv_1_1": (9, 1, (28, 28), (3, 3), (2, 2), (1, 1)),   # 8 images a packed row, one left over
    "tiny-vgg-conv_2_1": (27, 3, (7, 7), (3, 3), (2, 2), (1, 1)),    # 25 images a row, 2 packed rows
    "odd-no-padding": (3, 2, (9, 8), (3, 3), (2, 2), (0, 0)),
    "stride-3x2-pad-2x0": (2, 2, (10, 7), (5, 3), (3, 2), (2, 0)),
}


def _phases_definition(x, kernel, stride, pad, out_shape):
    """The packed phases written out from conv_phases.py's formula with np.pad and
    strided slices: packed[g, (a * SW + b) * C + c, i, j * PW + q] =
    xp[g * G + j, c, i * SH + a, q * SW + b], xp zero-padded on every side."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    layout = conv_phases.phase_layout(x.shape[0], *out_shape, kh, kw, sh, sw)
    batch, channels = x.shape[:2]
    rows, cols = layout.phase_height * sh, layout.slot_width * sw
    xp = np.zeros((layout.packed_batch * layout.group, channels, max(rows, x.shape[2] + ph),
                   max(cols, x.shape[3] + pw)), x.dtype)
    xp[:batch, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
    packed = np.zeros((layout.packed_batch, sh * sw * channels, layout.phase_height, layout.packed_width), x.dtype)
    for n in range(batch):
        g, j = divmod(n, layout.group)
        for a in range(sh):
            for b in range(sw):
                phase = xp[n, :, a:rows:sh, b:cols:sw]  # (C, PH, PW)
                packed[g, (a * sw + b) * channels:(a * sw + b + 1) * channels, :,
                       j * layout.slot_width:(j + 1) * layout.slot_width] = phase
    return layout, packed


def _out_shape(size, kernel, stride, pad):
    return tuple((s + 2 * p - k) // st + 1 for s, k, st, p in zip(size, kernel, stride, pad))


# float64 on one case each (the copies and sums do not depend on the dtype; each
# (case, dtype) compiles its own kernels, and CI time is budgeted)
@pytest.mark.parametrize("case, dtype", [(case, np.float32) for case in COPY_CASES]
                         + [("stride-3x2-pad-2x0", np.float64)])
def test_pack_and_merge_phases_match_their_definition(case, dtype, rng):
    batch, channels, size, kernel, stride, pad = COPY_CASES[case]
    x = random_array(rng, (batch, channels, *size), dtype)
    out_shape = _out_shape(size, kernel, stride, pad)
    layout, expected = _phases_definition(x, kernel, stride, pad, out_shape)
    packed = np.full(expected.shape, np.nan, dtype)
    conv_phases.pack_phases_kernel(layout.slot_width, layout.group, *stride, *pad)(packed, x)
    assert np.array_equal(packed, expected), case

    # merge is the inverse copy: every input element comes back from its phase, and an
    # element no phase holds (a last row or column no output reads) becomes zero
    dphases = random_array(rng, expected.shape, dtype)
    dx = np.full(x.shape, np.nan, dtype)
    conv_phases.merge_phases_kernel(layout.slot_width, layout.group, *stride, *pad)(dx, dphases)
    marker = np.arange(1, x.size + 1, dtype=np.float64).reshape(x.shape)
    _, where = _phases_definition(marker, kernel, stride, pad, out_shape)  # each element's phase slot
    expected_dx = np.zeros(x.shape, dtype)
    held = where != 0
    expected_dx.reshape(-1)[where[held].astype(np.int64) - 1] = dphases[held]
    assert np.array_equal(dx, expected_dx), case


# (batch, channels, filters, (H, W), (KH, KW), (SH, SW), (pad_h, pad_w)): LANES grad-weight shapes
LANES_CASES = {
    # conv_1_1's 14-column rows (one tap a body); 4 channels: with 1 it gathers (tests/test_gathered.py)
    "14-column-rows": (16, 4, 10, (28, 28), (3, 3), (2, 2), (1, 1)),
    "tiny-vgg-conv_2_1": (20, 10, 10, (7, 7), (3, 3), (2, 2), (1, 1)),  # a batch past one 16-float vector
    "2x5-stride-2x3": (17, 3, 4, (9, 14), (2, 5), (2, 3), (1, 2)),      # KW taps != KH taps
}


@pytest.mark.parametrize("case, dtype", [(case, np.float32) for case in LANES_CASES]
                         + [("2x5-stride-2x3", np.float64)])
def test_lanes_grad_weight_matches_reference_and_general_kernel(case, dtype, rng):
    batch, channels, filters, size, kernel, stride, pad = LANES_CASES[case]
    out_shape = _out_shape(size, kernel, stride, pad)
    assert cpu_conv.choose_backward_weight(filters, *kernel, *stride, 1, 1, 1, batch,
                                           out_shape[1], channels)[0] == cpu_conv.LANES
    x = random_array(rng, (batch, channels, *size), dtype)
    w = random_array(rng, (filters, channels, *kernel), dtype)
    gy = random_array(rng, (batch, filters, *out_shape), dtype)
    gw = np.full(w.shape, np.nan, dtype)
    cpu_conv.conv2d_backward_weight(gw, gy, x, *stride, *pad, 1, 1, 1)
    _, expected, _ = ref.conv2d_backward(gy, x, w, stride=stride, padding=pad)
    assert_close(gw, expected, dtype, f"gw ({case})")
    general = np.empty_like(gw)
    cpu_conv.conv2d_backward_weight_general(general, gy, x, *stride, *pad, 1, 1, 1)
    assert_close(gw, general, dtype, f"gw against the general kernel ({case})")


def test_strided_small_maps_match_finite_differences(rng):
    """A stride-2 layer on a small map with every fast piece on (batch 16): LANES forward,
    grad-input and grad-weight."""
    x = rng.standard_normal((16, 4, 7, 7))
    w = rng.standard_normal((4, 4, 3, 3))
    b = rng.standard_normal(4)
    hyper = dict(stride=2, padding=1)
    assert cpu_conv.choose_forward(4, 3, 3, 2, 2, 1, 1, 1, 4, 4, 16, 4)[0] == cpu_conv.LANES
    assert cpu_conv.choose_backward_input(4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 7, 16, 4)[0] == cpu_conv.LANES
    assert cpu_conv.choose_backward_weight(4, 3, 3, 2, 2, 1, 1, 1, 16, 4, 4)[0] == cpu_conv.LANES
    gy = rng.standard_normal(F.conv2d(x, w, b, **hyper).shape)
    loss = lambda: float(np.sum(gy * F.conv2d(x, w, b, **hyper)))  # noqa: E731
    gx, gw, gb = F.conv2d_backward(gy, x, w, **hyper)
    assert_gradient(gw, numerical_gradient(loss, w), "gw")
    assert_gradient(gb, numerical_gradient(loss, b), "gb")
    few = (slice(0, 2),)  # the input gradient of two images (finite differences cost two forwards an element)
    x_few = x[few].copy()
    loss_few = lambda: float(np.sum(gy[few] * F.conv2d(x_few, w, b, **hyper)))  # noqa: E731
    assert_gradient(gx[few], numerical_gradient(loss_few, x_few), "gx")


# Stride-1 fused ops on small maps, images side by side (kernels/cpu/conv_small_maps.py):
# (batch, channels, H, W, filters, (KH, KW), padding)
SMALL_MAP_CASES = [
    (64, 10, 4, 4, 10, (3, 3), 1),   # Tiny VGG stride 2's conv4: 21 images a row, 4 packed rows
    (23, 4, 6, 3, 6, (3, 3), 1),     # odd width (3-column rows, one pool window a row), 2 packed rows
    (3, 5, 9, 6, 4, (3, 3), 0),      # no padding: 4-column rows, 7 rows
    (5, 4, 5, 2, 4, (3, 3), 1),      # 2-column rows: float64 packs them too
    (4, 4, 8, 8, 4, (3, 3), 1),      # 8-column rows: as rows (half a vector), float32 and float64
]


# float64 packs rows of at most 2 columns: its cases are the 2-column one (packed) and
# the 8-column one (rows)
@pytest.mark.parametrize("case, dtype", [(case, np.float32) for case in SMALL_MAP_CASES]
                         + [(SMALL_MAP_CASES[3], np.float64), (SMALL_MAP_CASES[4], np.float64)],
                         ids=lambda v: "x".join(map(str, v[:5])) if isinstance(v, tuple) else np.dtype(v).name)
def test_small_map_fused_ops_pack_images_and_match_reference(case, dtype, rng):
    """conv2d_relu_padded (plain, pooled, pooled only) and conv2d_backward_padded's
    input gradient (plain, masked, written twice) through the side-by-side path, against
    the float64 reference; test_fusion_kernels' checks of the same ops run on it too."""
    from numbacnn.fused import bordered_ops as FF
    from numbacnn.kernels.cpu import conv_small_maps
    from test_fusion_kernels import (test_bordered_backward_matches_reference,
                                     test_bordered_forward_relu_and_pool_match_reference)

    batch, channels, height, width, filters, kernel, padding = case
    out_width = width + 2 * padding - kernel[1] + 1
    out_height = height + 2 * padding - kernel[0] + 1
    assert conv_small_maps.packs_images(out_width, out_height, batch, np.dtype(dtype).itemsize) == (
        out_width <= (4 if dtype == np.float32 else 2))
    calls = []
    original = conv_small_maps.pack_planes
    conv_small_maps.pack_planes = lambda *args: calls.append(1) or original(*args)
    try:
        test_bordered_forward_relu_and_pool_match_reference(case, dtype, rng)
        test_bordered_backward_matches_reference(case, dtype, rng)
        # the input gradient written twice, into two differently bordered buffers
        from helpers import bordered_copy
        from numbacnn.fused.buffers import bordered_empty, interior
        pad = (padding, padding)
        x = random_array(rng, (batch, channels, height, width), dtype)
        w = random_array(rng, (filters, channels, *kernel), dtype)
        gz = random_array(rng, (batch, filters, out_height, out_width), dtype)
        rgx, _, _ = ref.conv2d_backward(gz, x, w, padding=pad)
        gz_border = (kernel[0] - 1 - padding, kernel[1] - 1 - padding)
        mask = bordered_copy(np.maximum(random_array(rng, x.shape, dtype), 0), pad)
        gx, gx_also = bordered_empty(x.shape, (1, 2), dtype), bordered_empty(x.shape, (1, 1), dtype)
        FF.conv2d_backward_padded(bordered_copy(gz, gz_border), gz_border, bordered_copy(x, pad), w, pad, gx=gx,
                                  gx_border=(1, 2), mask=mask, mask_border=pad, gx_also=gx_also,
                                  gx_also_border=(1, 1))
        want = ref.relu_backward(rgx, interior(mask, pad, x.shape))
        assert_close(interior(gx, (1, 2), x.shape), want, dtype, "gx")
        np.testing.assert_array_equal(interior(gx_also, (1, 1), x.shape), interior(gx, (1, 2), x.shape))
    finally:
        conv_small_maps.pack_planes = original
    assert bool(calls) == conv_small_maps.packs_images(out_width, out_height, batch, np.dtype(dtype).itemsize)
