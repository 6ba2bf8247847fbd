"""The fast weight-gradient kernels (stride 1, dilation 1, groups 1): the fast
variants of ``conv.conv2d_backward_weight`` (and, with ``with_bias``, of
``conv.conv2d_backward_bias`` in the same pass). ``conv.py`` says when each runs and
what it is tested against; the readable definition is
``conv.conv2d_backward_weight_general``.

Both write float64 partial sums, one slice per chunk of the work (``T`` =
``conv_tuning.GRAD_WEIGHT_CHUNKS`` or fewer, whatever the thread count, so the result
does not depend on it); the caller adds the slices. A float32 product is summed in
float32 over one output row (or plane) at most, then added in float64.
"""

from functools import lru_cache

import numpy as np
from numba import literally, njit, prange

from numbacnn.kernels.common import FASTMATH
from numbacnn.kernels.cpu import conv_winograd as winograd
from numbacnn.kernels.cpu.conv_tuning import BUILT_KERNELS, VECTOR_BYTES, weight_gradient_by_planes


@lru_cache(maxsize=None)
def weight_gradient_kernel(filters, kernel_h, kernel_w, dout_top=0, dout_left=0, with_bias=False):
    """Partial weight (and bias) gradients in one parallel region.

    ``weight_gradient(partial_w, partial_b, dout, x)``, dout's border and ``with_bias``
    compiled in (a run-time offset would stop LLVM vectorising: see
    ``conv_rows.conv_rows_kernel``)::

        partial_w (T, F, C, KH, KW) float64, written: chunk t's sum of
                  dout[n, f, oh, ow] * x[n, c, oh + kh, ow + kw]
        partial_b (T, F) float64, written with ``with_bias``: chunk t's sum of
                  dout[n, f, oh, ow] (not touched otherwise: any float64 array)
        dout      (N, F, OH, OW), or a bordered buffer with the (OH, OW) gradient at
                  (dout_top, dout_left)
        x         (N, C, OH + KH - 1, OW + KW - 1), the zero-padded input

    The N * OH output rows are split into T equal chunks, one parallel task each. For
    each output row, every (filter, c, kh, kw) tap is a dot product of the dout row
    with a shifted input row, both in L1; two filters are done together so each input
    load feeds two FMAs; the bias sums ride along the same rows:

        for row (n, oh):
          [bias: for f, for ow: row sum]
          for filter pair, c, kh, kw:
            for ow:                vectorised: two reductions, in the input dtype
            partial_w[...] += the two row sums, in float64

    An odd last filter is paired with itself and stored once. (Keeping more taps'
    sums in a local array, to share more loads, stopped LLVM from vectorising; four
    filters at a time ran no faster than two.)

    Kernels larger than 3x3 (``conv_tuning.weight_gradient_by_planes``) get
    :func:`_weight_gradient_planes_kernel` instead, with the same signature and result.
    """
    if weight_gradient_by_planes(kernel_h, kernel_w):
        return _weight_gradient_planes_kernel(filters, kernel_h, kernel_w, dout_top, dout_left, with_bias)

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def weight_gradient(partial_w, partial_b, dout, x):
        chunks = partial_w.shape[0]
        batch, channels = x.shape[0], x.shape[1]
        out_height = x.shape[2] - kernel_h + 1
        out_width = x.shape[3] - kernel_w + 1
        total_rows = batch * out_height
        zero = dout.dtype.type(0)  # the row sums' type: float32 for float32 data
        for chunk in prange(chunks):
            for f in range(filters):
                if with_bias:
                    partial_b[chunk, f] = 0.0
                for c in range(channels):
                    for kh in range(kernel_h):
                        for kw in range(kernel_w):
                            partial_w[chunk, f, c, kh, kw] = 0.0
            for row in range(chunk * total_rows // chunks, (chunk + 1) * total_rows // chunks):
                n = row // out_height
                oh = row % out_height
                drow = dout_top + oh
                if with_bias:
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

    BUILT_KERNELS.append(weight_gradient)
    return weight_gradient


@njit(cache=True, inline="never", fastmath=FASTMATH)
def _kernel_row_dots(g0, g1, xs, length, kernel_w):
    """The dot products of two filters' gradient planes g0, g1 (L,) with the input
    plane xs shifted by ``kw``, for each tap kw < kernel_w (<= 7) of one kernel row: two
    7-tuples, (sum over i < length of g0[i] * xs[i + kw]) and the same for g1; the
    entries from kernel_w on are zero. (xs starts at the kernel row: an index
    ``start + i`` with a run-time start might be negative as far as Numba knows, and its
    wrap-around test turned every load into a gather.)

    One named accumulator per tap and filter (LLVM vectorises named scalar
    accumulators, not a local array of them), 2 + kernel_w loads for 2 * kernel_w
    FMAs. Compiled per kernel_w (``literally``), so the taps past it drop out before
    LLVM vectorises the loop. (Not inlined: Numba's array analysis of the parallel
    kernel fails on the returned tuples.)"""
    literally(kernel_w)
    zero = g0.dtype.type(0)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = zero  # g0's sums, tap 0 .. 6
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = zero  # g1's
    for i in range(length):
        u = g0[i]
        v = g1[i]
        p = xs[i]
        a0 += u * p
        b0 += v * p
        if kernel_w > 1:
            p = xs[i + 1]
            a1 += u * p
            b1 += v * p
        if kernel_w > 2:
            p = xs[i + 2]
            a2 += u * p
            b2 += v * p
        if kernel_w > 3:
            p = xs[i + 3]
            a3 += u * p
            b3 += v * p
        if kernel_w > 4:
            p = xs[i + 4]
            a4 += u * p
            b4 += v * p
        if kernel_w > 5:
            p = xs[i + 5]
            a5 += u * p
            b5 += v * p
        if kernel_w > 6:
            p = xs[i + 6]
            a6 += u * p
            b6 += v * p
    return (a0, a1, a2, a3, a4, a5, a6), (b0, b1, b2, b3, b4, b5, b6)


@lru_cache(maxsize=None)
def _weight_gradient_planes_kernel(filters, kernel_h, kernel_w, dout_top, dout_left, with_bias):
    """:func:`weight_gradient_kernel` for kernels larger than 3x3 (up to 7 wide): the
    same ``weight_gradient(partial_w, partial_b, dout, x)`` and result, summed by planes.

    The row dot products of :func:`weight_gradient_kernel` run over 14 or 28 columns
    and end in a horizontal sum each; with 25 or 49 taps that is most of the work
    (7-20 GFLOP/s). Here, as in :func:`weight_bias_gradient_3x3_kernel`, each image's
    gradient plane of a filter is first copied into a task-local plane with x's row
    width W = OW + KW - 1, zero past column OW. In the flattened planes tap (kh, kw) is
    then the constant offset ``kh * W + kw``: the sum over the image of
    ``dout[oh, ow] * x[oh + kh, ow + kw]`` is one dot product over
    ``L = (OH - 1) * W + OW`` consecutive elements (the zero columns add nothing),
    rounded up to whole 64-byte vectors (L'): the gradient planes are zero past L and
    the image's input planes are copied into local planes with a zero tail, so no
    scalar remainder loop runs and no read leaves a plane (14x14: 51 -> 62 GFLOP/s,
    28x28: 75 -> 81, one thread, float32). Kernel rows are a loop; each runs the KW
    taps of two filters together (:func:`_kernel_row_dots`, 2 + KW loads for 2 x KW FMAs):

        for image n of the chunk:     T chunks of the batch, one parallel task each
          copy its C input planes     (zero tails)
          for filter pair:            copy the two gradient planes, [bias: their sums]
            for c, kh:
              for i < L':             vectorised: 2 x KW reductions in the input dtype
              partial_w[...] += the 2 x KW sums, in float64

    The dot products (one per image, filter, channel and tap) are added into the
    chunk's float64 partial sums. The chunks split the batch (a chunk past it writes
    zeros), whatever the thread count; an odd last filter pairs with itself.
    """

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def weight_gradient_planes(partial_w, partial_b, dout, x):
        chunks = partial_w.shape[0]
        batch, channels, height, width = x.shape
        out_height = height - kernel_h + 1
        out_width = width - kernel_w + 1
        length = (out_height - 1) * width + out_width  # first to last output element, on rows of W
        vector = VECTOR_BYTES // x.itemsize
        whole_length = (length + vector - 1) // vector * vector  # no remainder loop: the tail is zero
        for chunk in prange(chunks):
            for f in range(filters):
                if with_bias:
                    partial_b[chunk, f] = 0.0
                for c in range(channels):
                    for kh in range(kernel_h):
                        for kw in range(kernel_w):
                            partial_w[chunk, f, c, kh, kw] = 0.0
            # two filters' gradient planes on rows of W; the columns past OW and the tail
            # stay zero
            planes = np.zeros((2, whole_length), dout.dtype)
            # the image's input planes, each with a zero tail: the whole-vector dot
            # products of the last kernel row read zeros past the plane
            x_planes = np.zeros((channels, height * width + vector), x.dtype)
            for n in range(chunk * batch // chunks, (chunk + 1) * batch // chunks):
                for c in range(channels):
                    for row in range(height):
                        for col in range(width):
                            x_planes[c, row * width + col] = x[n, c, row, col]
                for first in range(0, filters, 2):
                    second = min(first + 1, filters - 1)  # an odd last filter pairs with itself
                    for oh in range(out_height):
                        for ow in range(out_width):
                            planes[0, oh * width + ow] = dout[n, first, dout_top + oh, dout_left + ow]
                            planes[1, oh * width + ow] = dout[n, second, dout_top + oh, dout_left + ow]
                    g0 = planes[0]
                    g1 = planes[1]
                    if with_bias:
                        _add_pair_bias_sums(partial_b, chunk, first, second, g0, g1, length)
                    for c in range(channels):
                        xs = x_planes[c]
                        for kh in range(kernel_h):
                            first_sums, second_sums = _kernel_row_dots(g0, g1, xs[kh * width:], whole_length,
                                                                       kernel_w)
                            for kw in range(kernel_w):
                                partial_w[chunk, first, c, kh, kw] += first_sums[kw]
                                if second != first:
                                    partial_w[chunk, second, c, kh, kw] += second_sums[kw]

    BUILT_KERNELS.append(weight_gradient_planes)
    return weight_gradient_planes


@lru_cache(maxsize=None)
def weight_gradient_winograd_kernel(filters, kernel_h, kernel_w, dout_top, dout_left, height, width, itemsize):
    """:func:`weight_gradient_kernel` with fewer multiply-adds, for the shapes whose
    forward runs ``conv_rows._conv_winograd_kernel`` (``conv_tuning.winograd_outputs``:
    5x5 and 7x7, x (N, C, height, width), OH whole tiles of m rows): the same
    ``weight_gradient(partial_w, partial_b, dout, x)``, with_bias, and result (to
    rounding), by 1-D Winograd F(m, KH) down the columns (``conv_winograd.py``).

    Why it works: fix a kernel column kw and a tile of m gradient rows e (one output
    column) and the n = m + KH - 1 input rows d it reads. The forward's identity
    ``y = AT @ ((G @ w) * (BT @ d))`` holds for every kernel column w; dot both sides
    with e: ``sum over i of e[i] * y[i] = sum over k of (AT.T @ e)[k] * (G @ w)[k] *
    (BT @ d)[k]``. Both sides are linear in w; the coefficient of w[kh] on the left is
    ``sum over i of e[i] * d[i + kh]``, this tile's share of the weight gradient at
    (kh, kw), and on the right ``sum over k of G[k, kh] * (AT.T @ e)[k] * (BT @ d)[k]``.
    The transforms act down the columns, so a shift along the row (kw) commutes with
    them: for each image the gradient planes are transformed by AT.T
    (``conv_winograd.transform_gradient_rows``), the input planes by BT (the
    forward's ``conv_winograd.transform_input_rows``), and per transformed row k,
    filter, channel and kernel column kw one dot product over the transformed planes,
    the input shifted by kw, is taken: n per m output rows instead of m x KH. G is
    applied once per chunk, in float64.

        for image i of the chunk:     chunks (partial_w.shape[0]) split the batch, one parallel task each
          transform its C input planes into d (C, n, >= tiles * W)
          for filter pair:            transform the two gradient planes into e, [bias: plane sums]
            for c, k:
              for p < whole_length:   vectorised: 2 x KW reductions in the input dtype
              products[k, f, c, :] += the 2 x KW sums, in float64
        partial_w[chunk, f, c, kh, kw] = sum over k of G[k, kh] * products[k, f, c, kw]

    As :func:`_weight_gradient_planes_kernel`: rows of x's width W (columns past OW of
    the transformed gradient are zero), one plane's products summed in the input dtype
    (:func:`_kernel_row_dots`, lengths rounded up to whole vectors over zero tails),
    planes added in float64. A chunk past the batch writes zeros."""
    out_height = height - kernel_h + 1
    out_width = width - kernel_w + 1
    outputs, at, g, bt = winograd.kernel_transforms(kernel_h, out_height, itemsize)
    points = outputs + kernel_h - 1
    tiles = out_height // outputs
    vector = VECTOR_BYTES // itemsize
    length = (tiles - 1) * width + out_width  # first to last real position
    whole_length = (length + vector - 1) // vector * vector  # the tail of e is zero

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def weight_gradient_winograd(partial_w, partial_b, dout, x):
        chunks = partial_w.shape[0]
        batch, channels = x.shape[0], x.shape[1]
        zero = dout.dtype.type(0)
        for chunk in prange(chunks):
            products = np.zeros((points, filters, channels, kernel_w), np.float64)
            for f in range(filters):
                partial_b[chunk, f] = 0.0
            # the image's transformed input planes, each with a zero tail for the
            # whole-vector dot products of the last kernel columns
            d = np.zeros((channels, points, whole_length + kernel_w + vector), x.dtype)
            e = np.zeros((2, points, tiles * width + vector), dout.dtype)  # two filters' transformed gradients
            for n in range(chunk * batch // chunks, (chunk + 1) * batch // chunks):
                for c in range(channels):
                    winograd.transform_input_rows(d[c], x, n, c, 0, tiles, bt, outputs)
                for first in range(0, filters, 2):
                    second = min(first + 1, filters - 1)  # an odd last filter pairs with itself
                    winograd.transform_gradient_rows(e[0], dout, n, first, dout_top, dout_left, tiles, width,
                                                     out_width, at)
                    winograd.transform_gradient_rows(e[1], dout, n, second, dout_top, dout_left, tiles, width,
                                                     out_width, at)
                    first_sum = zero
                    second_sum = zero
                    for oh in range(out_height):
                        for ow in range(out_width):
                            first_sum += dout[n, first, dout_top + oh, dout_left + ow]
                            second_sum += dout[n, second, dout_top + oh, dout_left + ow]
                    partial_b[chunk, first] += first_sum
                    if second != first:
                        partial_b[chunk, second] += second_sum
                    for c in range(channels):
                        for k in range(points):
                            first_sums, second_sums = _kernel_row_dots(e[0, k], e[1, k], d[c, k], whole_length,
                                                                       kernel_w)
                            for kw in range(kernel_w):
                                products[k, first, c, kw] += first_sums[kw]
                                if second != first:
                                    products[k, second, c, kw] += second_sums[kw]
            for f in range(filters):
                for c in range(channels):
                    for kh in range(kernel_h):
                        for kw in range(kernel_w):
                            s = 0.0
                            for k in range(points):
                                s += g[k][kh] * products[k, f, c, kw]
                            partial_w[chunk, f, c, kh, kw] = s

    BUILT_KERNELS.append(weight_gradient_winograd)
    return weight_gradient_winograd


@njit(inline="always", fastmath=FASTMATH)
def _add_pair_bias_sums(partial_b, chunk, first, second, g0, g1, count):
    """Two filters' bias sums over one plane: ``partial_b[chunk, first] += sum(g0[:count])``
    and second's of g1 (when it is another filter), each plane summed in the data's type,
    added into float64. Inlined into the plane kernels, where the planes are in cache
    for the weight sums."""
    zero = g0.dtype.type(0)
    first_sum = zero
    second_sum = zero
    for i in range(count):
        first_sum += g0[i]
        second_sum += g1[i]
    partial_b[chunk, first] += first_sum
    if second != first:
        partial_b[chunk, second] += second_sum


@njit(inline="always", fastmath=FASTMATH)
def _plane_taps_3x3(g0, g1, xs, count, row_step, col_step):
    """The nine taps of two filters over one plane, as 18 float sums (the first filter's
    nine, then the second's): for i < count, ``g0[i] * xs[i + tap]`` (and g1's), tap
    (kh, kw) at the flat offset ``kh * row_step + kw * col_step``; g0, g1, xs flat views.
    In a padded plane the taps are its neighbours (row_step the row width, col_step 1);
    in a gathered taps matrix, whole rows apart (``conv_gathered``). Inlined into
    :func:`weight_bias_gradient_3x3_kernel` and ``conv_gathered``'s grad-weight: the 18
    named accumulators, not a local array, are what LLVM keeps in vector registers (2
    gradient + 9 x loads for 18 FMAs)."""
    zero = g0.dtype.type(0)
    a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = zero  # first filter's taps
    c00 = c01 = c02 = c10 = c11 = c12 = c20 = c21 = c22 = zero  # second filter's
    for i in range(count):
        u = g0[i]
        v = g1[i]
        p = xs[i]
        a00 += u * p
        c00 += v * p
        p = xs[i + col_step]
        a01 += u * p
        c01 += v * p
        p = xs[i + 2 * col_step]
        a02 += u * p
        c02 += v * p
        p = xs[i + row_step]
        a10 += u * p
        c10 += v * p
        p = xs[i + row_step + col_step]
        a11 += u * p
        c11 += v * p
        p = xs[i + row_step + 2 * col_step]
        a12 += u * p
        c12 += v * p
        p = xs[i + 2 * row_step]
        a20 += u * p
        c20 += v * p
        p = xs[i + 2 * row_step + col_step]
        a21 += u * p
        c21 += v * p
        p = xs[i + 2 * row_step + 2 * col_step]
        a22 += u * p
        c22 += v * p
    return (a00, a01, a02, a10, a11, a12, a20, a21, a22, c00, c01, c02, c10, c11, c12, c20, c21, c22)


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
    dot products of :func:`weight_gradient_kernel` end in a horizontal sum every 14
    to 62 elements; here there is one per plane, and the nine taps of two filters are
    18 accumulators sharing each load (2 gz + 9 x loads for 18 FMAs instead of 3
    for 2). Written out by hand (:func:`_plane_taps_3x3`) because LLVM vectorises
    named scalar accumulators, not a local array of them. The float32 dot products
    are added into float64 per-thread partial sums once per plane. Parallel over
    chunks of images.

    The last ``length mod V`` elements (V = 16) would run one at a time after the
    vectorised loop (14 of Tiny VGG's 14x14 planes' 222: 28% of the kernel's time,
    measured), and a second vectorised loop for them costs 18 more horizontal sums.
    So the loop starts ``V - length mod V`` elements early instead, and runs whole
    vectors only: those first gradient elements are gz's top border (zero), and the x
    elements they multiply are the end of the previous plane's bottom border (zero
    too: both buffers are bordered, and every kernel writes interiors only). The
    array's first plane has no previous plane: it runs from its first element.
    """
    vector = VECTOR_BYTES // 4  # 16: whole float32 vectors (two of float64)

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def weight_bias_gradient(partial_w, partial_b, gz, x):
        chunks = partial_w.shape[0]
        batch, channels = x.shape[0], x.shape[1]
        plane = x.shape[2] * width
        length = (x.shape[2] - 2) * width - 2  # from gz's first interior element to its last
        # elements before gz's first interior one (zeros) that make the loop whole vectors
        early = (vector - length % vector) % vector
        if early > width + 1:  # more than the zero elements before it: a plane of a few columns
            early = 0
        gz_flat, x_flat = gz.reshape(-1), x.reshape(-1)
        for chunk in prange(chunks):
            partial_w[chunk] = 0.0
            partial_b[chunk] = 0.0
            for n in range(chunk * batch // chunks, (chunk + 1) * batch // chunks):
                for first in range(0, filters, 2):
                    second = min(first + 1, filters - 1)  # an odd last filter pairs with itself
                    g0 = gz[n, first].reshape(-1)[width + 1:]
                    g1 = gz[n, second].reshape(-1)[width + 1:]
                    _add_pair_bias_sums(partial_b, chunk, first, second, g0, g1, length)
                    g_start0 = (n * filters + first) * plane + width + 1 - early
                    g_start1 = (n * filters + second) * plane + width + 1 - early
                    for c in range(channels):
                        x_start = (n * channels + c) * plane
                        if x_start == 0:  # the array's first plane: nothing before it to read
                            taps = _plane_taps_3x3(g0, g1, x[n, c].reshape(-1), length, width, 1)
                        else:
                            taps = _plane_taps_3x3(gz_flat[g_start0:], gz_flat[g_start1:], x_flat[x_start - early:],
                                                   length + early, width, 1)
                        sums = partial_w[chunk, first, c]
                        for t in range(9):
                            sums[t // 3, t % 3] += taps[t]
                        if second != first:
                            sums = partial_w[chunk, second, c]
                            for t in range(9):
                                sums[t // 3, t % 3] += taps[9 + t]

    BUILT_KERNELS.append(weight_bias_gradient)
    return weight_bias_gradient
