"""2-D convolution (cross-correlation) on the CPU: the catalogue. Open this file first.

It holds, in this order: the readable kernels, which are the definition and handle
every stride, padding, dilation and group count; the list of fast variants, each
with when it runs and what it is tested against; the functions that choose
(``choose_*``); and the backend functions the dispatcher calls. ``numbacnn info
--kernels`` prints the choice made for each layer of a model.

Shapes, for all four ops::

    x    (N, C, H, W)            input
    w    (F, C // groups, KH, KW) filters
    b    (F,)                    bias (zeros when the layer has none)
    out  (N, F, OH, OW)          output; dout is its gradient

Input row ``ih`` seen by output row ``oh`` through kernel row ``kh`` is
``oh * stride_h - pad_h + kh * dilation_h`` (the same along the width). Instead of
testing every tap for the zero padding, each loop over output positions runs only
over the range whose input index is inside the image (``first_valid_output`` and
``end_valid_output``): padded taps contribute zero, so skipping them is exact.

Threads never write the same element: forward is parallel over (image, filter)
planes of the output, grad-input over (image, channel) planes of dx, grad-weight over
(filter, channel) slices of dw, grad-bias over filters.

Fast variants (``conv_tuning.fast_path_applies``: stride 1, dilation 1, groups 1, at
least 4 filters, a kernel up to 7x7; strided: ``GATHERED``, ``LANES`` and ``PHASES``)
------------------------------------------------------------------------------------
=========================  ==========================================  ==========================================
variant                    runs when                                   tested against
=========================  ==========================================  ==========================================
``conv_rows.               forward of the functional API and of        ``conv2d_forward_general`` and the float64
correlation_kernel``       unfused layers, fast path, >= 2 output      reference (tests/test_kernels_fast_paths.py)
                           rows, where 1-D Winograd (below) does not
                           apply; grad-input the same way, on the
                           flipped kernel with padding K - 1 - p
``conv_weight_grad.        grad-weight, fast path, where 1-D Winograd  ``conv2d_backward_weight_general``, the
weight_gradient_kernel``   (below) does not apply                      reference, finite differences
kernel-row bodies:         kernels larger than 3x3 (``conv_tuning.     the general kernels and the reference,
``conv_rows._accumulate_   kernel_rows_outside``, ``weight_gradient_   5x5, 7x7, 2x9, padded or not, odd sizes
rows_by_kernel_row``,      by_planes``: up to 7 wide) in the four      (tests/test_large_kernels.py)
``conv_weight_grad._       kernels above and below: kh looped outside
weight_gradient_planes_    the columns (rows x filters x KW unrolled);
kernel``                   grad-weight as whole-plane dot products
                           (PHASES' phase kernels too: 7x7 stride 2's
                           4x4, 4x3, 3x4)
plane bodies:              kernels larger than 3x3 on output rows of   the reference, several row blocks, an
``conv_rows._conv_planes_  two or more vectors (``conv_tuning.planes_  overlapping last block, NaN
kernel``, whole-vector     outside``: Tiny VGG's 28x28 5x5 / 7x7):     (tests/test_large_kernel_planes.py)
grad-weight planes         a task's rows flattened on the input's
                           width, each tap a fixed offset, one loop
                           over the plane (5x5 forward + pool 68 ->
                           76 GFLOP/s, grad-input 66 -> 79, one
                           thread); grad-weight dot products over
                           zero-tailed whole vectors
``PHASES`` (strided,       stride 2 to ``MAX_PHASE_STRIDE`` on either  the reference, the general kernels and
``conv_phases.py``):       axis (``phases_path_applies``), otherwise   finite differences, strides 2x2, 2x1, 1x2,
``conv_rows.conv_rows_     as the fast path, >= 2 output rows: the     3x3; kernels 2, 3, 5, 7; every padding
kernel`` (forward,         stride-1 kernels over the input's s * s     < K (tests/test_strided_phases.py)
grad-input) and            phases, ceil(K / s)-tap phase kernels
``conv_weight_grad.        (3x3: 1.78x the strided multiply-adds,
weight_gradient_kernel``   5x5 1.44x, 7x7 1.31x); forward and
                           grad-input pack small images side by side
                           in one row; where LANES does not apply. Replaced ``STRIDED`` (the
                           stride-1 output everywhere, every s-th
                           kept: s * s the work): 1.3-28x faster per
                           op (3x3 to 7x7), one thread, measured
``LANES`` (strided         where PHASES applies (GATHERED first for    the reference, the general kernels,
forward, grad-input,       a forward), output rows of at most          PHASES on the same shapes, NaN
grad-weight,               ``LANES_MAX_OUT_WIDTH`` columns and a       (tests/test_conv_lanes.py); the
``conv_lanes.py``)         batch of ``LANES_MIN_BATCH`` or more         cancelling gradient of
                           (``lanes_apply``): the images in the        test_float64_partial_sums
                           vector lanes, x and dout batch-last; the    (tests/test_strided_phases.py)
                           stride only an index, grad-input split by
                           phase (Tiny VGG's conv_2_1, batch 64, 2
                           threads: forward 91 -> 58 us with the
                           copies, grad-input and grad-weight 231 ->
                           160; grad-weights 1.75-3.4x faster than
                           PHASES, one thread)
``GATHERED`` (strided      stride above 1, at most                     the reference, the general kernel, NaN
forward, few channels;     ``GATHER_MAX_CHANNELS`` input channels and  (tests/test_gathered.py); the cancelling
grad-weight of a 3x3       ``GATHER_MAX_TAPS`` taps (a network's       gradient of test_float64_partial_sums
kernel,                    first layer: gray or RGB 3x3, gray 5x5):
``conv_gathered.py``)      each image's taps gathered (im2col), then
                           multiply-adds along the output plane (Tiny
                           VGG stride 2's conv1: 0.16 -> 0.10 ms, one
                           thread); grad-weight (3x3 only): one dot
                           product along the plane per image, filter
                           and tap (conv1: 111 -> 40 us with the
                           bias, 2 threads, against LANES)
``conv_rows.               Sequential's fused groups on the fast       the compositions in functional/fused.py
conv_rows_kernel``         path (``numbacnn/fused``): forward + ReLU    (tests/test_fusion.py) and the reference
                           (+ 2x2 pool), grad-input (x ReLU mask)       (tests/test_fusion_kernels.py)
``conv_weight_grad.        the fused groups' grad-weight and           the same
weight_gradient_kernel``   grad-bias in one pass (``with_bias``);
``weight_bias_gradient_    3x3 with padding 1: whole planes
3x3_kernel``
1-D Winograd (5x5, 7x7,    the fused groups' forward, grad-input and   the reference and the direct plane
``conv_winograd.py``):     grad-weight where the plane bodies would    bodies, every store mode, row blocks,
``conv_rows._conv_         run, with >= 4 input channels and whole     NaN / Inf; the transforms in exact
winograd_kernel``,         tiles of output rows (``conv_tuning.        arithmetic (tests/test_conv_winograd.py);
``conv_weight_grad.        winograd_outputs``): F(m, K) down the       Tiny VGG's 5x5 layer in
weight_gradient_           columns, m + K - 1 multiply-adds per m      tests/test_large_kernels.py; the
winograd_kernel``          rows instead of m * K, F(4, 5) and          functional route against the reference
                           F(2, 7) (Tiny VGG 28x28, one thread: 5x5    and the direct functional kernels
                           forward 3.07 -> 1.91 ms, 7x7 6.24 ->        (tests/test_functional_winograd.py)
                           5.06; grad-weight 3.89 -> 3.18, 6.16 ->
                           5.34). The functional API's stride-1
                           convolutions take them for the same
                           shapes (``_correlate``,
                           ``conv2d_backward_weight``), compiled per
                           layer shape as the fused ones (Tiny VGG's
                           28x28 layer, one thread, functional: 5x5
                           forward 4.88 -> 2.77 ms, backward 8.68 ->
                           6.04; 7x7 14.31 -> 6.27, 21.29 -> 12.91;
                           a new shape compiles for about 16 s once)
side by side (small maps,  the fused groups' forward + ReLU (+ pool)   the reference, plain, pooled, masked,
``conv_small_maps.py``):   and grad-input when output rows fill at     written twice (tests/test_small_maps.py,
``conv_rows.conv_rows_     most a quarter vector (``packs_images``:    tests/test_fusion_kernels.py)
kernel`` on packed rows    float32 <= 4 columns) and N >= 2: each
                           image's padded planes side by side in one
                           row, as PHASES packs (Tiny VGG stride 2's
                           4x4 conv4 forward 0.21 -> 0.06 ms, one
                           thread)
=========================  ==========================================  ==========================================

PHASES' copies (``conv_phases.pack_phases_kernel``, ``merge_phases_kernel``) are
compiled per layer, strides and padding included; its grad-input computes only the
phase rows that hold input rows. tests/test_small_maps.py holds the copies against
their NumPy definition.

The fast variants compute the same sums in another order (row blocks, float32 row
sums added in float64), so they agree with the definition to rounding, not bit for
bit.
"""

