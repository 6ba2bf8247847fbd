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

``max_pool2d_forward`` / ``max_pool2d_backward`` are thin Python functions with the
CUDA backend's signatures: 2x2 windows with stride 2, no padding or dilation, every
window inside the image (Tiny VGG's pools) go to ``max_pool2x2_*``, which read each
input once and vectorise over output columns; everything else to the ``*_general``
kernels.
"""

import numpy as np
from numba import njit, prange

from numbacnn.kernels.common import FASTMATH, is_new_max, window_argmax



def _is_plain_2x2(out, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """2x2 windows, stride 2, no padding or dilation, the last window inside x."""
    return (kernel_h == 2 and kernel_w == 2 and stride_h == 2 and stride_w == 2 and pad_h == 0 and pad_w == 0
            and dilation_h == 1 and dilation_w == 1
            and 2 * out.shape[2] <= x.shape[2] and 2 * out.shape[3] <= x.shape[3])


def max_pool2d_forward(out, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """out (N, C, OH, OW) = max of x (N, C, H, W) over each window."""
    if _is_plain_2x2(out, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
        max_pool2x2_forward(out, x)
    else:
        max_pool2d_forward_general(out, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                                   dilation_w)


def max_pool2d_backward(dx, dout, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """dx (N, C, H, W) = dout (N, C, OH, OW) at each window's first maximum, 0 elsewhere
    (every element written)."""
    if _is_plain_2x2(dout, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
        max_pool2x2_backward(dx, dout, x)
    else:
        max_pool2d_backward_general(dx, dout, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                                    dilation_w)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def max_pool2x2_forward(out, x):
    """out[n, c, oh, ow] = max of x[n, c, 2oh:2oh+2, 2ow:2ow+2] (first maximum, NaN wins).

    Parallel over (image, channel, output row): both cores work at batch 1. The four
    taps are compared in row-major order with selects, which LLVM vectorises over ow.
    """
    batch, channels, out_height, out_width = out.shape
    for task in prange(batch * channels * out_height):
        plane = task // out_height
        n = plane // channels
        c = plane % channels
        oh = task % out_height
        for ow in range(out_width):
            best = x[n, c, 2 * oh, 2 * ow]
            value = x[n, c, 2 * oh, 2 * ow + 1]
            best = value if is_new_max(value, best) else best
            value = x[n, c, 2 * oh + 1, 2 * ow]
            best = value if is_new_max(value, best) else best
            value = x[n, c, 2 * oh + 1, 2 * ow + 1]
            best = value if is_new_max(value, best) else best
            out[n, c, oh, ow] = best


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def max_pool2x2_backward(dx, dout, x):
    """dx[n, c, 2oh + i, 2ow + j] = dout[n, c, oh, ow] at the window's first maximum, else 0.

    Parallel over (image, channel) planes. Each output row takes two vectorised
    passes: the first finds each window's winner (0..3, row-major) from x as the
    forward pass does, into a small int8 array; the second writes all four dx
    entries of every window, so each input is read once. (One fused pass ran 3x
    slower: LLVM vectorised it poorly; one task per row instead of per plane spent
    its time allocating ``winner``.) A last row or column of x outside every window
    (odd H or W) gets 0, so dx need not arrive zeroed.
    """
    batch, channels, out_height, out_width = dout.shape
    for plane in prange(batch * channels):
        n = plane // channels
        c = plane % channels
        # winner (OW,): position of each window's first maximum, 2 * row + column
        winner = np.empty(out_width, np.int8)
        for oh in range(out_height):
            for ow in range(out_width):
                # conditional expressions, not if-blocks: LLVM turns them into vector selects
                best = x[n, c, 2 * oh, 2 * ow]
                value = x[n, c, 2 * oh, 2 * ow + 1]
                take = is_new_max(value, best)
                best = value if take else best
                position = 1 if take else 0
                value = x[n, c, 2 * oh + 1, 2 * ow]
                take = is_new_max(value, best)
                best = value if take else best
                position = 2 if take else position
                value = x[n, c, 2 * oh + 1, 2 * ow + 1]
                winner[ow] = 3 if is_new_max(value, best) else position
            for row in range(2):
                for ow in range(out_width):
                    grad = dout[n, c, oh, ow]
                    dx[n, c, 2 * oh + row, 2 * ow] = grad if winner[ow] == 2 * row else 0
                    dx[n, c, 2 * oh + row, 2 * ow + 1] = grad if winner[ow] == 2 * row + 1 else 0
        for ih in range(2 * out_height, dx.shape[2]):
            for iw in range(dx.shape[3]):
                dx[n, c, ih, iw] = 0
        for ih in range(2 * out_height):
            for iw in range(2 * out_width, dx.shape[3]):
                dx[n, c, ih, iw] = 0


@njit(parallel=True, cache=True)
def max_pool2d_forward_general(out, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """out[n, c, oh, ow] = max of x over window (oh, ow)."""
    batch, channels, out_height, out_width = out.shape
    for plane in prange(batch * channels):
        n = plane // channels
        c = plane % channels
        for oh in range(out_height):
            for ow in range(out_width):
                best_row, best_col, best = window_argmax(
                    x, n, c, oh, ow, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                    dilation_h, dilation_w)
                out[n, c, oh, ow] = best


@njit(parallel=True, cache=True)
def max_pool2d_backward_general(dx, dout, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """dx = 0, then dx[argmax of window] += dout[window] (overlapping windows add up).

    Each thread owns one (image, channel) plane of dx and zeroes it first, so dx need
    not arrive zeroed.
    """
    batch, channels, out_height, out_width = dout.shape
    in_height, in_width = dx.shape[2], dx.shape[3]
    for plane in prange(batch * channels):
        n = plane // channels
        c = plane % channels
        for ih in range(in_height):
            for iw in range(in_width):
                dx[n, c, ih, iw] = 0
        for oh in range(out_height):
            for ow in range(out_width):
                best_row, best_col, best = window_argmax(
                    x, n, c, oh, ow, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                    dilation_h, dilation_w)
                if best_row >= 0:
                    dx[n, c, best_row, best_col] += dout[n, c, oh, ow]


# --------------------------------------------------------------------------- #
# indices (PyTorch's return_indices) and max unpooling
#
#   indices  (N, C, OH, OW) int64: each window's first maximum as a flat index into
#            its (H, W) plane, ``row * W + col`` (PyTorch's format); -1 for a window
#            that is all padding (it has no maximum and gets no gradient)
# --------------------------------------------------------------------------- #


@njit(parallel=True, cache=True)
def max_pool2d_forward_indices(out, indices, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                               dilation_h, dilation_w):
    """out[n, c, oh, ow] = max of x over window (oh, ow); indices = where it is."""
    batch, channels, out_height, out_width = out.shape
    in_width = x.shape[3]
    for plane in prange(batch * channels):
        n = plane // channels
        c = plane % channels
        for oh in range(out_height):
            for ow in range(out_width):
                best_row, best_col, best = window_argmax(
                    x, n, c, oh, ow, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                    dilation_h, dilation_w)
                out[n, c, oh, ow] = best
                indices[n, c, oh, ow] = best_row * in_width + best_col if best_row >= 0 else -1


def max_pool2d_backward_indices(dx, dout, indices, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                dilation_h, dilation_w):
    """dx (N, C, H, W) = sum of dout (N, C, OH, OW) over the windows whose stored index
    is each element. The CUDA kernel gathers over the windows (hence the
    hyperparameters in the shared signature); here a scatter per plane needs none."""
    max_pool2d_backward_indices_scatter(dx, dout, indices)


@njit(parallel=True, cache=True)
def max_pool2d_backward_indices_scatter(dx, dout, indices):
    """dx = 0, then dx[n, c].flat[indices[n, c, oh, ow]] += dout[n, c, oh, ow].

    No window is rescanned (x is not needed). One thread per (image, channel) plane,
    adding in row-major window order, so overlapping windows sum in a fixed order.
    Indices outside the plane (including -1) are skipped.
    """
    batch, channels, out_height, out_width = dout.shape
    in_height, in_width = dx.shape[2], dx.shape[3]
    for plane in prange(batch * channels):
        n = plane // channels
        c = plane % channels
        for ih in range(in_height):
            for iw in range(in_width):
                dx[n, c, ih, iw] = 0
        for oh in range(out_height):
            for ow in range(out_width):
                index = indices[n, c, oh, ow]
                if 0 <= index < in_height * in_width:
                    dx[n, c, index // in_width, index % in_width] += dout[n, c, oh, ow]


@njit(parallel=True, cache=True)
def max_unpool2d_forward(out, x, indices):
    """out (N, C, OH, OW) = 0, then out[n, c].flat[indices[n, c, h, w]] = x[n, c, h, w].

    x and indices are (N, C, H, W). Written in row-major order per plane, so when
    two inputs name one output element the later one wins. Indices outside the
    output plane are skipped (the dispatcher has refused them on the CPU).
    """
    batch, channels, out_height, out_width = out.shape
    in_height, in_width = x.shape[2], x.shape[3]
    for plane in prange(batch * channels):
        n = plane // channels
        c = plane % channels
        for oh in range(out_height):
            for ow in range(out_width):
                out[n, c, oh, ow] = 0
        for ih in range(in_height):
            for iw in range(in_width):
                index = indices[n, c, ih, iw]
                if 0 <= index < out_height * out_width:
                    out[n, c, index // out_width, index % out_width] = x[n, c, ih, iw]


@njit(parallel=True, cache=True)
def max_unpool2d_backward(dx, dout, indices):
    """dx[n, c, h, w] = dout[n, c].flat[indices[n, c, h, w]]: the gather that undoes the scatter.

    dx and indices are (N, C, H, W), dout (N, C, OH, OW); an index outside the plane gives 0.
    """
    batch, channels, in_height, in_width = dx.shape
    out_height, out_width = dout.shape[2], dout.shape[3]
    for plane in prange(batch * channels):
        n = plane // channels
        c = plane % channels
        for ih in range(in_height):
            for iw in range(in_width):
                index = indices[n, c, ih, iw]
                if 0 <= index < out_height * out_width:
                    dx[n, c, ih, iw] = dout[n, c, index // out_width, index % out_width]
                else:
                    dx[n, c, ih, iw] = 0
