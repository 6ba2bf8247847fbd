"""Strided convolutions with the images in the vector lanes: ``conv.py``'s ``LANES``
variant of the forward, grad-input and grad-weight (it says when each runs and what
it is tested against; the definitions are ``conv.conv2d_forward_general`` and its
backward cousins).

Why images in the lanes
-----------------------
The fast kernels vectorise along an output row; a strided layer's rows are short
(Tiny VGG's stride-2 layers: 14 and 4 columns, 7 and 2 per phase row), so most of a
16-float vector was wasted, or several images were packed into one row and unpacked
again (``conv_phases.py``). Here the batch is the innermost axis instead: ``x`` as
(C, HP, WP, N), zero-padded, and ``dout`` as (F, OH, OW, N). Each tap of each output
position is then one multiply-add per image, N of them side by side in the vector
lanes, whatever the map's width, and the stride is only an index: output (oh, ow)
reads input (oh * SH + kh, ow * SW + kw). The arrays go in and out of this layout by
:func:`images_last` and :func:`images_first` (Tiny VGG's conv_2_1 at batch 64: 6.5 us
for its 64 x 10 x 7 x 7 input into 10 x 9 x 9 x 64, 6 us for its output back, each
alone; in a row with the kernel, the copies took 40 us of the forward's 58); the
drivers at the end (:func:`forward`, :func:`backward_input`, :func:`backward_weight`)
do that around each kernel for ``conv.py``. The fused wing's lanes blocks
(``fused/lanes_ops.py``, ``lanes_blocks.py``) call the kernels themselves, at any stride
(1 included), on maps they keep in this layout from one block to the next.

Each kernel is built per shape (``lru_cache``; sizes and strides compiled in), as
``conv_rows``' are, so the loops over filters and taps unroll and, once they have, the
loop over images is the innermost one, which LLVM vectorises; its body holds a register block of
sums, one per filter (forward) or per tap (grad-weight), loaded and stored once per
channel or output row.

- forward (:func:`forward_lanes_kernel`): ``out[f, oh, ow, n] = b[f] + sum over c,
  kh, kw of w[f, c, kh, kw] * x[c, oh * SH + kh, ow * SW + kw, n]``;
- grad-input (:func:`grad_input_lanes_kernel`): a gather, each input element the sum
  of the outputs that read it. Padded input row ``r`` is read through the kernel rows
  ``kh = r mod SH + i * SH`` by output rows ``r // SH - i``: the same ceil(KH / SH)
  taps for every row of one phase ``r mod SH``. So the kernel is split by phase
  (:func:`phase_split`, zero past the kernel, as PHASES splits it) and dout is
  zero-bordered so that every tap of every phase reads inside it: each (input
  channel, row, column) sums F x ceil(KH / SH) x ceil(KW / SW) products in registers.
  The zero taps multiply real dout values, and 0 * NaN is NaN: a NaN or Inf in dout
  may reach an input gradient next to the ones it belongs to (the one whose zero tap
  falls on it), never another image's, as in PHASES (``conv_phases.py``);
- grad-weight (:func:`weight_gradient_lanes_kernel`): for each (filter, channel) and
  tap, a float32 (the data's type) sum per image over one output row, added into a
  float64 sum per image across rows; the images' float64 sums are added last, in a
  fixed order. So, as in every CPU grad-weight, products are summed in the data's type
  over one output row at most, and the result does not depend on the thread count.

Measured (float32, batch 64, 10 -> 10 channels, 3x3 stride 2 padding 1 on 7x7: Tiny
VGG's conv_2_1; 2 threads): the forward kernel 18 us alone, 58 with its copies (PHASES,
with its own copies: 91); grad-input 62 us alone, 81 with its copies; the grad-weight
kernel 33 us alone (the earlier LANES kernel, one row of taps at a time with run-time
sizes: 88); the whole backward 231 -> 160 us.
"""

from functools import lru_cache

import numpy as np
from numba import njit, prange

from numbacnn.kernels.common import FASTMATH
from numbacnn.kernels.cpu.conv_phases import phase_kernel_size, phase_weights
from numbacnn.kernels.cpu.conv_tuning import BUILT_KERNELS

# Filters summed together by the forward: their sums stay in registers for one
# channel's taps (2 x 9 multiply-adds per vector of images for 3x3; 5 x 9 did not
# vectorise: 10 GFLOP/s against 62, measured on conv_2_1).
FORWARD_FILTER_BLOCK = 2
# Grad-weight: one output row's kernel row of taps (KW x OW multiply-adds per vector of
# images) summed in one body when it holds at most this many, else one tap at a time
# (Tiny VGG's 4-wide rows: 12; its 14-wide rows: 42 did not vectorise, 14 GFLOP/s).
WEIGHT_ROW_BODY_BUDGET = 24
# Grad-input: filters x phase taps multiply-adds per vector of images in one body.
GRAD_INPUT_BODY_BUDGET = 48


