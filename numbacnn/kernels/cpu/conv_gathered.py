"""Strided convolutions of few input channels with each image's taps gathered first:
``conv.py``'s ``GATHERED`` variant of the forward and of a 3x3 kernel's grad-weight (it
says when each runs and what it is tested against; the definitions are
``conv.conv2d_forward_general`` and ``conv.conv2d_backward_weight_general``).

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

The weight gradient of a 3x3 kernel (:func:`gathered_weight_gradient_3x3_kernel`)
gathers the same taps and sums, for each image, filter and tap, one dot product along
the output plane: ``sum over p of dout[n, f, p] * taps[t, p]``, the tap rows whole rows
of the taps matrix apart. It is the stride-1 plane kernel's body
(``conv_weight_grad._plane_taps_3x3``: two filters' nine taps as 18 vector
accumulators, 2 + 9 loads for 18 multiply-adds), and, as there, each plane's dot
product is summed in the data's type and the planes in float64
(tests/test_float64_partial_sums.py). Tiny VGG's conv1 at batch 64, 2 threads: 40 us
with the bias kernel beside it, against 111 for LANES, which transposes x and dout into
the lanes first (measured alone). An earlier gathered grad-weight with one dot product
per output row (float64 across rows) ran no faster than LANES (0.24 against 0.21 ms,
one thread): a horizontal sum every 14 values.

Shapes: x (N, C, H, W); w (F, C, KH, KW); out (N, F, OH, OW), C-contiguous.
"""

from functools import lru_cache

import numpy as np
from numba import njit, prange

from numbacnn.kernels.common import FASTMATH
from numbacnn.kernels.cpu.conv_tuning import BUILT_KERNELS, GRAD_WEIGHT_CHUNKS
from numbacnn.kernels.cpu.conv_weight_grad import _add_pair_bias_sums, _plane_taps_3x3


@njit(inline="always")
def _gather_taps(taps, padded, x, n, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_height,
                 out_width):
    """taps (C * KH * KW, OH * OW) = image n's taps (module docstring). ``padded``
    (C, HP, WP), HP = (OH - 1) * SH + KH and WP likewise, is scratch: image n
    zero-padded first (the part the taps read), so that each tap's copy has no
    bounds to test. Every element of taps written. Inlined into the kernels of
    :func:`gathered_forward_kernel` and :func:`gathered_weight_gradient_3x3_kernel`,
    where the sizes are compile-time constants. (It lives here, not in the factory: a kernel whose closure holds
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


@lru_cache(maxsize=None)
def gathered_weight_gradient_3x3_kernel(stride_h: int, stride_w: int, pad_h: int, pad_w: int, out_height: int,
                                        out_width: int, with_bias: bool = True):
    """``weight_gradient(partial_w, partial_b, dout, x)``: chunk t's share of the weight and
    bias gradients of the stride (SH, SW) correlation of x (N, C, H, W), zero-padded by
    (pad_h, pad_w), with a 3x3 kernel::

        partial_w (T, F, C, 3, 3) float64, written: sum over chunk t's images n, over
                  p = oh * OW + ow, of dout[n, f, oh, ow] * xp[n, c, oh * SH + kh, ow * SW + kw]
        partial_b (T, F) float64, written with ``with_bias``: sum over chunk t's images of
                  dout[n, f] (without it, not touched: the functional API's bias is
                  ``conv.conv2d_backward_bias``)
        dout      (N, F, OH, OW), C-contiguous

    Sizes, strides and padding compiled in, as the forward's. Parallel over T chunks of
    images (``conv_tuning.GRAD_WEIGHT_CHUNKS`` of them, not one per thread, so that the
    sum does not depend on the thread count); the caller adds the chunks. Each image's
    taps are gathered once (:func:`_gather_taps`), then each pair of filters' planes
    is one pass of ``_plane_taps_3x3`` per input channel: dot products of a plane in
    the data's type, added into float64; the planes' sums for the bias likewise, while they are in
    cache. :func:`backward_weight` is the driver."""
    plane_size = out_height * out_width
    padded_h, padded_w = (out_height - 1) * stride_h + 3, (out_width - 1) * stride_w + 3

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def weight_gradient(partial_w, partial_b, dout, x):
        chunks, filters, channels = partial_w.shape[0], partial_w.shape[1], partial_w.shape[2]
        batch = x.shape[0]
        for chunk in prange(chunks):
            partial_w[chunk] = 0.0
            if with_bias:
                partial_b[chunk] = 0.0
            taps = np.empty((channels * 9, plane_size), x.dtype)
            padded = np.empty((channels, padded_h, padded_w), x.dtype)
            taps_flat = taps.reshape(-1)
            for n in range(chunk * batch // chunks, (chunk + 1) * batch // chunks):
                _gather_taps(taps, padded, x, n, 3, 3, stride_h, stride_w, pad_h, pad_w, out_height, out_width)
                for first in range(0, filters, 2):
                    second = min(first + 1, filters - 1)  # an odd last filter pairs with itself
                    g0 = dout[n, first].reshape(-1)
                    g1 = dout[n, second].reshape(-1)
                    if with_bias:
                        _add_pair_bias_sums(partial_b, chunk, first, second, g0, g1, plane_size)
                    for c in range(channels):
                        # channel c's tap (kh, kw) is row c * 9 + kh * 3 + kw: 3 rows a kernel row, 1 a column
                        sums = _plane_taps_3x3(g0, g1, taps_flat[c * 9 * plane_size:], plane_size, 3 * plane_size,
                                               plane_size)
                        for t in range(9):
                            partial_w[chunk, first, c, t // 3, t % 3] += sums[t]
                        if second != first:
                            for t in range(9):
                                partial_w[chunk, second, c, t // 3, t % 3] += sums[9 + t]

    BUILT_KERNELS.append(weight_gradient)
    return weight_gradient


def backward_weight(dw, dout, x, stride_h, stride_w, pad_h, pad_w, db=None):
    """dw (F, C, 3, 3) = the weight gradient of the gathered forward (x (N, C, H, W) padded
    by (pad_h, pad_w), stride (SH, SW)) for its output gradient dout (N, F, OH, OW); db
    (F,), when given, = the bias gradient, from the same pass (the fused wing's strided
    block; the functional API's bias is ``conv.conv2d_backward_bias``, as every
    variant's). :func:`gathered_weight_gradient_3x3_kernel` on chunks of images, the
    chunks added here."""
    chunks = max(1, min(GRAD_WEIGHT_CHUNKS, dout.shape[0]))
    partial_w = np.empty((chunks, dw.shape[0], dw.shape[1], 3, 3), np.float64)
    partial_b = np.empty((chunks, dw.shape[0]) if db is not None else (1, 1), np.float64)
    kernel = gathered_weight_gradient_3x3_kernel(stride_h, stride_w, pad_h, pad_w, dout.shape[2], dout.shape[3],
                                                 db is not None)
    kernel(partial_w, partial_b, np.ascontiguousarray(dout), x)
    dw[...] = partial_w.sum(axis=0)
    if db is not None:
        db[...] = partial_b.sum(axis=0)
