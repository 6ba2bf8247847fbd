"""The row-blocked forward correlation kernels (stride 1, dilation 1, groups 1): the
fast variants of ``conv.conv2d_forward`` and, run on the flipped kernel, of
``conv.conv2d_backward_input``. ``conv.py`` says when each runs and what it is tested
against; the readable definition is ``conv.conv2d_forward_general``.

Two kernels share one row body (:func:`_accumulate_rows`):

- :func:`correlation_kernel` (functional API): run-time plane shape, two output rows
  per task, a plain output (a 5x5 or 7x7 layer the Winograd rule takes runs
  :func:`conv_rows_kernel` instead: ``conv._correlate``);
- :func:`conv_rows_kernel` (the fused groups of ``numbacnn/fused``): the plane shape and
  the buffers' borders compiled in, rows per task from ``conv_tuning.row_blocking``, and
  the store fused with what follows the convolution (``MODE_*``).

Why bordered buffers
--------------------
A stride-1 convolution with padding p reads its input zero-padded. Instead of
copying the input into a padded array on every call (twice: forward and
grad-weight), the layer that *produces* the input writes it straight into the
interior of a buffer whose border is zero: the buffer is zeroed once when it is
allocated, and every kernel writes interiors only, so the border stays zero.
The same holds backwards: grad-input is a correlation of the output gradient
padded by ``K - 1 - p``, so the kernel producing that gradient writes it into a
bordered buffer too. A bordered buffer is passed as the whole array plus the
(row, column) offset of its interior; the reading kernels see a plain C-contiguous
array, which LLVM vectorises.

As everywhere in ``kernels/``: no validation, no allocation of outputs (a task's
small scratch rows excepted).
"""

from functools import lru_cache

import numpy as np
from numba import literally, njit, prange

from numbacnn.kernels.common import FASTMATH, is_new_max
from numbacnn.kernels.cpu import conv_winograd as winograd
from numbacnn.kernels.cpu.conv_tuning import (BUILT_KERNELS, VECTOR_BYTES, filter_block_size, forward_fastmath,
                                              kernel_rows_outside, plane_blocking, planes_outside, row_blocking)

# What conv_rows_kernel does with each sum before storing it
MODE_BIAS = 0       # plain: the convolution (grad-input)
MODE_RELU = 1       # conv + ReLU
MODE_RELU_POOL = 2  # conv + ReLU + 2x2 max pool with argmax indices
MODE_MASK = 3       # grad-input times the previous ReLU's mask (x > 0)


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