@njit(parallel=True, cache=True)
def images_last(dst, src, pad_top, pad_left):
    """dst (C, HP, WP, N)[c, r, q, n] = src (N, C, H, W)[n, c, r - pad_top, q - pad_left],
    zero outside src (the padding; HP, WP from dst). Every element written; parallel over
    (channel, row) of dst."""
    batch, channels, height, width = src.shape
    rows, cols = dst.shape[1], dst.shape[2]
    for task in prange(channels * rows):
        c = task // rows
        r = task % rows
        h = r - pad_top
        for q in range(cols):
            w = q - pad_left
            if 0 <= h < height and 0 <= w < width:
                for n in range(batch):
                    dst[c, r, q, n] = src[n, c, h, w]
            else:
                for n in range(batch):
                    dst[c, r, q, n] = 0


@njit(parallel=True, cache=True)
def images_first(dst, src, top, left):
    """dst (N, C, H, W)[n, c, h, w] = src (C, >= top + H, >= left + W, N)[c, top + h,
    left + w, n]: the lanes layout back, from an offset. Every element of dst written;
    parallel over (image, channel)."""
    batch, channels, height, width = dst.shape
    for task in prange(batch * channels):
        n = task // channels
        c = task % channels
        for h in range(height):
            for w in range(width):
                dst[n, c, h, w] = src[c, top + h, left + w, n]


