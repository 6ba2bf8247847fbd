"""Register-blocked convolution kernels for the common case: stride 1, dilation 1,
groups 1, few filters and a small kernel (Tiny VGG: 10 filters, 3x3).

``conv.py`` calls these through the same backend names when ``fast_path_applies``;
everything else goes to its general kernels.

Why specialised kernels
-----------------------
LLVM vectorises the innermost loop only, and only unrolls loops whose trip counts it
knows. Each kernel here is built by a factory for one (filters, kernel_h, kernel_w):
those numbers are constants inside it, so the loops over filters and kernel taps
unroll completely and the loop over output columns becomes the innermost one, which
LLVM vectorises (16 float32 / 8 float64 columns per AVX-512 instruction). The input
channel count stays a run-time loop: unrolling it too multiplies compile time for
little gain. Factories are cached (one compilation per shape and dtype per process)
and use ``cache=True``: Numba keys a closure's disk-cache entry by the values it
closes over, so a second process loads every shape from disk.

``FASTMATH`` lets LLVM fuse multiply-adds and reorder sums; it leaves out 'nnan' and
'ninf', so a NaN or Inf in the input still reaches the output.
"""

from functools import lru_cache

import numpy as np
from numba import njit, prange

from numbacnn.kernels.common import FASTMATH


# Register blocking: the forward kernel's inner loop (2 rows x a block of filters x
# kernel_h * kernel_w taps, one FMA each) must stay within LLVM's unrolling budget,
# or LLVM neither unrolls nor vectorises it.
MAX_UNROLLED_TAPS = 100
# Fewer filters than this gain little from blocking; leaving them to the general
# kernels also keeps the random-shape tests from compiling a kernel per shape.
MIN_FILTERS = 4
VECTOR_BYTES = 64  # one AVX-512 register: forward rows are computed in whole vectors of columns

BUILT_KERNELS = []  # every kernel the factories below built in this process (for cache stats)

# Grad-weight splits its sum into this many float64 partial sums (fewer when there are
# fewer rows or images), whatever the thread count: the partials, and their sum, are
# then the same with 1 thread or 16, so a trial gives the same weights in a 1-thread
# sweep worker and in a 2-thread process (with one partial per thread, 5x5 trials of
# the sweep ended 0.2-0.3 points apart). Threads share the chunks out.
GRAD_WEIGHT_CHUNKS = 16


def fast_path_applies(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups):
    """True when the register-blocked kernels handle this convolution."""
    return (stride_h == 1 and stride_w == 1 and dilation_h == 1 and dilation_w == 1 and groups == 1
            and MIN_FILTERS <= filters and 2 * kernel_h * kernel_w <= MAX_UNROLLED_TAPS)


@njit(parallel=True, cache=True)
def pad_images(padded, src, pad_top, pad_left):
    """padded (N, C, H + pad_top + pad_bottom, W + pad_left + pad_right) = src (N, C, H, W)
    with zeros around it (a copy the fast kernels read instead of testing every tap)."""
    batch, channels, padded_height, padded_width = padded.shape
    in_height, in_width = src.shape[2], src.shape[3]
    for plane in prange(batch * channels):
        n = plane // channels
        c = plane % channels
        for row in range(padded_height):
            src_row = row - pad_top
            if src_row < 0 or src_row >= in_height:
                for col in range(padded_width):
                    padded[n, c, row, col] = 0
                continue
            for col in range(pad_left):
                padded[n, c, row, col] = 0
            for col in range(in_width):
                padded[n, c, row, pad_left + col] = src[n, c, src_row, col]
            for col in range(pad_left + in_width, padded_width):
                padded[n, c, row, col] = 0


