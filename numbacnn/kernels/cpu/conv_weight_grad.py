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

from numba import njit, prange

from numbacnn.kernels.common import FASTMATH
from numbacnn.kernels.cpu.conv_tuning import BUILT_KERNELS


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
    """

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
