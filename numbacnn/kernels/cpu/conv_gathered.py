"""Strided convolutions of few input channels with each image's taps gathered first:
``conv.py``'s ``GATHERED`` variant of the forward (it says when it runs and what it is
tested against; the definition is ``conv.conv2d_forward_general``).

A network's first layer reads 1 to 3 channels. Strided (Tiny VGG's ``--stride 2``:
1x28x28 -> 10x14x14), it has short output rows and few multiply-adds per input value,
and the phases (``conv_phases.py``) cost as much in packing and unpacking as in
arithmetic. Here the T = C * KH * KW taps of one image are copied once into a small
matrix (im2col), one row per tap, one column per output position::

    taps[t, p] = xp[c, oh * SH + kh, ow * SW + kw]      t = (c * KH + kh) * KW + kw,  p = oh * OW + ow

with ``xp`` the input zero-padded by (pad_h, pad_w) (zero outside x). Then, for each
image, ``out[f, p] = b[f] + sum over t of w[f, t] * taps[t, p]``: for each filter and
kernel row, one multiply-add of its KW taps along the whole output plane (OH * OW
consecutive values), which vectorises whatever the stride; the strided reads happen
once per tap and output position, in the gather (T * OH * OW copies against
F * T * OH * OW multiply-adds). The taps matrix is T * OH * OW values (Tiny VGG's
conv1: 9 x 196 floats, 7 KB), kept per task in the core's cache.

The weight gradient is not gathered: its dot products along the plane, in float32, sum
several output rows in the data's type (tests/test_float64_partial_sums.py's cancelling
gradients caught it), and in float64 they ran no faster than LANES (0.24 against 0.21
ms, Tiny VGG's conv1, one thread, measured).

Shapes: x (N, C, H, W); w (F, C, KH, KW); out (N, F, OH, OW), C-contiguous.
"""

from functools import lru_cache

import numpy as np
from numba import njit, prange

from numbacnn.kernels.common import FASTMATH
from numbacnn.kernels.cpu.conv_tuning import BUILT_KERNELS


@njit(inline="always")
def _gather_taps(taps, padded, x, n, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_height,
                 out_width):
    """taps (C * KH * KW, OH * OW) = image n's taps (module docstring). ``padded``
    (C, HP, WP), HP = (OH - 1) * SH + KH and WP likewise, is scratch: image n
    zero-padded first (the part the taps read), so that each tap's copy has no
    bounds to test. Every element of taps written. Inlined into
    :func:`gathered_forward_kernel`'s kernel, where the sizes are compile-time
    constants. (It lives here, not in the factory: a kernel whose closure holds
    another jitted function gets a new disk-cache key in every process, and was
    compiled again at every start.)"""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    padded_h, padded_w = padded.shape[1], padded.shape[2]
    first_col = min(pad_w, padded_w)
    end_col = max(first_col, min(padded_w, width + pad_w))
    zero = padded.dtype.type(0)
    for c in range(channels):
        for r in range(padded_h):
            ih = r - pad_h
            if ih < 0 or ih >= height:
                for q in range(padded_w):
                    padded[c, r, q] = zero
                continue
            for q in range(first_col):
                padded[c, r, q] = zero
            for q in range(first_col, end_col):
                padded[c, r, q] = x[n, c, ih, q - pad_w]
            for q in range(end_col, padded_w):
                padded[c, r, q] = zero
    for c in range(channels):
        for kh in range(kernel_h):
            for kw in range(kernel_w):
                row = taps[(c * kernel_h + kh) * kernel_w + kw]
                for oh in range(out_height):
                    source = padded[c, oh * stride_h + kh]
                    start = oh * out_width
                    for ow in range(out_width):
                        row[start + ow] = source[ow * stride_w + kw]


@lru_cache(maxsize=None)
def gathered_forward_kernel(kernel_h: int, kernel_w: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                            out_height: int, out_width: int, relu_top: int = -1, relu_left: int = -1):
    """``forward(out, x, w, b)``: out (N, F, OH, OW) = b + the strided correlation of x
    with w, for one layer's kernel size, strides, padding and output size (OH, OW),
    compiled in: with them as run-time values the gather's strided copies ran 4x slower
    (one thread, Tiny VGG's conv1, measured). Parallel over images.

    With ``relu_top`` >= 0 (the fused wing's strided block without batch norm or pool):
    out is a bordered buffer, and relu of the result goes into its interior at
    (relu_top, relu_left), as ``bordered.relu_into_border_kernel`` would write it (a NaN
    passes, -0.0 becomes +0.0): each plane is summed in a local plane first, then
    stored, while it is in cache (Tiny VGG's conv1 at batch 64: the separate ReLU pass
    took 23-36 us a step)."""

    plane_size = out_height * out_width
    relu = relu_top >= 0
    # FASTMATH without "nsz" for the ReLU: it may not treat -0.0 as +0.0, so that
    # relu(-0.0) is +0.0, as F.relu's
    flags = FASTMATH - {"nsz"} if relu else FASTMATH

    @njit(parallel=True, cache=True, fastmath=flags)
    def forward(out, x, w, b):
        batch, filters = out.shape[0], out.shape[1]
        channels = x.shape[1]
        taps_count = channels * kernel_h * kernel_w
        zero = out.dtype.type(0)
        for n in prange(batch):
            taps = np.empty((taps_count, plane_size), x.dtype)
            padded = np.empty((channels, (out_height - 1) * stride_h + kernel_h,
                               (out_width - 1) * stride_w + kernel_w), x.dtype)
            local = np.empty(plane_size if relu else 1, out.dtype)
            _gather_taps(taps, padded, x, n, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_height,
                         out_width)
            for f in range(filters):
                plane = local if relu else out[n, f].reshape(plane_size)
                bias = b[f]
                for p in range(plane_size):
                    plane[p] = bias
                for c in range(channels):
                    for kh in range(kernel_h):
                        first = (c * kernel_h + kh) * kernel_w
                        for p in range(plane_size):  # the kernel row's KW taps at once (KW compiled in)
                            total = plane[p]
                            for kw in range(kernel_w):
                                total += w[f, c, kh, kw] * taps[first + kw, p]
                            plane[p] = total
                if relu:
                    for oh in range(out_height):
                        for ow in range(out_width):
                            value = plane[oh * out_width + ow]
                            out[n, f, relu_top + oh, relu_left + ow] = value if not value <= 0 else zero

    BUILT_KERNELS.append(forward)
    return forward