@njit(inline="always", fastmath=FASTMATH)
def _accumulate_rows_by_kernel_row(sums, x, w, n, top_row, first, width, filters, kernel_h, kernel_w, rows,
                                   filter_block):
    """The same sums as :func:`_accumulate_rows`, for kernels larger than 3x3: the loop
    over kernel rows (kh) runs *outside* the loop over columns, so the unrolled body per
    column vector is rows x filter_block x kernel_w FMAs instead of rows x filter_block x
    kernel_h x kernel_w. A 5x5 or 7x7 kernel then keeps a register block of several rows
    and filters (``conv_tuning.row_blocking``) within the budget LLVM vectorises, at the
    price of loading and storing each row's sums once per kernel row rather than once
    per channel. The sums are added in another order than :func:`_accumulate_rows`'s."""
    for c in range(x.shape[1]):
        for first_filter in range(0, filters, filter_block):
            for kh in range(kernel_h):
                for ow in range(width):
                    for f in range(first_filter, first_filter + filter_block):
                        for r in range(rows):
                            s = sums[first + r, f, ow]
                            for kw in range(kernel_w):
                                s += w[f, c, kh, kw] * x[n, c, top_row + first + r + kh, ow + kw]
                            sums[first + r, f, ow] = s


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
    task accumulates its two output rows of all F filters in ``pair_sums`` with the
    row body shared with :func:`conv_rows_kernel` (:func:`_accumulate_rows`, two rows
    together, FB = ``filter_block_size(...)`` filters per block):

    Two rows share every weight broadcast, which halves the per-channel set-up cost
    that dominated narrow rows (1.6x faster than one row of all 10 filters). An odd
    last row is computed with the row above it, which only that task's pair stores.

    Rows are computed over CW columns, OW rounded up to whole 64-byte vectors, so
    there is no scalar or narrow remainder loop. The extra columns read the start of
    the next input row (or channel, or image) and are never stored; only the last
    task, whose extra columns would lie past the end of x, computes exactly OW.

    (Reading x through a local zero-padded strip instead stopped LLVM from vectorising
    this loop, hence the padded copy made by the caller.)

    :func:`conv_rows_kernel` is this kernel's fused cousin for ``Sequential``'s
    groups: it compiles the plane shape in too (a constant column count vectorises
    narrow rows 1.4-2x better), which suits a network's handful of layer shapes but
    not the functional API, where every new input size would compile a new kernel.
    (The functional API accepts that for 5x5 and 7x7 layers the 1-D Winograd rule
    takes, 1.4-2.3x faster per op: ``conv._correlate``.)
    """
    filter_block = filter_block_size(filters, kernel_h, kernel_w)
    by_kernel_row = kernel_rows_outside(kernel_h, kernel_w)
    @njit(parallel=True, cache=True, fastmath=forward_fastmath(kernel_h, kernel_w))
    def correlate(out, x, w, b):
        batch, _, out_height, out_width = out.shape
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
            if by_kernel_row:
                _accumulate_rows_by_kernel_row(pair_sums, x, w, n, top_row, 0, computed_width, filters, kernel_h,
                                               kernel_w, 2, filter_block)
            else:
                _accumulate_rows(pair_sums, x, w, n, top_row, 0, computed_width, filters, kernel_h, kernel_w, 2,
                                 filter_block)
            for row in range(first_stored, 2):
                for f in range(filters):
                    for ow in range(out_width):
                        out[n, f, top_row + row, ow] = pair_sums[row, f, ow]

    BUILT_KERNELS.append(correlate)
    return correlate


@njit(inline="always")
def _store_task_rows(out, second, mask, sums, n, top_row, first, out_width, mode, store_twice, out_top, out_left,
                     second_top, second_left, mask_top, mask_left, zero):
    """Store a task's rows through the mode: sums (R, F, >= OW) holds output rows
    top_row .. top_row + R - 1 of image n; rows first .. R - 1 go to out's interior at
    (out_top, out_left), ReLU'd in MODE_RELU / MODE_RELU_POOL, through the previous
    ReLU's mask (mask's interior at (mask_top, mask_left) > 0) in MODE_MASK, and with
    ``store_twice`` into second's interior at (second_top, second_left) too. The one
    store of the rows kernels: ``conv_rows_kernel`` calls it directly, the plane bodies
    (``_conv_planes_kernel``, ``_conv_winograd_kernel``, whose sums are (F, R, W))
    through :func:`_store_plane_sums`, on a transposed view."""
    for r in range(first, sums.shape[0]):
        oh = top_row + r
        for f in range(sums.shape[1]):
            for ow in range(out_width):
                value = sums[r, f, ow]
                if mode == MODE_RELU or mode == MODE_RELU_POOL:
                    value = value if not value <= 0 else zero  # "not <= 0" so NaN passes through, as relu
                elif mode == MODE_MASK:
                    value = value if mask[n, f, mask_top + oh, mask_left + ow] > 0 else zero
                out[n, f, out_top + oh, out_left + ow] = value
                if store_twice:
                    second[n, f, second_top + oh, second_left + ow] = value


@njit(inline="always")
def _task_rows(task, blocks, rows_per_task, out_height):
    """(n, top_row, first_stored) of a rows kernel's task, one of N * ``blocks``: image
    n, output rows top_row .. top_row + rows_per_task - 1. A last block that would run
    past out_height starts earlier, overlapping its neighbour, and stores only its rows
    from first_stored on (> 0 then), the ones its neighbour did not."""
    first_new = (task % blocks) * rows_per_task
    top_row = min(first_new, out_height - rows_per_task)
    return task // blocks, top_row, first_new - top_row


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


@lru_cache(maxsize=None)
def conv_rows_kernel(filters, kernel_h, kernel_w, mode, in_height, in_width, out_top=0, out_left=0, pool_top=0,
                     pool_left=0, mask_top=0, mask_left=0, store_out=True, store_twice=False, itemsize=4,
                     winograd=False):
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

    With ``winograd`` (the caller applies ``conv_tuning.winograd_outputs``) the sums
    are taken by 1-D Winograd, :func:`_conv_winograd_kernel`, with the same result to
    rounding. With ``store_twice`` (MODE_BIAS / MODE_MASK), ``pooled`` is a second bordered
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
    if winograd:
        return _conv_winograd_kernel(filters, kernel_h, kernel_w, mode, in_height, in_width, out_top, out_left,
                                     pool_top, pool_left, mask_top, mask_left, store_out, store_twice, itemsize)
    if planes_outside(kernel_h, kernel_w, computed_width // vector):
        return _conv_planes_kernel(filters, kernel_h, kernel_w, mode, in_height, in_width, out_top, out_left,
                                   pool_top, pool_left, mask_top, mask_left, store_out, store_twice, itemsize)
    rows, filter_block, rows_per_task = row_blocking(filters, kernel_h, kernel_w, out_height,
                                                     computed_width // vector)
    # sums rows hold a multiple of 32 columns, whole chunks of pool windows (columns
    # past CW are never computed: their windows are dropped)
    sums_width = (computed_width + 2 * POOL_WINDOWS_CHUNK - 1) // (2 * POOL_WINDOWS_CHUNK) * (2 * POOL_WINDOWS_CHUNK)
    pool_windows = sums_width // 2
    blocks = (out_height + rows_per_task - 1) // rows_per_task
    pooled_rows = 2 * (out_height // 2)  # rows covered by whole pool windows
    by_kernel_row = kernel_rows_outside(kernel_h, kernel_w)

    @njit(parallel=True, cache=True, fastmath=forward_fastmath(kernel_h, kernel_w))
    def conv_rows(out, pooled, indices, mask, x, w, b):
        batch = x.shape[0]
        zero = x.dtype.type(0)
        for task in prange(batch * blocks):
            n, top_row, first_stored = _task_rows(task, blocks, rows_per_task, out_height)
            sums = np.empty((rows_per_task, filters, sums_width), x.dtype)
            # Run-time trip counts (from x's width, equal to the compiled ones) for the
            # bias fill and, on rows of two vectors or more, the store: with the constant
            # ones LLVM unrolled both into scalar stores (1280 for the fill of a task of
            # Tiny VGG's first layer; the ReLU store one element at a time) instead of
            # vectorising them. A one-vector row (14 wide) keeps its constant store width:
            # at run time its 14 columns never reached the 16-wide vector loop.
            row_width = x.shape[3] - kernel_w + 1
            computed = row_width + (computed_width - out_width)
            store_width = row_width if computed_width >= 2 * vector else out_width
            for r in range(rows_per_task):
                for f in range(filters):
                    bias = b[f]
                    for ow in range(computed):
                        sums[r, f, ow] = bias
            for first in range(0, rows_per_task, rows):
                if by_kernel_row:
                    if task == batch * blocks - 1:
                        _accumulate_rows_by_kernel_row(sums, x, w, n, top_row, first, out_width, filters, kernel_h,
                                                       kernel_w, rows, filter_block)
                    else:
                        _accumulate_rows_by_kernel_row(sums, x, w, n, top_row, first, computed_width, filters,
                                                       kernel_h, kernel_w, rows, filter_block)
                elif task == batch * blocks - 1:
                    _accumulate_rows(sums, x, w, n, top_row, first, out_width, filters, kernel_h, kernel_w, rows,
                                     filter_block)
                else:
                    _accumulate_rows(sums, x, w, n, top_row, first, computed_width, filters, kernel_h, kernel_w,
                                     rows, filter_block)
            if mode != MODE_RELU_POOL or store_out:
                _store_task_rows(out, pooled, mask, sums, n, top_row, first_stored, store_width, mode, store_twice,
                                 out_top, out_left, pool_top, pool_left, mask_top, mask_left, zero)
            if mode == MODE_RELU_POOL:
                first_pooled = first_stored + (top_row + first_stored) % 2  # windows start on even rows
                stop = min(rows_per_task, pooled_rows - top_row) - 1
                _pool_task_rows(pooled, indices, sums, n, top_row, first_pooled, stop, out_width, pool_top,
                                pool_left, pool_windows)

    BUILT_KERNELS.append(conv_rows)
    return conv_rows


@njit(inline="always", fastmath=FASTMATH)
def _accumulate_planes_by_kernel_row(sums, xs, w, c, length, filters, kernel_h, kernel_w, filter_block, in_width):
    """Adds input channel c's taps to a task's flattened sums: sums[f, i] += w[f, c, kh,
    kw] * xs[i + kh * in_width + kw] for i < length, every filter, kernel row and tap.

    sums (F, R * in_width) holds R output rows on rows of the *input's* width: output
    (r, ow) is element ``r * in_width + ow``, so every tap is a constant offset into the
    flattened input plane xs (which starts at the task's first row) and one loop of
    ``length = (R - 1) * in_width + OW`` elements covers all R rows; the in_width - OW
    elements between rows are computed and never stored (the tap reads stay inside the
    plane). Against :func:`_accumulate_rows_by_kernel_row`, whose loop covers one row
    (one or two vectors), the loop is long (the set-up of each filter block and kernel
    row is paid once per task, not once per row block), and each input load feeds
    filter_block FMAs with no register block of rows. Inlined into
    :func:`_conv_planes_kernel`, counts compiled in; each sum gets its taps in
    the same order as in :func:`_accumulate_rows_by_kernel_row` (c, kh, kw)."""
    for first_filter in range(0, filters, filter_block):
        for kh in range(kernel_h):
            for i in range(length):
                for f in range(first_filter, first_filter + filter_block):
                    s = sums[f, i]
                    for kw in range(kernel_w):
                        s += w[f, c, kh, kw] * xs[i + kh * in_width + kw]
                    sums[f, i] = s


@njit(inline="always")
def _store_plane_sums(out, pooled, indices, mask, sums, n, top_row, first_stored, out_width, mode, store_out,
                      store_twice, out_top, out_left, pool_top, pool_left, mask_top, mask_left, pooled_rows,
                      pool_windows, zero):
    """The store (and pool) of a task whose sums are planes, ``sums`` (F, R, W) holding
    output rows top_row .. top_row + R - 1 (:func:`_conv_planes_kernel`,
    :func:`_conv_winograd_kernel`): :func:`_store_task_rows` on the (R, F, W) view, then,
    in MODE_RELU_POOL, :func:`_pool_task_rows` on a contiguous (R, F, W) copy (on the
    transposed view the 5x5 forward + pool at 28 wide took 5.5 ms instead of 3.3, one
    thread). Windows start on even rows; the rows past ``pooled_rows`` hold none."""
    if mode != MODE_RELU_POOL or store_out:
        _store_task_rows(out, pooled, mask, sums.transpose((1, 0, 2)), n, top_row, first_stored, out_width, mode,
                         store_twice, out_top, out_left, pool_top, pool_left, mask_top, mask_left, zero)
    if mode == MODE_RELU_POOL:
        first_pooled = first_stored + (top_row + first_stored) % 2  # windows start on even rows
        stop = min(sums.shape[1], pooled_rows - top_row) - 1
        rows_first = np.ascontiguousarray(sums.transpose((1, 0, 2)))
        _pool_task_rows(pooled, indices, rows_first, n, top_row, first_pooled, stop, out_width, pool_top, pool_left,
                        pool_windows)


@lru_cache(maxsize=None)
def _conv_planes_kernel(filters, kernel_h, kernel_w, mode, in_height, in_width, out_top, out_left, pool_top,
                        pool_left, mask_top, mask_left, store_out, store_twice, itemsize):
    """:func:`conv_rows_kernel` for kernels larger than 3x3 on rows of two or more
    vectors (``conv_tuning.planes_outside``): the same ``conv_rows(out, pooled,
    indices, mask, x, w, b)``, arguments, modes and result, summed by flattened planes.

    Parallel over (image, block of output rows; ``conv_tuning.plane_blocking``: the
    whole 28x28 plane of Tiny VGG's 5x5 and 7x7 layers). Each task keeps its rows of
    all F filters in ``sums`` (F, R * in_width), on rows of the input's width, and adds
    every channel with :func:`_accumulate_planes_by_kernel_row`:

        for c:                     run-time loop over input channels
          for filter block, kh:    FB filters (5 of 10)
            for i < length:        innermost after unrolling, vectorised: R rows at once
              for f, kw:           unrolled: FB x KW FMAs, KW input loads

    (82 GFLOP/s for 5x5 and 73 for 7x7 at 28 wide, one thread, float32, against 65
    and 64 for the kernel-row body, whose loop covered one row of two vectors.) The
    store and the pool read the sums as (R, F, in_width) rows; a last block that would
    run past OH starts earlier and stores only the rows its neighbour did not."""
    out_height = in_height - kernel_h + 1
    out_width = in_width - kernel_w + 1
    filter_block, rows_per_task = plane_blocking(filters, out_height, in_width, itemsize)
    blocks = (out_height + rows_per_task - 1) // rows_per_task
    length = (rows_per_task - 1) * in_width + out_width  # first to last output element of a task
    pooled_rows = 2 * (out_height // 2)  # rows covered by whole pool windows
    pool_windows = in_width // 2  # windows of a sums row; those past OW // 2 are dropped

    @njit(parallel=True, cache=True, fastmath=forward_fastmath(kernel_h, kernel_w))
    def conv_planes(out, pooled, indices, mask, x, w, b):
        batch, channels = x.shape[0], x.shape[1]
        zero = x.dtype.type(0)
        for task in prange(batch * blocks):
            n, top_row, first_stored = _task_rows(task, blocks, rows_per_task, out_height)
            flat_sums = np.empty((filters, rows_per_task * in_width), x.dtype)
            for f in range(filters):
                for i in range(length):
                    flat_sums[f, i] = b[f]
            for c in range(channels):
                xs = x[n, c].reshape(-1)[top_row * in_width:]  # starts at the task's first row
                _accumulate_planes_by_kernel_row(flat_sums, xs, w, c, length, filters, kernel_h, kernel_w,
                                                 filter_block, in_width)
            sums = flat_sums.reshape((filters, rows_per_task, in_width))
            _store_plane_sums(out, pooled, indices, mask, sums, n, top_row, first_stored, out_width, mode, store_out,
                              store_twice, out_top, out_left, pool_top, pool_left, mask_top, mask_left, pooled_rows,
                              pool_windows, zero)

    BUILT_KERNELS.append(conv_planes)
    return conv_planes


@lru_cache(maxsize=None)
def _conv_winograd_kernel(filters, kernel_h, kernel_w, mode, in_height, in_width, out_top, out_left, pool_top,
                          pool_left, mask_top, mask_left, store_out, store_twice, itemsize):
    """:func:`conv_rows_kernel` with fewer multiply-adds, for 5x5 and 7x7 kernels
    (``conv_tuning.winograd_outputs``): the same ``conv_rows(out, pooled, indices, mask,
    x, w, b)``, arguments, modes and result (to rounding), summed with 1-D Winograd
    F(m, KH) down the columns (``conv_winograd.py``; m = ``conv_tuning.WINOGRAD_TILE_ROWS``):
    each tile of m output rows takes n = m + KH - 1 transformed input rows per kernel
    column instead of m x KH input rows: per output row and kernel column 2 multiply-adds
    instead of 5 (5x5, F(4, 5)) or 4 instead of 7 (7x7, F(2, 7)).

    The weights are transformed once per call (``transformed`` (n, F, C, KW)). Parallel
    over (image, block of output rows, as the plane body: ``conv_tuning.plane_blocking``,
    rounded up to whole tiles). Each task, for each input channel, transforms its
    tiles of input rows into ``d`` (n, tiles * in_width) and adds them, every filter
    and kernel column, into ``products`` (n, F, tiles * in_width)
    (``conv_winograd.accumulate_transformed``: the plane body's loop on transformed
    rows). Then it transforms the products back into ``sums`` (F, R, in_width), the
    plane body's layout, and stores and pools them exactly as
    :func:`_conv_planes_kernel` does."""
    out_height = in_height - kernel_h + 1
    out_width = in_width - kernel_w + 1
    outputs, at, g, bt = winograd.kernel_transforms(kernel_h, out_height, itemsize)
    points = outputs + kernel_h - 1
    filter_block, rows_per_task = plane_blocking(filters, out_height, in_width, itemsize)
    # whole tiles per task. products (n, F, tiles * in_width) is n / m times the plane
    # body's sums, so a task's scratch exceeds the PLANE_SUMS_BYTES plane_blocking sized
    # the blocks for (Tiny VGG's 28x28 5x5: 72 KB of products against 36 of sums; smaller
    # blocks were not tried)
    rows_per_task = min(out_height, (rows_per_task + outputs - 1) // outputs * outputs)
    blocks = (out_height + rows_per_task - 1) // rows_per_task
    tiles = rows_per_task // outputs
    length = tiles * in_width - (kernel_w - 1)  # positions whose kernel columns stay inside d
    pooled_rows = 2 * (out_height // 2)  # rows covered by whole pool windows
    pool_windows = in_width // 2  # windows of a sums row; those past OW // 2 are dropped

    @njit(parallel=True, cache=True, fastmath=forward_fastmath(kernel_h, kernel_w))
    def conv_winograd(out, pooled, indices, mask, x, w, b):
        batch, channels = x.shape[0], x.shape[1]
        zero = x.dtype.type(0)
        transformed = np.empty((points, filters, channels, kernel_w), x.dtype)
        winograd.transform_weights(transformed, w, g)
        for task in prange(batch * blocks):
            n, top_row, first_stored = _task_rows(task, blocks, rows_per_task, out_height)
            d = np.empty((points, tiles * in_width), x.dtype)
            products = np.zeros((points, filters, tiles * in_width), x.dtype)
            for c in range(channels):
                winograd.transform_input_rows(d, x, n, c, top_row, tiles, bt, outputs)
                winograd.accumulate_transformed(products, d, transformed, c, length, filters, kernel_w,
                                                filter_block, points)
            sums = np.empty((filters, rows_per_task, in_width), x.dtype)
            winograd.transform_output_rows(sums, products, b, tiles, at)
            _store_plane_sums(out, pooled, indices, mask, sums, n, top_row, first_stored, out_width, mode, store_out,
                              store_twice, out_top, out_left, pool_top, pool_left, mask_top, mask_left, pooled_rows,
                              pool_windows, zero)

    BUILT_KERNELS.append(conv_winograd)
    return conv_winograd