from collections import Counter

import numpy as np
from numba import njit, prange

from numbacnn.kernels.common import FASTMATH, end_valid_output, first_valid_output
from numbacnn.kernels.cpu.bordered import pad_images
from numbacnn.kernels.cpu import conv_gathered, conv_lanes, conv_phases, conv_rows, conv_weight_grad
from numbacnn.kernels.cpu.conv_tuning import (BUILT_KERNELS, GRAD_WEIGHT_CHUNKS, MAX_UNROLLED_TAPS, MIN_FILTERS,
                                              fast_path_applies, weight_gradient_by_planes, winograd_on_padded)


# --------------------------------------------------------------------------- #
# The definition: readable kernels for every convolution
# --------------------------------------------------------------------------- #

@njit(parallel=True, cache=True)
def conv2d_forward_general(out, x, w, b, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups):
    """out[n, f] = b[f] + sum over c, kh, kw of w[f, c, kh, kw] * x[n, c_in, ih, iw]."""
    batch, out_channels, out_height, out_width = out.shape
    in_height, in_width = x.shape[2], x.shape[3]
    group_in_channels, kernel_height, kernel_width = w.shape[1], w.shape[2], w.shape[3]
    group_out_channels = out_channels // groups
    for task in prange(batch * out_channels):
        n = task // out_channels
        f = task % out_channels
        first_in_channel = (f // group_out_channels) * group_in_channels
        for oh in range(out_height):
            for ow in range(out_width):
                out[n, f, oh, ow] = b[f]
        for c in range(group_in_channels):
            for kh in range(kernel_height):
                row_offset = kh * dilation_h
                oh_begin = first_valid_output(pad_h, row_offset, stride_h)
                oh_end = end_valid_output(in_height, pad_h, row_offset, stride_h, out_height)
                for kw in range(kernel_width):
                    col_offset = kw * dilation_w
                    ow_begin = first_valid_output(pad_w, col_offset, stride_w)
                    ow_end = end_valid_output(in_width, pad_w, col_offset, stride_w, out_width)
                    weight = w[f, c, kh, kw]
                    for oh in range(oh_begin, oh_end):
                        ih = oh * stride_h - pad_h + row_offset
                        # contiguous in ow when stride_w == 1: LLVM vectorises it
                        for ow in range(ow_begin, ow_end):
                            out[n, f, oh, ow] += weight * x[n, first_in_channel + c, ih,
                                                            ow * stride_w - pad_w + col_offset]


@njit(parallel=True, cache=True)
def conv2d_backward_input_general(dx, dout, w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups):
    """dx[n, c_in] = sum of w[f, c, kh, kw] * dout[n, f] over every tap.

    Each thread owns one (image, input channel) plane of dx, zeroes it, then scatters
    into it from every output position of the filters in its group, so there are no
    write races and dx need not arrive zeroed.
    """
    batch, in_channels, in_height, in_width = dx.shape
    out_channels, out_height, out_width = dout.shape[1], dout.shape[2], dout.shape[3]
    group_in_channels, kernel_height, kernel_width = w.shape[1], w.shape[2], w.shape[3]
    group_out_channels = out_channels // groups
    for task in prange(batch * in_channels):
        n = task // in_channels
        c_in = task % in_channels
        group = c_in // group_in_channels
        c = c_in % group_in_channels
        for ih in range(in_height):
            for iw in range(in_width):
                dx[n, c_in, ih, iw] = 0
        for f in range(group * group_out_channels, (group + 1) * group_out_channels):
            for kh in range(kernel_height):
                row_offset = kh * dilation_h
                oh_begin = first_valid_output(pad_h, row_offset, stride_h)
                oh_end = end_valid_output(in_height, pad_h, row_offset, stride_h, out_height)
                for kw in range(kernel_width):
                    col_offset = kw * dilation_w
                    ow_begin = first_valid_output(pad_w, col_offset, stride_w)
                    ow_end = end_valid_output(in_width, pad_w, col_offset, stride_w, out_width)
                    weight = w[f, c, kh, kw]
                    for oh in range(oh_begin, oh_end):
                        ih = oh * stride_h - pad_h + row_offset
                        for ow in range(ow_begin, ow_end):
                            dx[n, c_in, ih, ow * stride_w - pad_w + col_offset] += weight * dout[n, f, oh, ow]


@njit(parallel=True, cache=True)
def conv2d_backward_weight_general(dw, dout, x, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups):
    """dw[f, c, kh, kw] = sum over n, oh, ow of dout[n, f, oh, ow] * x[n, c_in, ih, iw].

    Each thread owns one (filter, channel) slice of dw. Sums run in float64 whatever
    the dtype: a float32 gradient sums N*OH*OW products, and float64 partial sums
    keep it within the accuracy bar at large batch sizes.
    """
    out_channels, group_in_channels, kernel_height, kernel_width = dw.shape
    batch, out_height, out_width = dout.shape[0], dout.shape[2], dout.shape[3]
    in_height, in_width = x.shape[2], x.shape[3]
    group_out_channels = out_channels // groups
    for task in prange(out_channels * group_in_channels):
        f = task // group_in_channels
        c = task % group_in_channels
        c_in = (f // group_out_channels) * group_in_channels + c
        for kh in range(kernel_height):
            row_offset = kh * dilation_h
            oh_begin = first_valid_output(pad_h, row_offset, stride_h)
            oh_end = end_valid_output(in_height, pad_h, row_offset, stride_h, out_height)
            for kw in range(kernel_width):
                col_offset = kw * dilation_w
                ow_begin = first_valid_output(pad_w, col_offset, stride_w)
                ow_end = end_valid_output(in_width, pad_w, col_offset, stride_w, out_width)
                total = 0.0
                for n in range(batch):
                    for oh in range(oh_begin, oh_end):
                        ih = oh * stride_h - pad_h + row_offset
                        row_sum = 0.0
                        for ow in range(ow_begin, ow_end):
                            row_sum += dout[n, f, oh, ow] * x[n, c_in, ih, ow * stride_w - pad_w + col_offset]
                        total += row_sum
                dw[f, c, kh, kw] = total


# Bias gradients of fewer elements than this are summed on one thread: a parallel
# region's fork/join (2-3 us idle, ~30 us when the other thread has gone to sleep)
# costs more than summing them (the linear layer's 64 x 10, a 4x4 map's 64 x 10 x 16).
BIAS_SERIAL_BELOW = 1 << 15


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv2d_backward_bias(db, dout):
    """db[f] = sum over n, oh, ow of dout[n, f, oh, ow] (float64 partial sums).

    FASTMATH lets LLVM vectorise the row sums (reordering them); NaN still propagates.
    """
    batch, out_channels, out_height, out_width = dout.shape
    if batch * out_channels * out_height * out_width < BIAS_SERIAL_BELOW:
        for f in range(out_channels):
            db[f] = _bias_gradient_sum(dout, f)
    else:
        for f in prange(out_channels):
            db[f] = _bias_gradient_sum(dout, f)


@njit(cache=True, fastmath=FASTMATH)
def _bias_gradient_sum(dout, f):
    """sum over n, oh, ow of dout[n, f, oh, ow], in float64 (row sums, then their total)."""
    batch, _, out_height, out_width = dout.shape
    total = 0.0
    for n in range(batch):
        for oh in range(out_height):
            row_sum = 0.0
            for ow in range(out_width):
                row_sum += dout[n, f, oh, ow]
            total += row_sum
    return total


# --------------------------------------------------------------------------- #
# The choice: one function per op says which variant runs, and why
# --------------------------------------------------------------------------- #

GENERAL = "general"
FAST = "fast"
PHASES = "phases"  # strided: the stride-1 fast kernels over the input's s * s phases (conv_phases.py)
LANES = "lanes"  # strided, narrow rows, a large batch: the images in the vector lanes (conv_lanes.py)
GATHERED = "gathered"  # strided forward, few input channels: each image's taps gathered first (conv_gathered.py)

# Strides up to this (on each axis) take the PHASES variant: stride s makes s * s
# phase channels, each with a ceil(K / s)-tap kernel, so larger strides only add
# channels; a limit keeps the tested shapes few.
MAX_PHASE_STRIDE = 4

# A strided convolution takes LANES (images in the vector lanes) when its output rows
# are at most this wide and the batch fills a float32 vector. Measured for the grad-weight,
# with the earlier LANES kernel (run-time sizes), one thread, against
# PHASES' row dot products, 0.22 against 0.42 ms at 14 columns, 0.18 against 0.61 at 4,
# 0.68 against 1.19 at 8 (Tiny VGG's stride-2 layers on 28x28 and 64x64 images), but
# 6.6 against 3.1 ms at 32 columns, where the rows are long (batch 64, measured).
LANES_MAX_OUT_WIDTH = 15
LANES_MIN_BATCH = 16


def lanes_apply(batch, out_width):
    """True when a strided convolution that PHASES could run takes LANES instead (its
    forward, grad-input and grad-weight alike): output rows of at most
    ``LANES_MAX_OUT_WIDTH`` columns and a batch of ``LANES_MIN_BATCH`` or more (None: not
    known, False)."""
    return (batch is not None and out_width is not None and out_width <= LANES_MAX_OUT_WIDTH
            and batch >= LANES_MIN_BATCH)


# A stride-1 layer of the fused path computes its weight gradient with the images in
# the lanes (the LANES grad-weight at stride 1) when its output rows are at most this
# wide and the batch fills a vector: the bordered whole-plane kernels end each small
# plane in horizontal sums. Batch 64, 10 -> 10, 3x3, padding 1, 2 threads, alone, ms
# (LANES + its bias pass against the bordered kernel with the bias): 4x4 0.055 against
# 0.133, 5x5 0.078 / 0.099, 6x6 0.093 / 0.135, 7x7 0.125 / 0.155, but 8x8 0.143 / 0.126
# and 14x14 0.68 / 0.23. (Its grad-input in the lanes was not faster: it stays.)
LANES_STRIDE1_WEIGHT_MAX_OUT_WIDTH = 7


def lanes_weight_gradient_at_stride_1(batch, out_width):
    """True when a stride-1 fused layer's grad-weight runs in the lanes
    (``conv_lanes.backward_weight`` at stride 1): output rows of at most
    ``LANES_STRIDE1_WEIGHT_MAX_OUT_WIDTH`` columns and a batch of ``LANES_MIN_BATCH`` or more."""
    return out_width <= LANES_STRIDE1_WEIGHT_MAX_OUT_WIDTH and batch >= LANES_MIN_BATCH


# A fused block (no batch norm) whose output rows are at most this wide, at a batch of
# LANES_MIN_BATCH or more, is a *lanes block*: its whole forward and backward run with the
# images in the vector lanes (``conv_lanes.py``, ``lanes_blocks.py``), and consecutive
# lanes blocks hand their maps over in that layout, with no transposes between them. The
# stride-2 Tiny VGG's two 4x4 blocks (its conv_2_1 on 7x7 at stride 2, conv_2_2 + pool),
# batch 64, forward and backward alone: 584 us as NCHW blocks (each strided LANES call
# with its own transposes, the 4x4 maps side by side), 313 us as lanes blocks; its
# whole training step 0.89-0.92x (benchmarks/probes/switch_ab.py on this limit, 7 / 0).
# Wider layers gain too (two 3x3 blocks, batch 64, forward and backward, 2 threads): 32
# channels, 14x14 at stride 2 -> 7x7, + pool: 6.3 against 8.6 ms; 64 channels on 7x7:
# 16.6 against 31.2 ms.
LANES_BLOCK_MAX_OUT_WIDTH = 7


def lanes_block_applies(batch, out_width):
    """True when a fused block without batch norm runs as a lanes block: output rows of
    at most ``LANES_BLOCK_MAX_OUT_WIDTH`` columns and a batch of ``LANES_MIN_BATCH`` or more."""
    return out_width <= LANES_BLOCK_MAX_OUT_WIDTH and batch >= LANES_MIN_BATCH


def _lanes_why(count, kernel_h, kernel_w, stride_h, stride_w, out_width, batch, counted="filters", how=None):
    return (f"{kernel_h}x{kernel_w}, stride {stride_h}x{stride_w}, {count} {counted}, {out_width}-column output "
            f"rows: the {batch} images in the vector lanes" + (f", {how}" if how else ""))

# The forward of a strided convolution of a network's first layer (up to
# GATHER_MAX_CHANNELS input channels, gray or RGB) with at most GATHER_MAX_TAPS taps
# (C * KH * KW) gathers each image's taps first. One thread, batch 64, against PHASES
# (measured): 1x28x28 3x3 stride 2 0.16 -> 0.10 ms; 3x64x64 3x3 1.54 -> 1.33; 1x28x28
# 5x5 0.23 -> 0.21; but 7x7 (49 taps) 0.41 -> 0.45: each tap's multiply-add pass costs
# more than the phases' packing saved. A 3x3 kernel's weight gradient gathers too
# (conv_gathered.py: one dot product along the plane per image, filter and tap); other
# kernels' stay LANES / PHASES.
GATHER_MAX_CHANNELS = 3
GATHER_MAX_TAPS = 27


def gathered_path_applies(channels, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups):
    """True when a strided convolution of few input channels gathers its taps for the
    forward (``GATHERED``): stride above 1, dilation 1, groups 1, at most
    ``GATHER_MAX_CHANNELS`` channels and ``GATHER_MAX_TAPS`` taps."""
    return ((stride_h, stride_w) != (1, 1) and (dilation_h, dilation_w) == (1, 1) and groups == 1
            and channels <= GATHER_MAX_CHANNELS and channels * kernel_h * kernel_w <= GATHER_MAX_TAPS)


def _gathered_why(channels, kernel_h, kernel_w, stride_h, stride_w, how="multiply-adds along the output plane"):
    return (f"{kernel_h}x{kernel_w}, stride {stride_h}x{stride_w}, {channels} input channel"
            f"{'s' if channels > 1 else ''}: each image's {channels * kernel_h * kernel_w} taps gathered, "
            f"then {how}")


def phases_path_applies(count, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups):
    """True when a strided convolution runs as the stride-1 fast kernels over its phases
    (``PHASES``): stride above 1 and at most ``MAX_PHASE_STRIDE`` on each axis, and the
    phase convolution (ceil(KH / SH) x ceil(KW / SW) kernels, stride 1) on the fast path:
    dilation 1, groups 1, ``count`` (filters; input channels for grad-input) at least
    ``MIN_FILTERS``."""
    return ((stride_h, stride_w) != (1, 1) and max(stride_h, stride_w) <= MAX_PHASE_STRIDE
            and fast_path_applies(count, conv_phases.phase_kernel_size(kernel_h, stride_h),
                                  conv_phases.phase_kernel_size(kernel_w, stride_w), 1, 1, dilation_h, dilation_w,
                                  groups))


def _phases_why(count, kernel_h, kernel_w, stride_h, stride_w, counted="filters",
                how="the stride-1 rows kernel", layout="images side by side"):
    split_h = conv_phases.phase_kernel_size(kernel_h, stride_h)
    split_w = conv_phases.phase_kernel_size(kernel_w, stride_w)
    work = stride_h * stride_w * split_h * split_w / (kernel_h * kernel_w)
    return (f"{kernel_h}x{kernel_w}, stride {stride_h}x{stride_w}, {count} {counted}: {how} over the input's "
            f"{stride_h * stride_w} phases ({split_h}x{split_w} phase kernels, {work:.2f}x the multiply-adds), "
            f"{layout}")


def choose_forward(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups, out_height,
                   channels=None, batch=None, out_width=None):
    """(variant, why) of :func:`conv2d_forward`: ``FAST`` (``conv_rows.correlation_kernel``),
    for strided convolutions ``GATHERED`` (few input channels: ``conv_gathered``),
    ``LANES`` (``conv_lanes.forward_lanes_kernel``: narrow output rows, a large batch) or
    ``PHASES`` (``conv_rows.conv_rows_kernel`` over the phases), or ``GENERAL``
    (:func:`conv2d_forward_general`). ``channels``, ``batch``, ``out_width``: None when
    not known (the choice among the others)."""
    if channels is not None and gathered_path_applies(channels, kernel_h, kernel_w, stride_h, stride_w, dilation_h,
                                                      dilation_w, groups):
        return GATHERED, _gathered_why(channels, kernel_h, kernel_w, stride_h, stride_w)
    if phases_path_applies(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups):
        if lanes_apply(batch, out_width):
            return LANES, _lanes_why(filters, kernel_h, kernel_w, stride_h, stride_w, out_width, batch)
        if out_height < 2:
            return GENERAL, "one output row (the row kernel computes two at a time)"
        return PHASES, _phases_why(filters, kernel_h, kernel_w, stride_h, stride_w)
    if not fast_path_applies(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups):
        return GENERAL, _why_not_fast(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w,
                                      groups)
    if out_height < 2:
        return GENERAL, "one output row (the row kernel computes two at a time)"
    return FAST, f"{kernel_h}x{kernel_w}, stride 1, {filters} filters: register-blocked rows"


def choose_backward_input(channels, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                          groups, in_height, batch=None, out_width=None):
    """(variant, why) of :func:`conv2d_backward_input`: ``FAST`` (the forward row kernel
    on the flipped kernel), for strided convolutions ``LANES``
    (``conv_lanes.grad_input_lanes_kernel``: narrow output rows, a large batch) or
    ``PHASES`` (the same row kernel over the phases), or ``GENERAL``
    (:func:`conv2d_backward_input_general`). ``batch``, ``out_width``: None when not
    known."""
    if phases_path_applies(channels, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups):
        if lanes_apply(batch, out_width):
            return LANES, _lanes_why(channels, kernel_h, kernel_w, stride_h, stride_w, out_width, batch,
                                     "input channels", "each input element's phase taps summed")
        # phase rows PH = OH + ceil(KH / SH) - 1: one row only when KH <= SH and OH = 1
        if kernel_h <= stride_h and in_height < 2 * stride_h:
            return GENERAL, "one phase row (the row kernel computes two at a time)"
        return PHASES, _phases_why(channels, kernel_h, kernel_w, stride_h, stride_w, "input channels")
    if not fast_path_applies(channels, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups):
        return GENERAL, _why_not_fast(channels, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w,
                                      groups, counted="input channels")
    if pad_h >= kernel_h or pad_w >= kernel_w:
        return GENERAL, "padding as large as the kernel"
    if in_height < 2:
        return GENERAL, "one input row (the row kernel computes two at a time)"
    return FAST, f"{kernel_h}x{kernel_w}, stride 1, {channels} input channels: flipped-kernel correlation rows"


def choose_backward_weight(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups,
                           batch, out_width, channels=None):
    """(variant, why) of :func:`conv2d_backward_weight`: ``FAST``
    (``conv_weight_grad.weight_gradient_kernel``), for strided convolutions ``GATHERED``
    (a 3x3 kernel on few input channels, where the forward gathers its taps:
    ``conv_gathered.gathered_weight_gradient_3x3_kernel``), ``LANES``
    (``conv_lanes.weight_gradient_lanes_kernel``: narrow output rows, a batch of
    ``LANES_MIN_BATCH`` or more) or ``PHASES`` (the fast kernel over the phases), or
    ``GENERAL`` (:func:`conv2d_backward_weight_general`). ``channels``: None when not
    known (the choice among the others)."""
    if (channels is not None and (kernel_h, kernel_w) == (3, 3)
            and gathered_path_applies(channels, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w,
                                      groups)):
        return GATHERED, _gathered_why(channels, kernel_h, kernel_w, stride_h, stride_w,
                                       how="a dot product along the output plane per image, filter and tap, "
                                           "float64 across planes")
    if phases_path_applies(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups):
        if lanes_apply(batch, out_width):
            return LANES, _lanes_why(filters, kernel_h, kernel_w, stride_h, stride_w, out_width, batch,
                                     how="float32 row sums per image, float64 across rows and images")
        return PHASES, _phases_why(filters, kernel_h, kernel_w, stride_h, stride_w,
                                   how="row dot products, float64 partial sums,", layout="one image a row")
    if not fast_path_applies(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups):
        return GENERAL, _why_not_fast(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w,
                                      groups)
    if weight_gradient_by_planes(kernel_h, kernel_w):
        return FAST, (f"{kernel_h}x{kernel_w}, stride 1, {filters} filters: whole planes, kernel rows looped, "
                      "float64 partial sums")
    return FAST, f"{kernel_h}x{kernel_w}, stride 1, {filters} filters: row dot products, float64 partial sums"


def _why_not_fast(count, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups, counted="filters"):
    """The first condition of ``fast_path_applies`` that fails, in words."""
    if (stride_h, stride_w) != (1, 1):
        return (f"stride {stride_h}x{stride_w} (the fast kernels are stride 1; over the phases up to "
                f"{MAX_PHASE_STRIDE})")
    if (dilation_h, dilation_w) != (1, 1):
        return f"dilation {dilation_h}x{dilation_w}"
    if groups != 1:
        return f"groups={groups}"
    if count < MIN_FILTERS:
        return f"{count} {counted} (the fast kernels need {MIN_FILTERS} or more)"
    if 2 * kernel_h * kernel_w > MAX_UNROLLED_TAPS:
        return f"a {kernel_h}x{kernel_w} kernel (larger than the fast kernels unroll)"
    return "the general kernel"


# --------------------------------------------------------------------------- #
# The backend functions (same names and signatures as the CUDA backend's)
# --------------------------------------------------------------------------- #

def conv2d_forward(out, x, w, b, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups):
    """out (N, F, OH, OW) = conv(x (N, C, H, W), w (F, C // groups, KH, KW)) + b (F,)."""
    filters, channels, kernel_h, kernel_w = w.shape
    variant, _ = choose_forward(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups,
                                out.shape[2], channels, out.shape[0], out.shape[3])
    if variant == LANES:
        conv_lanes.forward(out, x, w, b, stride_h, stride_w, pad_h, pad_w)
    elif variant == GATHERED:
        conv_gathered.gathered_forward_kernel(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out.shape[2],
                                              out.shape[3])(out, x, w, b)
    elif variant == FAST:
        _correlate(out, x, w, b, pad_h, pad_w)
    elif variant == PHASES:
        _forward_phases(out, x, w, b, stride_h, stride_w, pad_h, pad_w)
    else:
        conv2d_forward_general(out, x, w, b, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups)


def conv2d_backward_input(dx, dout, w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups):
    """dx (N, C, H, W) = gradient of sum(dout * conv(x, w)) w.r.t. x (every element written).

    Fast variant: a gather, the forward correlation of dout (N, F, OH, OW) with the
    flipped kernel, its filter and channel axes swapped, (C, F, KH, KW), and padding
    KH - 1 - pad_h (KW - 1 - pad_w), so each thread writes only its own rows of dx.
    """
    filters, channels, kernel_h, kernel_w = w.shape
    variant, _ = choose_backward_input(channels, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                                       dilation_w, groups, dx.shape[2], dout.shape[0], dout.shape[3])
    if variant == LANES:
        conv_lanes.backward_input(dx, dout, w, stride_h, stride_w, pad_h, pad_w)
    elif variant == PHASES:
        _backward_input_phases(dx, dout, w, stride_h, stride_w, pad_h, pad_w)
    elif variant == FAST:
        flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, F, KH, KW), 1 KB
        no_bias = np.zeros(channels, dx.dtype)
        _correlate(dx, dout, flipped, no_bias, kernel_h - 1 - pad_h, kernel_w - 1 - pad_w)
    else:
        conv2d_backward_input_general(dx, dout, w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                                      groups)


def conv2d_backward_weight(dw, dout, x, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups):
    """dw (F, C // groups, KH, KW) = sum over n, oh, ow of dout (N, F, OH, OW) * x (N, C, H, W) taps.

    Fast variant: the output rows (the images, where 1-D Winograd runs) are split into
    ``GRAD_WEIGHT_CHUNKS`` chunks (not one per thread, so the result does not depend on
    the thread count), each summed into its own float64 slice of ``partial`` (T, F, C,
    KH, KW); the slices are added here.
    """
    filters, channels, kernel_h, kernel_w = dw.shape
    variant, _ = choose_backward_weight(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w,
                                        groups, dout.shape[0], dout.shape[3], channels)
    if variant == GATHERED:
        conv_gathered.backward_weight(dw, dout, x, stride_h, stride_w, pad_h, pad_w)
    elif variant == LANES:
        conv_lanes.backward_weight(dw, dout, x, stride_h, stride_w, pad_h, pad_w)
    elif variant == PHASES:
        _backward_weight_phases(dw, dout, x, stride_h, stride_w, pad_h, pad_w)
    elif variant == FAST:
        padded_x = _zero_padded(x, pad_h, pad_w, dout.shape[2], dout.shape[3], kernel_h, kernel_w)
        # as the fused groups, chunks of images
        if winograd_on_padded(padded_x.shape, padded_x.itemsize, kernel_h, kernel_w):
            chunks = max(1, min(GRAD_WEIGHT_CHUNKS, dout.shape[0]))
            kernel = conv_weight_grad.weight_gradient_winograd_kernel(filters, kernel_h, kernel_w, 0, 0,
                                                                      *padded_x.shape[2:], padded_x.itemsize)
            partial_bias = np.empty((chunks, filters), np.float64)  # written, not used (conv2d_backward_bias)
        else:
            chunks = max(1, min(GRAD_WEIGHT_CHUNKS, dout.shape[0] * dout.shape[2]))
            kernel = conv_weight_grad.weight_gradient_kernel(filters, kernel_h, kernel_w)
            partial_bias = np.empty((1, 1), np.float64)  # not written without with_bias
        partial = np.empty((chunks, filters, channels, kernel_h, kernel_w), np.float64)
        kernel(partial, partial_bias, dout, padded_x)
        dw[...] = partial.sum(axis=0)
    else:
        conv2d_backward_weight_general(dw, dout, x, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                                       groups)


_NO_INDICES = np.empty((1, 1, 1, 1), np.int64)  # conv_rows_kernel's pool indices, unused in MODE_BIAS


def _forward_phases(out, x, w, b, stride_h, stride_w, pad_h, pad_w):
    """out (N, F, OH, OW) = the strided convolution of x (N, C, H, W): the stride-1
    correlation of x's phases, images packed side by side, with the phase weights
    (``conv_phases``' derivation), unpacked."""
    filters, channels, kernel_h, kernel_w = w.shape
    batch, _, out_height, out_width = out.shape
    layout = conv_phases.phase_layout(batch, out_height, out_width, kernel_h, kernel_w, stride_h, stride_w)
    phases = np.empty((layout.packed_batch, layout.phases * channels, layout.phase_height, layout.packed_width),
                      x.dtype)
    pack_phases = conv_phases.pack_phases_kernel(layout.slot_width, layout.group, stride_h, stride_w, pad_h, pad_w)
    pack_phases(phases, x)
    packed_shape = (layout.packed_batch, filters, out_height, layout.packed_width - layout.split_w + 1)
    packed_out = out if layout.group == 1 else np.empty(packed_shape, out.dtype)  # one image a row: out itself
    correlate = conv_rows.conv_rows_kernel(filters, layout.split_h, layout.split_w, conv_rows.MODE_BIAS,
                                           layout.phase_height, layout.packed_width, itemsize=x.itemsize)
    correlate(packed_out, packed_out, _NO_INDICES, packed_out, phases,
              conv_phases.phase_weights(w, stride_h, stride_w), b)
    if layout.group > 1:
        conv_phases.unpack_images_kernel(layout.slot_width, layout.group, out_width)(out, packed_out)


def _backward_input_phases(dx, dout, w, stride_h, stride_w, pad_h, pad_w):
    """dx (N, C, H, W): the stride-1 grad-input of the phase convolution (dout packed
    side by side and padded by KP - 1, correlated with the flipped phase weights),
    merged back from the phases.

    Only the phase rows that hold input rows are computed, ceil((H + pad_h) / SH) of
    the PH: the others (i * SH >= H + pad_h) are past the input, and their rows can
    cost as much as the rest (Tiny VGG's 7x7 -> 4x4: 4 of 5 rows, and the row kernel's
    blocks of 4 rows computed 8: the whole grad-input 0.19 -> 0.12 ms, one thread, measured)."""
    filters, channels, kernel_h, kernel_w = w.shape
    batch, _, out_height, out_width = dout.shape
    layout = conv_phases.phase_layout(batch, out_height, out_width, kernel_h, kernel_w, stride_h, stride_w)
    # >= out_height (see conv_phases.py): the packed dout's rows all fit
    phase_rows = min(layout.phase_height, max(2, -(-(dx.shape[2] + pad_h) // stride_h)))
    border_h, border_w = layout.split_h - 1, layout.split_w - 1
    packed_dout = np.empty((layout.packed_batch, filters, phase_rows + border_h, border_w + layout.packed_width),
                           dout.dtype)
    pack_dout = conv_phases.pack_images_kernel(border_h, border_w, layout.slot_width, layout.group, out_width)
    pack_dout(packed_dout, dout)
    split = conv_phases.phase_weights(w, stride_h, stride_w)  # (F, SH * SW * C, KPH, KPW)
    flipped = np.ascontiguousarray(split[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (SH * SW * C, F, KPH, KPW)
    dphases = np.empty((layout.packed_batch, layout.phases * channels, phase_rows, layout.packed_width), dx.dtype)
    correlate = conv_rows.conv_rows_kernel(layout.phases * channels, layout.split_h, layout.split_w,
                                           conv_rows.MODE_BIAS, packed_dout.shape[2], packed_dout.shape[3],
                                           itemsize=dx.itemsize)
    correlate(dphases, dphases, _NO_INDICES, dphases, packed_dout, flipped, np.zeros(dphases.shape[1], dx.dtype))
    merge_phases = conv_phases.merge_phases_kernel(layout.slot_width, layout.group, stride_h, stride_w, pad_h, pad_w)
    merge_phases(dx, dphases)


def _backward_weight_phases(dw, dout, x, stride_h, stride_w, pad_h, pad_w):
    """dw (F, C, KH, KW): the stride-1 grad-weight of the phase convolution, its taps put
    back. One image a row, never packed: the fast grad-weight sums each row in the
    data's type, and a packed float32 row would sum several images' rows before the
    float64 partial sums (tests/test_float64_partial_sums.py holds them apart)."""
    filters, channels, kernel_h, kernel_w = dw.shape
    batch, _, out_height, out_width = dout.shape
    layout = conv_phases.phase_layout(batch, out_height, out_width, kernel_h, kernel_w, stride_h, stride_w,
                                      packed=False)
    phases = np.empty((batch, layout.phases * channels, layout.phase_height, layout.slot_width), x.dtype)
    pack_phases = conv_phases.pack_phases_kernel(layout.slot_width, 1, stride_h, stride_w, pad_h, pad_w)
    pack_phases(phases, x)
    chunks = max(1, min(GRAD_WEIGHT_CHUNKS, batch * out_height))
    partial = np.empty((chunks, filters, phases.shape[1], layout.split_h, layout.split_w), np.float64)
    no_bias = np.empty((1, 1), np.float64)  # not written without with_bias
    conv_weight_grad.weight_gradient_kernel(filters, layout.split_h, layout.split_w)(partial, no_bias, dout, phases)
    conv_phases.merge_phase_weights(dw, partial.sum(axis=0), stride_h, stride_w)


def _zero_padded(src, pad_top, pad_left, out_height, out_width, kernel_h, kernel_w):
    """src (N, C, H, W) zero-padded to (N, C, out_height + KH - 1, out_width + KW - 1),
    the input a stride-1 correlation producing (N, ., out_height, out_width) reads:
    src itself when it already has that shape and no padding is asked for, else a
    padded copy (bottom/right padding is whatever makes the sizes fit)."""
    padded_shape = (src.shape[0], src.shape[1], out_height + kernel_h - 1, out_width + kernel_w - 1)
    if pad_top == 0 and pad_left == 0 and src.shape == padded_shape:
        return src
    padded = np.empty(padded_shape, src.dtype)
    pad_images(padded, src, pad_top, pad_left)
    return padded


def _correlate(out, src, w, b, pad_top, pad_left):
    """out (N, F, OH, OW) = b + stride-1 correlation of src (N, C, H, W) zero-padded by
    pad_top / pad_left with w (F, C, KH, KW), by the register-blocked kernel (which
    reads src directly when no padding is needed), or, where the rule takes it (5x5 and
    7x7, ``conv_tuning.winograd_on_padded``), by the fused groups' 1-D Winograd kernel,
    compiled for this layer's sizes (a new shape compiles once, about 16 s cold; switch
    ``conv_tuning.WINOGRAD_ENABLED`` off to keep one kernel for every shape); a
    one-row output, which neither handles, goes to the general kernel."""
    filters, _, kernel_h, kernel_w = w.shape
    if out.shape[2] < 2:
        conv2d_forward_general(out, src, w, b, 1, 1, pad_top, pad_left, 1, 1, 1)
        return
    padded = _zero_padded(src, pad_top, pad_left, out.shape[2], out.shape[3], kernel_h, kernel_w)
    if winograd_on_padded(padded.shape, padded.itemsize, kernel_h, kernel_w):
        # as the fused groups: fewer multiply-adds, the layer's sizes compiled in
        kernel = conv_rows.conv_rows_kernel(filters, kernel_h, kernel_w, conv_rows.MODE_BIAS, padded.shape[2],
                                            padded.shape[3], itemsize=padded.itemsize, winograd=True)
        kernel(out, out, _NO_INDICES, out, padded, w, b)
        return
    conv_rows.correlation_kernel(filters, kernel_h, kernel_w)(out, padded, w, b)


class _CacheStats:
    """``stats`` of a backend function, shaped like a Numba dispatcher's: disk-cache
    hits and misses of its general kernel plus every fast kernel built so far."""

    def __init__(self, general):
        self._general = general

    def _total(self, field):
        dispatchers = [self._general, *BUILT_KERNELS]
        return sum((Counter(getattr(d.stats, field)) for d in dispatchers), Counter())

    @property
    def cache_hits(self):
        return self._total("cache_hits")

    @property
    def cache_misses(self):
        return self._total("cache_misses")


conv2d_forward.stats = _CacheStats(conv2d_forward_general)
conv2d_backward_input.stats = _CacheStats(conv2d_backward_input_general)
conv2d_backward_weight.stats = _CacheStats(conv2d_backward_weight_general)
