"""The weight gradient of a strided convolution with the images in the vector lanes:
``conv.py``'s ``LANES`` variant of ``conv2d_backward_weight`` (it says when it runs and
what it is tested against; the definition is ``conv.conv2d_backward_weight_general``).

Why images in the lanes
-----------------------
The fast grad-weight (``conv_weight_grad.weight_gradient_kernel``) takes dot products
along output rows; a strided layer's rows are short (Tiny VGG's stride-2 layers: 14
and 4 columns, 7 and 2 per phase row), so its time went to starting and finishing dot
products. Packing several images in one row made the rows long but summed several
images' rows in float32 (see ``conv_phases.py``). Here the batch is the innermost axis
instead (``x`` as (C, HP, WP, N), dout as (F, OH, OW, N)): each tap of each output
position is one multiply-add per image, N of them side by side in the vector lanes, at
the stride's own multiply-add count, and each image keeps its own sums:

- a float32 (the data's type) sum per image over one output row,
- added into a float64 sum per image over the rows,
- the images' float64 sums added in a fixed order,

so, as in every CPU grad-weight, products are summed in the data's type over one
output row at most, and the result does not depend on the thread count.
"""

import numpy as np
from numba import njit, prange

from numbacnn.kernels.common import FASTMATH


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


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def weight_gradient_lanes(dw, dout_t, x_t, stride_h, stride_w):
    """dw (F, C, KH, KW) = sum over n, oh, ow of dout_t[f, oh, ow, n] *
    x_t[c, oh * SH + kh, ow * SW + kw, n].

    dout_t (F, OH, OW, N) and x_t (C, HP, WP, N), x zero-padded (:func:`images_last`).
    Parallel over (filter, channel); for each tap the loop over images is innermost,
    vectorised, with a float32 (data type) sum per image and output row added into a
    float64 sum per image; the images' sums are added last, in a fixed order.

    One kernel row's KW taps are summed in the same pass over a row's columns: each
    sum is loaded and stored once per column, and with KW of them independent the
    loop no longer waits on one sum's store to reach its next load (one thread, Tiny
    VGG's stride-2 layers: 0.148 -> 0.130 ms on 14x14 outputs, 0.142 -> 0.127 on
    4x4, measured; the same sums in the same order)."""
    filters, channels, kernel_h, kernel_w = dw.shape
    out_height, out_width, batch = dout_t.shape[1], dout_t.shape[2], dout_t.shape[3]
    zero = dout_t.dtype.type(0)
    for task in prange(filters * channels):
        f = task // channels
        c = task % channels
        row_sums = np.empty((kernel_w, batch), dout_t.dtype)  # per tap and image, one output row, the data's type
        image_sums = np.empty((kernel_w, batch), np.float64)  # per tap and image, every row
        for kh in range(kernel_h):
            image_sums[:] = 0.0
            for oh in range(out_height):
                row_sums[:] = zero
                for ow in range(out_width):
                    gradient = dout_t[f, oh, ow]
                    for kw in range(kernel_w):
                        pixel = x_t[c, oh * stride_h + kh, ow * stride_w + kw]
                        sums = row_sums[kw]
                        for n in range(batch):
                            sums[n] += gradient[n] * pixel[n]
                for kw in range(kernel_w):
                    for n in range(batch):
                        image_sums[kw, n] += row_sums[kw, n]
            for kw in range(kernel_w):
                total = 0.0
                for n in range(batch):
                    total += image_sums[kw, n]
                dw[f, c, kh, kw] = total