def unrolled_body_budget(kernel_h, kernel_w):
    """Multiply-adds per column vector that an unrolled forward body may hold and still
    vectorise. 3x3 bodies of 72-90 vectorise; 5x5 and 7x7 bodies of 98-100 did not
    (8 and 5 GFLOP/s, one thread) while bodies of 49-50 did (64 and 36 GFLOP/s): a
    larger kernel's taps load more distinct input rows, so LLVM gives up sooner."""
    return MAX_UNROLLED_TAPS if kernel_h * kernel_w <= 9 else MAX_UNROLLED_TAPS // 2


def forward_fastmath(kernel_h, kernel_w):
    """Fast-math flags of the forward correlation kernels (here and in ``fused.py``):
    kernels larger than 3x3 are compiled without 'reassoc': vectorised, the same 5x5
    kernel compiled in this process and loaded from Numba's disk cache rounded
    differently (``kernels/linking.py`` keeps the 3x3 ones identical, not these). Their
    loop vectorises over columns, so it needs no reassociation (same speed, measured)."""
    return FASTMATH if kernel_h * kernel_w <= 9 else FASTMATH - {"reassoc"}


def filter_block_size(filters, kernel_h, kernel_w):
    """Filters accumulated together in the forward kernel's inner loop: the largest
    divisor of ``filters`` whose 2 rows x block x taps FMAs stay within
    ``unrolled_body_budget`` (5 for Tiny VGG's 10 filters and 3x3 kernels: 90 FMAs per
    column vector; 1 for 5x5)."""
    budget = unrolled_body_budget(kernel_h, kernel_w)
    for block in range(filters, 0, -1):
        if filters % block == 0 and 2 * block * kernel_h * kernel_w <= budget:
            return block
    return 1


@lru_cache(maxsize=None)
def correlation_kernel(filters, kernel_h, kernel_w):
    """The forward convolution for one (filters, kernel_h, kernel_w), stride 1, no padding.

    ``correlate(out, x, w, b)``::

        out  (N, F, OH, OW)   written: b[f] + sum over c, kh, kw of
                              w[f, c, kh, kw] * x[n, c, oh + kh, ow + kw];  OH >= 2
        x    (N, C, OH + KH - 1, OW + KW - 1)   already zero-padded if need be
        w    (F, C, KH, KW)
        b    (F,)

    Parallel over (image, pair of output rows), so both cores work at batch 1. Each
    task accumulates its two output rows of all F filters in ``pair_sums``:

        for c:                     run-time loop over input channels
          for filter block:        run-time loop, FB = filter_block_size(...) filters
            for ow:                innermost after unrolling: vectorised over columns
              for f, kh, kw:       unrolled: 2 x FB accumulators (top and bottom row);
                                   each weight feeds both rows, each input load FB FMAs

    Two rows share every weight broadcast, which halves the per-channel set-up cost
    that dominated narrow rows (1.6x faster than one row of all 10 filters). An odd
    last row is computed with the row above it, which only that task's pair stores.

    Rows are computed over CW columns, OW rounded up to whole 64-byte vectors, so
    there is no scalar or narrow remainder loop. The extra columns read the start of
    the next input row (or channel, or image) and are never stored; only the last
    task, whose extra columns would lie past the end of x, computes exactly OW.

    (Reading x through a local zero-padded strip instead stopped LLVM from vectorising
    this loop, hence the padded copy made by the caller.)

    ``fused.conv_rows_kernel`` is this kernel's fused cousin for ``Sequential``'s
    groups: it compiles the plane shape in too (a constant column count vectorises
    narrow rows 1.4-2x better), which suits a network's handful of layer shapes but
    not the functional API, where every new input size would compile a new kernel.
    """
    filter_block = filter_block_size(filters, kernel_h, kernel_w)
    @njit(parallel=True, cache=True, fastmath=forward_fastmath(kernel_h, kernel_w))
    def correlate(out, x, w, b):
        batch, _, out_height, out_width = out.shape
        channels = x.shape[1]
        vector = VECTOR_BYTES // x.itemsize
        whole_vectors_width = (out_width + vector - 1) // vector * vector
        pairs = (out_height + 1) // 2
        for task in prange(batch * pairs):
            n = task // pairs
            top_row = min(2 * (task % pairs), out_height - 2)
            first_stored = 2 * (task % pairs) - top_row  # 1 when an odd last row overlaps
            computed_width = out_width if task == batch * pairs - 1 else whole_vectors_width
            # pair_sums (2, F, CW): rows top_row and top_row + 1 of every filter's output
            pair_sums = np.empty((2, filters, computed_width), out.dtype)
            for f in range(filters):
                for ow in range(computed_width):
                    pair_sums[0, f, ow] = b[f]
                    pair_sums[1, f, ow] = b[f]
            for c in range(channels):
                for first_filter in range(0, filters, filter_block):
                    for ow in range(computed_width):
                        for f in range(first_filter, first_filter + filter_block):
                            top = pair_sums[0, f, ow]
                            bottom = pair_sums[1, f, ow]
                            for kh in range(kernel_h):
                                for kw in range(kernel_w):
                                    weight = w[f, c, kh, kw]
                                    top += weight * x[n, c, top_row + kh, ow + kw]
                                    bottom += weight * x[n, c, top_row + 1 + kh, ow + kw]
                            pair_sums[0, f, ow] = top
                            pair_sums[1, f, ow] = bottom
            for row in range(first_stored, 2):
                for f in range(filters):
                    for ow in range(out_width):
                        out[n, f, top_row + row, ow] = pair_sums[row, f, ow]

    BUILT_KERNELS.append(correlate)
    return correlate