@lru_cache(maxsize=None)
def forward_lanes_kernel(filters: int, kernel_h: int, kernel_w: int, stride_h: int, stride_w: int):
    """``forward(out, x, w, b)``: out (F, OH, OW, N) = b + the stride (SH, SW)
    correlation of x (C, HP, WP, N), zero-padded, with w (F, C, KH, KW).

    Parallel over (block of ``FORWARD_FILTER_BLOCK`` filters, output row): one filter a
    block for an odd filter count or a kernel larger than 5x5; for each
    output position the block's sums are set to the bias, then each channel's taps are
    added, the loop over images innermost."""
    block = FORWARD_FILTER_BLOCK if filters % FORWARD_FILTER_BLOCK == 0 and kernel_h * kernel_w <= 25 else 1

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def forward(out, x, w, b):
        channels = x.shape[0]
        out_height, out_width, batch = out.shape[1], out.shape[2], out.shape[3]
        for task in prange((filters // block) * out_height):
            first = (task // out_height) * block
            oh = task % out_height
            for ow in range(out_width):
                for j in range(block):
                    for n in range(batch):
                        out[first + j, oh, ow, n] = b[first + j]
                for c in range(channels):
                    for n in range(batch):
                        for j in range(block):
                            s = out[first + j, oh, ow, n]
                            for kh in range(kernel_h):
                                for kw in range(kernel_w):
                                    s += w[first + j, c, kh, kw] * x[c, oh * stride_h + kh, ow * stride_w + kw, n]
                            out[first + j, oh, ow, n] = s

    BUILT_KERNELS.append(forward)
    return forward


def dout_border(kernel_size: int, stride: int) -> int:
    """Zero rows (columns) above and left of dout for :func:`grad_input_lanes_kernel`:
    a phase's taps reach ceil(K / S) - 1 output rows back."""
    return phase_kernel_size(kernel_size, stride) - 1


@lru_cache(maxsize=None)
def grad_input_lanes_kernel(filters: int, kernel_h: int, kernel_w: int, stride_h: int, stride_w: int):
    """``grad_input(dx, dout, split, pad_top, pad_left)``: dx (C, H, W, N), every element
    written, = the gradient of sum(out * dout) with respect to x, for out the stride (SH,
    SW) correlation of x padded by (pad_top, pad_left) (:func:`forward_lanes_kernel`).

    dout (F, BH + rows, BW + cols, N), rows = max(OH, (pad_top + H - 1) // SH + 1): the
    output gradient at (BH + oh, BW + ow), with BH = ``dout_border(KH, SH)`` zero rows
    above and zero rows below OH (columns the same); split (SH, SW, C, F, KPH, KPW): the
    kernel by phase (:func:`phase_split`). Padded input row r = h + pad_top is read by
    output row r // SH - i through kernel row r mod SH + i * SH. Parallel over (channel,
    row); the filters in blocks of ``grad_input_filter_block``."""
    split_h, split_w = phase_kernel_size(kernel_h, stride_h), phase_kernel_size(kernel_w, stride_w)
    border_h, border_w = split_h - 1, split_w - 1
    block = grad_input_filter_block(filters, split_h * split_w)

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def grad_input(dx, dout, split, pad_top, pad_left):
        channels, height, width, batch = dx.shape
        zero = dout.dtype.type(0)
        for task in prange(channels * height):
            c = task // height
            h = task % height
            r = h + pad_top  # the padded input row
            phase_h, dout_row = r % stride_h, r // stride_h + border_h  # dout's row for the phase's tap i = 0
            for w in range(width):
                q = w + pad_left
                phase_w, dout_col = q % stride_w, q // stride_w + border_w
                for n in range(batch):
                    dx[c, h, w, n] = zero
                for first in range(0, filters, block):
                    for n in range(batch):
                        s = dx[c, h, w, n]
                        for f in range(first, first + block):
                            for i in range(split_h):
                                for j in range(split_w):
                                    s += split[phase_h, phase_w, c, f, i, j] * dout[f, dout_row - i, dout_col - j, n]
                        dx[c, h, w, n] = s

    BUILT_KERNELS.append(grad_input)
    return grad_input


def grad_input_filter_block(filters: int, phase_taps: int) -> int:
    """Filters summed in one body by :func:`grad_input_lanes_kernel`: the largest divisor
    of ``filters`` whose block x phase taps multiply-adds stay within
    ``GRAD_INPUT_BODY_BUDGET`` (Tiny VGG's 10 filters x 4 taps of 3x3 stride 2: all)."""
    for block in range(filters, 0, -1):
        if filters % block == 0 and block * phase_taps <= GRAD_INPUT_BODY_BUDGET:
            return block
    return 1


def phase_split(w: np.ndarray, stride_h: int, stride_w: int) -> np.ndarray:
    """(SH, SW, C, F, KPH, KPW): w (F, C, KH, KW) by tap phase, ``[a, b, c, f, i, j] =
    w[f, c, a + i * SH, b + j * SW]``, zero past the kernel (KPH = ceil(KH / SH)): PHASES'
    split (``conv_phases.phase_weights``, (F, SH * SW * C, KPH, KPW)) with the phase and
    input channel axes first, so that a phase's weights for one input channel are one
    block."""
    filters, channels = w.shape[0], w.shape[1]
    split = phase_weights(w, stride_h, stride_w)
    split = split.reshape(filters, stride_h, stride_w, channels, split.shape[2], split.shape[3])
    return np.ascontiguousarray(split.transpose(1, 2, 3, 0, 4, 5))


@lru_cache(maxsize=None)
def weight_gradient_lanes_kernel(kernel_h: int, kernel_w: int, stride_h: int, stride_w: int, out_width: int,
                                 dout_top: int = 0, dout_left: int = 0):
    """``weight_gradient(dw, dout, x)``: dw (F, C, KH, KW) = sum over n, oh, ow of
    dout[f, dout_top + oh, dout_left + ow, n] * x[c, oh * SH + kh, ow * SW + kw, n].

    dout (F, >= dout_top + OH, >= dout_left + OW, N): the output gradient at (dout_top,
    dout_left), plain (0, 0) or inside the zero border the grad-input reads
    (:func:`dout_border`), so that one buffer serves both; OW = ``out_width``, both
    offsets compiled in. x (C, HP, WP, N) zero-padded, the rows and columns the output
    reads: OH = (HP - KH) // SH + 1. Parallel over (filter, channel). Per tap, a float32
    (data type) sum per image over one output row; added into a float64 sum per image;
    the images' sums added last in a fixed order."""
    row_taps = kernel_w if kernel_w * out_width <= WEIGHT_ROW_BODY_BUDGET else 1

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def weight_gradient(dw, dout, x):
        filters, channels = dw.shape[0], dw.shape[1]
        out_height, batch = (x.shape[1] - kernel_h) // stride_h + 1, dout.shape[3]
        zero = dout.dtype.type(0)
        for task in prange(filters * channels):
            f = task // channels
            c = task % channels
            sums = np.zeros((kernel_h * kernel_w, batch), np.float64)  # per tap and image, every row
            for oh in range(out_height):
                for kh in range(kernel_h):
                    for first in range(0, kernel_w, row_taps):
                        for n in range(batch):
                            for kw in range(first, first + row_taps):
                                s = zero
                                for ow in range(out_width):
                                    s += (dout[f, dout_top + oh, dout_left + ow, n]
                                          * x[c, oh * stride_h + kh, ow * stride_w + kw, n])
                                sums[kh * kernel_w + kw, n] += s
            for tap in range(kernel_h * kernel_w):
                total = 0.0
                for n in range(batch):
                    total += sums[tap, n]
                dw[f, c, tap // kernel_w, tap % kernel_w] = total

    BUILT_KERNELS.append(weight_gradient)
    return weight_gradient


# --------------------------------------------------------------------------- #
# The drivers: the arrays into the lanes layout, the kernel, the result back
# (``conv.py``'s LANES variant calls these)
# --------------------------------------------------------------------------- #

def _padded_images_last(x, stride_h, stride_w, pad_h, pad_w, kernel_h, kernel_w, out_height, out_width):
    """x (N, C, H, W) as (C, HP, WP, N), zero-padded: the rows and columns a strided
    (OH, OW) output reads (``images_last``)."""
    x_t = np.empty((x.shape[1], (out_height - 1) * stride_h + kernel_h, (out_width - 1) * stride_w + kernel_w,
                    x.shape[0]), x.dtype)
    images_last(x_t, x, pad_h, pad_w)
    return x_t


def forward(out, x, w, b, stride_h, stride_w, pad_h, pad_w):
    """out (N, F, OH, OW) = the stride (SH, SW) correlation of x (N, C, H, W) padded by
    (pad_h, pad_w) with w (F, C, KH, KW), + b (F,): x batch-last and padded
    (:func:`images_last`), :func:`forward_lanes_kernel`, the output back
    (:func:`images_first`). Every element of out written."""
    filters, _, kernel_h, kernel_w = w.shape
    batch, _, out_height, out_width = out.shape
    x_t = _padded_images_last(x, stride_h, stride_w, pad_h, pad_w, kernel_h, kernel_w, out_height, out_width)
    out_t = np.empty((filters, out_height, out_width, batch), out.dtype)
    forward_lanes_kernel(filters, kernel_h, kernel_w, stride_h, stride_w)(out_t, x_t, w, b)
    images_first(out, out_t, 0, 0)


def _bordered_dout(dout, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, in_height, in_width):
    """dout (N, F, OH, OW) as (F, BH + rows, BW + cols, N), zero-bordered as
    :func:`grad_input_lanes_kernel` reads it."""
    filters, batch, out_height, out_width = dout.shape[1], dout.shape[0], dout.shape[2], dout.shape[3]
    border_h, border_w = dout_border(kernel_h, stride_h), dout_border(kernel_w, stride_w)
    rows = max(out_height, (pad_h + in_height - 1) // stride_h + 1)
    cols = max(out_width, (pad_w + in_width - 1) // stride_w + 1)
    dout_t = np.empty((filters, border_h + rows, border_w + cols, batch), dout.dtype)
    images_last(dout_t, dout, border_h, border_w)
    return dout_t


def backward_input(dx, dout, w, stride_h, stride_w, pad_h, pad_w):
    """dx (N, C, H, W), every element written, = the input gradient of :func:`forward`
    for the output gradient dout (N, F, OH, OW): dout batch-last and zero-bordered,
    :func:`grad_input_lanes_kernel` on the kernel split by phase, dx back."""
    filters, channels, kernel_h, kernel_w = w.shape
    batch, _, height, width = dx.shape
    dout_t = _bordered_dout(dout, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, height, width)
    dx_t = np.empty((channels, height, width, batch), dx.dtype)
    kernel = grad_input_lanes_kernel(filters, kernel_h, kernel_w, stride_h, stride_w)
    kernel(dx_t, dout_t, phase_split(w, stride_h, stride_w), pad_h, pad_w)
    images_first(dx, dx_t, 0, 0)


def backward_weight(dw, dout, x, stride_h, stride_w, pad_h, pad_w):
    """dw (F, C, KH, KW) = the weight gradient of :func:`forward` for the output gradient
    dout (N, F, OH, OW), which may be a view (a bordered buffer's interior): x and dout
    batch-last (x zero-padded), then :func:`weight_gradient_lanes_kernel`."""
    filters, channels, kernel_h, kernel_w = dw.shape
    batch, _, out_height, out_width = dout.shape
    x_t = _padded_images_last(x, stride_h, stride_w, pad_h, pad_w, kernel_h, kernel_w, out_height, out_width)
    dout_t = np.empty((filters, out_height, out_width, batch), dout.dtype)
    images_last(dout_t, dout, 0, 0)
    kernel = weight_gradient_lanes_kernel(kernel_h, kernel_w, stride_h, stride_w, out_width)
    kernel(dw, dout_t, x_t)
