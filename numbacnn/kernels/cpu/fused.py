"""Fused CPU kernels for Conv2d -> ReLU (-> MaxPool2d) and their backwards, on
zero-bordered workspaces (stride 1, dilation 1, groups 1: Tiny VGG's layers).

Why bordered buffers
--------------------
A stride-1 convolution with padding p reads its input zero-padded. Instead of
copying the input into a padded array on every call (twice: forward and
grad-weight), the layer that *produces* the input writes it straight into the
interior of a buffer whose border is zero: the buffer is zeroed once when it is
allocated, and every kernel here writes interiors only, so the border stays zero.
The same holds backwards: grad-input is a correlation of the output gradient
padded by ``K - 1 - p``, so the kernel producing that gradient writes it into a
bordered buffer too. A bordered buffer is passed as the whole array plus the
(row, column) offset of its interior; the reading kernels see a plain C-contiguous
array, which LLVM vectorises.

Kernels
-------
``conv_rows_kernel(filters, kh, kw, mode)``  forward correlation, one parallel region,
    with the store fused: ``MODE_BIAS`` (plain), ``MODE_RELU`` (conv + ReLU),
    ``MODE_RELU_POOL`` (conv + ReLU + 2x2 max pool with argmax indices, the pool
    rows made from the two output rows each task computes) and ``MODE_MASK``
    (grad-input times the previous ReLU's mask ``x > 0``).
``weight_bias_gradient_kernel(filters, kh, kw, ...)``  grad-weight and grad-bias in one
    parallel region (float64 partial sums per thread); for 3x3 kernels with padding 1
    ``weight_bias_gradient_3x3_kernel``, which runs over whole planes.
``max_pool2x2_relu_backward_kernel``  pool backward from saved indices times the ReLU mask.
``relu_mask_bordered_kernel``  gy * (y > 0) into a bordered buffer.
``copy_into_border_kernel``  x into a bordered buffer's interior (the network's input).

Borders are compile-time constants of each kernel (see ``conv_rows_kernel``).

As everywhere in ``kernels/``: no validation, no allocation of outputs (a task's
small scratch rows excepted); ``numbacnn/functional/fused.py`` checks and allocates.
"""

from functools import lru_cache

import numpy as np
from numba import literally, njit, prange

from numbacnn.kernels.common import FASTMATH, is_new_max
from numbacnn.kernels.cpu.conv_fast import BUILT_KERNELS, VECTOR_BYTES, forward_fastmath, unrolled_body_budget

MODE_BIAS = 0
MODE_RELU = 1
MODE_RELU_POOL = 2
MODE_MASK = 3


def row_blocking(filters, kernel_h, kernel_w, out_height, vectors_per_row):
    """(rows_together, filter_block, rows_per_task) of :func:`conv_rows_kernel`.

    The unrolled body (rows_together x filter_block x kernel_h * kernel_w FMAs per
    column vector) must stay within ``conv_fast.unrolled_body_budget`` or LLVM neither
    unrolls nor vectorises it (5x5: 2 rows x 1 filter, 64 GFLOP/s, against 8 for 4 x 1;
    7x7: 1 x 1, 36 against 5 for 2 x 1, one thread). Measured (float32, 2 threads, Tiny VGG's 10 filters, 3x3): rows of
    two or more vectors run fastest with 4 rows x 2 filters (201 GFLOP/s at 28 wide,
    238 at 62 wide, against 148 and 210 for 2 rows x 5 filters); one-vector rows (14
    wide) with 1 row x 10 filters (197 against 128). A task covers an even number of
    rows, so that 2x2 pool windows never straddle two tasks.
    """
    taps = kernel_h * kernel_w
    budget = unrolled_body_budget(kernel_h, kernel_w)
    rows = 1 if vectors_per_row <= 1 else 4
    while rows > 1 and (rows * taps > budget or rows > out_height):
        rows //= 2
    block = 1
    for candidate in range(filters, 0, -1):
        if filters % candidate == 0 and rows * candidate * taps <= budget:
            block = candidate
            break
    per_task = rows if rows % 2 == 0 else 2 * rows
    return rows, block, min(per_task, out_height)


POOL_WINDOWS_CHUNK = 16  # pool windows per inner loop: one float32 vector, a constant trip count