@lru_cache(maxsize=None)
def weight_gradient_kernel(filters, kernel_h, kernel_w):
    """Partial weight gradients for one (filters, kernel_h, kernel_w), stride 1, no padding.

    ``weight_gradient(partial, dout, x)``::

        partial (T, F, C, KH, KW) float64, zeroed; partial[t] += chunk t's sum of
                                  dout[n, f, oh, ow] * x[n, c, oh + kh, ow + kw]
        dout    (N, F, OH, OW)
        x       (N, C, OH + KH - 1, OW + KW - 1)   already zero-padded if need be

    The N * OH output rows are split into T equal chunks, one parallel task each
    (T = the thread count, so batch 1 keeps both cores busy); the caller sums
    ``partial`` over T. For each output row, every (filter, c, kh, kw) tap is a dot
    product of the dout row with a shifted input row, both in L1; two filters are
    done together so each input load feeds two FMAs:

        for row (n, oh):
          for filter pair, c, kh, kw:
            for ow:                vectorised: two reductions, in the input dtype
            partial[...] += the two row sums, in float64

    so float32 sums stay accurate at any batch size (each float32 sum has OW terms).
    An odd last filter is paired with itself and stored once. (Keeping more taps'
    sums in a local array, to share more loads, stopped LLVM from vectorising; four
    filters at a time ran no faster than two.)
    """

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def weight_gradient(partial, dout, x):
        chunks = partial.shape[0]
        batch, _, out_height, out_width = dout.shape
        channels = x.shape[1]
        total_rows = batch * out_height
        zero = dout.dtype.type(0)  # the row sums' type: float32 for float32 data
        for chunk in prange(chunks):
            for row in range(chunk * total_rows // chunks, (chunk + 1) * total_rows // chunks):
                n = row // out_height
                oh = row % out_height
                for first in range(0, filters, 2):
                    second = min(first + 1, filters - 1)
                    for c in range(channels):
                        for kh in range(kernel_h):
                            for kw in range(kernel_w):
                                first_sum = zero
                                second_sum = zero
                                for ow in range(out_width):
                                    pixel = x[n, c, oh + kh, ow + kw]
                                    first_sum += dout[n, first, oh, ow] * pixel
                                    second_sum += dout[n, second, oh, ow] * pixel
                                partial[chunk, first, c, kh, kw] += first_sum
                                if second != first:
                                    partial[chunk, second, c, kh, kw] += second_sum

    BUILT_KERNELS.append(weight_gradient)
    return weight_gradient
