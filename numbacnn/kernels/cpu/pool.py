"""2-D max pooling on the CPU, forward and backward.

Shapes::

    x    (N, C, H, W)     input
    out  (N, C, OH, OW)   output; dout is its gradient; dx has x's shape

Window (oh, ow) covers input rows ``oh * stride_h - pad_h + kh * dilation_h`` for
``kh`` in ``range(kernel_h)`` (likewise for columns). Padding is -inf, so taps
outside the image are skipped. The gradient of a window goes to its *first*
maximum in row-major order (``is_new_max``); a NaN wins and propagates.

Parallel over (image, channel) planes: overlapping windows of one plane add into dx
from a single thread, so there are no write races.
"""

import numpy as np
from numba import njit, prange

from numbacnn.kernels.common import is_new_max


@njit(inline="always")
def _window_argmax(x, n, c, oh, ow, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                   dilation_h, dilation_w):
    """(row, col, value) of the window's first maximum; row -1 if the window is all padding."""
    in_height, in_width = x.shape[2], x.shape[3]
    best_row = -1
    best_col = -1
    best = -np.inf
    for kh in range(kernel_h):
        ih = oh * stride_h - pad_h + kh * dilation_h
        if ih < 0 or ih >= in_height:
            continue
        for kw in range(kernel_w):
            iw = ow * stride_w - pad_w + kw * dilation_w
            if iw < 0 or iw >= in_width:
                continue
            value = x[n, c, ih, iw]
            if best_row < 0 or is_new_max(value, best):
                best = value
                best_row = ih
                best_col = iw
    return best_row, best_col, best


@njit(parallel=True, cache=True)
def max_pool2d_forward(out, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """out[n, c, oh, ow] = max of x over window (oh, ow)."""
    batch, channels, out_height, out_width = out.shape
    for plane in prange(batch * channels):
        n = plane // channels
        c = plane % channels
        for oh in range(out_height):
            for ow in range(out_width):
                best_row, best_col, best = _window_argmax(
                    x, n, c, oh, ow, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                    dilation_h, dilation_w)
                out[n, c, oh, ow] = best


@njit(parallel=True, cache=True)
def max_pool2d_backward(dx, dout, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """dx[argmax of window] += dout[window] (dx arrives zeroed)."""
    batch, channels, out_height, out_width = dout.shape
    for plane in prange(batch * channels):
        n = plane // channels
        c = plane % channels
        for oh in range(out_height):
            for ow in range(out_width):
                best_row, best_col, best = _window_argmax(
                    x, n, c, oh, ow, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                    dilation_h, dilation_w)
                if best_row >= 0:
                    dx[n, c, best_row, best_col] += dout[n, c, oh, ow]