@njit(cache=True, inline="never")
def _pool_task_rows(pooled, indices, sums, n, top_row, first, stop, out_width, pool_top, pool_left, windows):
    """2x2 / stride-2 max pooling of a task's ReLU'd rows, read from its sums.

    sums (R, F, SW) holds output rows top_row .. top_row + R - 1 before the ReLU (SW a
    multiple of 2 * POOL_WINDOWS_CHUNK); the windows over local rows (j, j + 1) for
    j = first, first + 2, .. < stop are pooled (ReLU applied first) into pooled's
    interior at (pool_top, pool_left) and their argmax, the flat ``row * OW + col`` in
    the (OH, OW) plane, into indices. The first maximum in row-major order wins, NaN
    wins (``is_new_max``), as max_pool2d.

    Each row pair is pooled over all ``windows`` = SW / 2 windows of sums, a
    compile-time constant (``literally``: a trip count LLVM vectorises), into small
    local rows, and the OW // 2 real ones are copied out: with a run-time count of 7
    or 13 windows the loop ran scalar and cost more than the convolution it follows
    (0.33 ms against 0.2 at 14 wide, measured). Columns past the computed ones hold garbage; their windows are dropped.

    A separate function, not inlined: inside the convolution kernel this loop made
    LLVM give up vectorising the convolution itself (8x slower, measured)."""
    literally(windows)  # compiled per window count: the loop below has a constant trip count
    zero = sums.dtype.type(0)
    best_row = np.empty(windows, sums.dtype)
    where_row = np.empty(windows, np.int64)
    for j in range(first, stop, 2):
        row = top_row + j
        pool_row = row // 2
        for f in range(sums.shape[1]):
            for pw in range(windows):
                col = 2 * pw
                best = sums[j, f, col]
                best = best if not best <= 0 else zero  # "not <= 0": NaN passes, as relu
                where = row * out_width + col
                value = sums[j, f, col + 1]
                value = value if not value <= 0 else zero
                take = is_new_max(value, best)
                best = value if take else best
                where = where + 1 if take else where
                value = sums[j + 1, f, col]
                value = value if not value <= 0 else zero
                take = is_new_max(value, best)
                best = value if take else best
                where = (row + 1) * out_width + col if take else where
                value = sums[j + 1, f, col + 1]
                value = value if not value <= 0 else zero
                take = is_new_max(value, best)
                best = value if take else best
                where = (row + 1) * out_width + col + 1 if take else where
                best_row[pw] = best
                where_row[pw] = where
            for pw in range(out_width // 2):
                pooled[n, f, pool_top + pool_row, pool_left + pw] = best_row[pw]
                indices[n, f, pool_row, pw] = where_row[pw]


@njit(inline="always", fastmath=FASTMATH)
def _accumulate_rows(sums, x, w, n, top_row, first, width, filters, kernel_h, kernel_w, rows, filter_block):
    """Adds to rows first .. first + rows - 1 of sums (R, F, CW), columns 0 .. width - 1,
    every tap of every input channel: sums[first + r, f, ow] += w[f, c, kh, kw] *
    x[n, c, top_row + first + r + kh, ow + kw].

    Inlined into ``conv_rows_kernel``'s kernels, where every count but the channels is
    a compile-time constant, so the loops over filters, rows and taps unroll and the
    loop over columns vectorises. (A module-level function, not one made per shape:
    Numba keys a closure's disk-cache entry by the objects it closes over, and a
    closed-over jitted function pickles differently in every process, so the kernels
    would never load from the cache.)"""
    for c in range(x.shape[1]):
        for first_filter in range(0, filters, filter_block):
            for ow in range(width):
                for f in range(first_filter, first_filter + filter_block):
                    for r in range(rows):
                        s = sums[first + r, f, ow]
                        for kh in range(kernel_h):
                            for kw in range(kernel_w):
                                s += w[f, c, kh, kw] * x[n, c, top_row + first + r + kh, ow + kw]
                        sums[first + r, f, ow] = s


@lru_cache(maxsize=None)
def conv_rows_kernel(filters, kernel_h, kernel_w, mode, in_height, in_width, out_top=0, out_left=0, pool_top=0,
                     pool_left=0, mask_top=0, mask_left=0, store_out=True, store_twice=False, itemsize=4):
    """Stride-1 correlation of a zero-bordered input with a fused store.

    ``conv_rows(out, pooled, indices, mask, x, w, b)``, shapes and borders compiled in
    (``itemsize``: x's, 4 or 8, which sets the vector width)::

        x        (N, C, in_height, in_width)  the padded input (a bordered buffer);
                 OH = in_height - KH + 1 >= 2, OW = in_width - KW + 1
        w        (F, C, KH, KW);  b (F,)
        out      bordered (N, F, >= out_top + OH, >= out_left + OW): the interior at
                 (out_top, out_left) is written with s = b[f] + sum w * x taps, then
                 MODE_RELU / MODE_RELU_POOL: max(s, 0) (NaN stays NaN)
                 MODE_MASK: s where mask[n, f, mask_top + oh, mask_left + ow] > 0, else 0
                 (MODE_RELU_POOL with ``store_out=False``: not written, not read)
        pooled   MODE_RELU_POOL: bordered (N, F, ...), interior (OH // 2, OW // 2) at
                 (pool_top, pool_left): each 2x2 window's maximum of the ReLU output
                 (first maximum in row-major order, NaN wins, as max_pool2d)
        indices  MODE_RELU_POOL: (N, F, OH // 2, OW // 2) int64, the maximum's flat
                 index ``row * OW + col`` in its (OH, OW) plane (PyTorch's format)

    With ``store_twice`` (MODE_BIAS / MODE_MASK), ``pooled`` is a second bordered
    destination: its interior at (pool_top, pool_left) receives the same values as
    out's. A gradient that two kernels read with different borders is then written
    once into each, instead of being copied from one into the other afterwards.
    Unused arguments (by mode) may be any arrays of the right type.

    Parallel over (image, block of output rows). Each task accumulates its rows of all
    F filters in ``sums`` (R, F, CW), then stores them through the mode (and pools
    them: a block holds whole pool windows, so the pool reads the task's own sums):

        for c:                     run-time loop over input channels
          for filter block:        FB filters (``row_blocking``)
            for ow < CW:           innermost after unrolling: vectorised over columns
              for f, row, kh, kw:  unrolled: FB x rows accumulators; each weight
                                   feeds every row, each input load FB FMAs

    CW is OW rounded up to whole 64-byte vectors and a compile-time constant: with
    a run-time trip count LLVM's vector loop never ran on one-vector rows (14 wide)
    and ran once with a remainder loop on two (28 wide); with the shapes compiled in,
    forward rose from 99 to 197 GFLOP/s (14 wide) and 148 to 201 (28 wide). The extra
    columns read the start of the next input row (or channel, or image) and are never
    stored; only the last task, whose extra columns would lie past the end of x,
    computes exactly OW (a run-time trip count, once per call). A last block that
    would run past OH starts earlier, overlapping its neighbour, and stores (and
    pools) only the rows its neighbour did not.

    The offsets are compile-time constants too: with a run-time offset, ``offset +
    ow`` might be negative as far as Numba knows, so it adds a wrap-around test to
    every index and LLVM no longer vectorises the loop (4x slower grad-weight, measured).
    """
    out_height = in_height - kernel_h + 1
    out_width = in_width - kernel_w + 1
    vector = VECTOR_BYTES // itemsize  # elements per AVX-512 register: 16 float32, 8 float64
    computed_width = (out_width + vector - 1) // vector * vector
    rows, filter_block, rows_per_task = row_blocking(filters, kernel_h, kernel_w, out_height,
                                                     computed_width // vector)
    # sums rows hold a multiple of 32 columns, whole chunks of pool windows (columns
    # past CW are never computed: their windows are dropped)
    sums_width = (computed_width + 2 * POOL_WINDOWS_CHUNK - 1) // (2 * POOL_WINDOWS_CHUNK) * (2 * POOL_WINDOWS_CHUNK)
    pool_windows = sums_width // 2
    blocks = (out_height + rows_per_task - 1) // rows_per_task
    pooled_rows = 2 * (out_height // 2)  # rows covered by whole pool windows

    @njit(parallel=True, cache=True, fastmath=forward_fastmath(kernel_h, kernel_w))
    def conv_rows(out, pooled, indices, mask, x, w, b):
        batch = x.shape[0]
        zero = x.dtype.type(0)
        for task in prange(batch * blocks):
            n = task // blocks
            first_new = (task % blocks) * rows_per_task
            top_row = min(first_new, out_height - rows_per_task)
            first_stored = first_new - top_row  # > 0 when the last block overlaps
            sums = np.empty((rows_per_task, filters, sums_width), x.dtype)
            for r in range(rows_per_task):
                for f in range(filters):
                    for ow in range(computed_width):
                        sums[r, f, ow] = b[f]
            for first in range(0, rows_per_task, rows):
                if task == batch * blocks - 1:
                    _accumulate_rows(sums, x, w, n, top_row, first, out_width, filters, kernel_h, kernel_w, rows,
                                     filter_block)
                else:
                    _accumulate_rows(sums, x, w, n, top_row, first, computed_width, filters, kernel_h, kernel_w,
                                     rows, filter_block)
            if mode != MODE_RELU_POOL or store_out:
                for r in range(first_stored, rows_per_task):
                    oh = top_row + r
                    for f in range(filters):
                        for ow in range(out_width):
                            value = sums[r, f, ow]
                            if mode == MODE_RELU or mode == MODE_RELU_POOL:
                                # "not <= 0" so NaN passes through, as relu
                                value = value if not value <= 0 else zero
                            elif mode == MODE_MASK:
                                value = value if mask[n, f, mask_top + oh, mask_left + ow] > 0 else zero
                            out[n, f, out_top + oh, out_left + ow] = value
                            if store_twice:
                                pooled[n, f, pool_top + oh, pool_left + ow] = value
            if mode == MODE_RELU_POOL:
                first_pooled = first_stored + (top_row + first_stored) % 2  # windows start on even rows
                stop = min(rows_per_task, pooled_rows - top_row) - 1
                _pool_task_rows(pooled, indices, sums, n, top_row, first_pooled, stop, out_width, pool_top,
                                pool_left, pool_windows)

    BUILT_KERNELS.append(conv_rows)
    return conv_rows


@lru_cache(maxsize=None)
def weight_bias_gradient_kernel(filters, kernel_h, kernel_w, dout_top, dout_left):
    """Partial weight and bias gradients in one parallel region.

    ``weight_bias_gradient(partial_w, partial_b, dout, x)``, dout's border compiled in
    (see ``conv_rows_kernel``)::

        partial_w (T, F, C, KH, KW) float64, written: chunk t's sum of
                  dout[n, f, oh, ow] * x[n, c, oh + kh, ow + kw]
        partial_b (T, F) float64, written: chunk t's sum of dout[n, f, oh, ow]
        dout      bordered (N, F, ...): the (OH, OW) gradient at (dout_top, dout_left)
        x         (N, C, OH + KH - 1, OW + KW - 1), the padded input

    The caller sums over T. The loops are ``conv_fast.weight_gradient_kernel``'s
    (a vectorised dot product per (filter pair, channel, tap) over each output row,
    float64 accumulation across rows); the bias sums ride along the same rows.
    """

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def weight_bias_gradient(partial_w, partial_b, dout, x):
        chunks = partial_w.shape[0]
        batch, channels = x.shape[0], x.shape[1]
        out_height = x.shape[2] - kernel_h + 1
        out_width = x.shape[3] - kernel_w + 1
        total_rows = batch * out_height
        zero = dout.dtype.type(0)  # the row sums' type: float32 for float32 data
        for chunk in prange(chunks):
            for f in range(filters):
                partial_b[chunk, f] = 0.0
                for c in range(channels):
                    for kh in range(kernel_h):
                        for kw in range(kernel_w):
                            partial_w[chunk, f, c, kh, kw] = 0.0
            for row in range(chunk * total_rows // chunks, (chunk + 1) * total_rows // chunks):
                n = row // out_height
                oh = row % out_height
                drow = dout_top + oh
                for f in range(filters):
                    row_sum = zero
                    for ow in range(out_width):
                        row_sum += dout[n, f, drow, dout_left + ow]
                    partial_b[chunk, f] += row_sum
                for first in range(0, filters, 2):
                    second = min(first + 1, filters - 1)
                    for c in range(channels):
                        for kh in range(kernel_h):
                            for kw in range(kernel_w):
                                first_sum = zero
                                second_sum = zero
                                for ow in range(out_width):
                                    pixel = x[n, c, oh + kh, ow + kw]
                                    first_sum += dout[n, first, drow, dout_left + ow] * pixel
                                    second_sum += dout[n, second, drow, dout_left + ow] * pixel
                                partial_w[chunk, first, c, kh, kw] += first_sum
                                if second != first:
                                    partial_w[chunk, second, c, kh, kw] += second_sum

    BUILT_KERNELS.append(weight_bias_gradient)
    return weight_bias_gradient


@lru_cache(maxsize=None)
def weight_bias_gradient_3x3_kernel(filters, width):
    """Partial weight and bias gradients of a 3x3 convolution with padding 1, each
    plane as one long vectorised loop.

    ``weight_bias_gradient(partial_w, partial_b, gz, x)``::

        partial_w (T, F, C, 3, 3), partial_b (T, F) float64, written (chunk t's sums)
        gz        (N, F, OH + 2, OW + 2): the output gradient bordered by 1 (zero border)
        x         (N, C, OH + 2, OW + 2): the input padded by 1
        width     OW + 2, compiled in

    With padding 1 both buffers have the same row width, so in the flattened planes
    tap (kh, kw) is the constant offset ``kh * width + kw``: the sum over an image of
    ``gz[oh, ow] * x[oh + kh, ow + kw]`` is one dot product over ``OH * width - 2``
    consecutive elements, the border columns of gz contributing zeros. The per-row
    dot products of ``weight_bias_gradient_kernel`` end in a horizontal sum every 14
    to 62 elements; here there is one per plane, and the nine taps of two filters are
    18 accumulators sharing each load (2 gz + 9 x loads for 18 FMAs instead of 3
    for 2). Written out by hand because LLVM vectorises named scalar accumulators,
    not a local array of them. The float32 dot products are added into float64
    per-thread partial sums once per plane. Parallel over chunks of images.
    """

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def weight_bias_gradient(partial_w, partial_b, gz, x):
        chunks = partial_w.shape[0]
        batch, channels = x.shape[0], x.shape[1]
        length = (x.shape[2] - 2) * width - 2  # from gz's first interior element to its last
        zero = gz.dtype.type(0)
        for chunk in prange(chunks):
            partial_w[chunk] = 0.0
            partial_b[chunk] = 0.0
            for n in range(chunk * batch // chunks, (chunk + 1) * batch // chunks):
                for first in range(0, filters, 2):
                    second = min(first + 1, filters - 1)  # an odd last filter pairs with itself
                    g0 = gz[n, first].reshape(-1)[width + 1:]
                    g1 = gz[n, second].reshape(-1)[width + 1:]
                    b0 = zero
                    b1 = zero
                    for i in range(length):
                        b0 += g0[i]
                        b1 += g1[i]
                    partial_b[chunk, first] += b0
                    if second != first:
                        partial_b[chunk, second] += b1
                    for c in range(channels):
                        xs = x[n, c].reshape(-1)
                        a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = zero  # first filter's taps
                        c00 = c01 = c02 = c10 = c11 = c12 = c20 = c21 = c22 = zero  # second filter's
                        for i in range(length):
                            u = g0[i]
                            v = g1[i]
                            p = xs[i]
                            a00 += u * p
                            c00 += v * p
                            p = xs[i + 1]
                            a01 += u * p
                            c01 += v * p
                            p = xs[i + 2]
                            a02 += u * p
                            c02 += v * p
                            p = xs[i + width]
                            a10 += u * p
                            c10 += v * p
                            p = xs[i + width + 1]
                            a11 += u * p
                            c11 += v * p
                            p = xs[i + width + 2]
                            a12 += u * p
                            c12 += v * p
                            p = xs[i + 2 * width]
                            a20 += u * p
                            c20 += v * p
                            p = xs[i + 2 * width + 1]
                            a21 += u * p
                            c21 += v * p
                            p = xs[i + 2 * width + 2]
                            a22 += u * p
                            c22 += v * p
                        sums = partial_w[chunk, first, c]
                        sums[0, 0] += a00
                        sums[0, 1] += a01
                        sums[0, 2] += a02
                        sums[1, 0] += a10
                        sums[1, 1] += a11
                        sums[1, 2] += a12
                        sums[2, 0] += a20
                        sums[2, 1] += a21
                        sums[2, 2] += a22
                        if second != first:
                            sums = partial_w[chunk, second, c]
                            sums[0, 0] += c00
                            sums[0, 1] += c01
                            sums[0, 2] += c02
                            sums[1, 0] += c10
                            sums[1, 1] += c11
                            sums[1, 2] += c12
                            sums[2, 0] += c20
                            sums[2, 1] += c21
                            sums[2, 2] += c22

    BUILT_KERNELS.append(weight_bias_gradient)
    return weight_bias_gradient


@lru_cache(maxsize=None)
def max_pool2x2_relu_backward_kernel(gz_top, gz_left, pooled_top, pooled_left, second_top=-1, second_left=-1):
    """The 2x2 / stride-2 pool's backward from saved indices, times the ReLU mask.

    ``pool_relu_backward(gz, gp, indices, pooled)``, the borders compiled in::

        gz       bordered (N, C, OH + 2*gz_top, OW + 2*gz_left): interior written
        gp       (N, C, PH, PW)  gradient of the pooled output
        indices  (N, C, PH, PW)  int64 flat ``row * OW + col`` of each window's maximum
        pooled   bordered (N, C, ...): the pooled output, interior at (pooled_top, pooled_left)
        second   with second_top >= 0: a second bordered destination, interior at
                 (second_top, second_left), written with the same values as gz's

    The ReLU mask is needed only where the gradient lands, at the window's maximum
    y[index], and that is the pooled value itself: ``y[index] > 0`` exactly when
    ``pooled > 0`` (NaN: both False). So y is not read. Each plane is zeroed (one
    vectorised pass) and each window's gradient stored at its index: 1.3-6x faster
    than writing the four elements of every window with selects (measured, 1 thread).
    Parallel over (image, channel) planes.
    """

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def pool_relu_backward(gz, gp, indices, pooled, second):
        batch, channels, pool_height, pool_width = gp.shape
        out_height = gz.shape[2] - 2 * gz_top
        out_width = gz.shape[3] - 2 * gz_left
        zero = gz.dtype.type(0)
        for plane in prange(batch * channels):
            n = plane // channels
            c = plane % channels
            for oh in range(out_height):
                for ow in range(out_width):
                    gz[n, c, gz_top + oh, gz_left + ow] = zero
                if second_top >= 0:
                    for ow in range(out_width):
                        second[n, c, second_top + oh, second_left + ow] = zero
            for ph in range(pool_height):
                second_row_start = (2 * ph + 1) * out_width
                for pw in range(pool_width):
                    if pooled[n, c, pooled_top + ph, pooled_left + pw] > 0:
                        index = indices[n, c, ph, pw]
                        # the window's rows are 2ph and 2ph + 1: no division (an integer
                        # division per window was most of this kernel's time, measured)
                        row = 2 * ph + 1 if index >= second_row_start else 2 * ph
                        gz[n, c, gz_top + row, gz_left + index - row * out_width] = gp[n, c, ph, pw]
                        if second_top >= 0:
                            second[n, c, second_top + row, second_left + index - row * out_width] = gp[n, c, ph, pw]

    BUILT_KERNELS.append(pool_relu_backward)
    return pool_relu_backward


@lru_cache(maxsize=None)
def relu_mask_bordered_kernel(gz_top, gz_left):
    """``relu_mask(gz, gy, y)``: gz's interior (at gz_top, gz_left, compiled in) = gy
    where y > 0, else 0; gy, y (N, C, OH, OW)."""

    @njit(parallel=True, cache=True)
    def relu_mask(gz, gy, y):
        batch, channels, out_height, out_width = y.shape
        zero = gz.dtype.type(0)
        for plane in prange(batch * channels):
            n = plane // channels
            c = plane % channels
            for oh in range(out_height):
                for ow in range(out_width):
                    gz[n, c, gz_top + oh, gz_left + ow] = gy[n, c, oh, ow] if y[n, c, oh, ow] > 0 else zero

    BUILT_KERNELS.append(relu_mask)
    return relu_mask


@lru_cache(maxsize=None)
def copy_into_border_kernel(top, left):
    """``copy(padded, x)``: padded's interior at (top, left), compiled in, = x (N, C, H, W);
    the border is left as it is (zero)."""

    @njit(parallel=True, cache=True)
    def copy(padded, x):
        batch, channels, height, width = x.shape
        for plane in prange(batch * channels):
            n = plane // channels
            c = plane % channels
            for row in range(height):
                for col in range(width):
                    padded[n, c, top + row, left + col] = x[n, c, row, col]

    BUILT_KERNELS.append(copy)
    return copy


@lru_cache(maxsize=None)
def copy_interior_kernel(src_top, src_left, dst_top, dst_left):
    """``copy(dst, src)``: dst's interior = src's interior, two bordered buffers around
    the same (N, C, H, W) (H, W from dst's shape and its border); borders compiled in."""

    @njit(parallel=True, cache=True)
    def copy(dst, src):
        batch, channels = dst.shape[0], dst.shape[1]
        height = dst.shape[2] - 2 * dst_top
        width = dst.shape[3] - 2 * dst_left
        for plane in prange(batch * channels):
            n = plane // channels
            c = plane % channels
            for row in range(height):
                for col in range(width):
                    dst[n, c, dst_top + row, dst_left + col] = src[n, c, src_top + row, src_left + col]

    BUILT_KERNELS.append(copy)
    return copy
