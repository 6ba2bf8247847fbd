"""2-D max pooling on CUDA, forward and backward.

Shapes::

    x    (N, C, H, W)     input
    out  (N, C, OH, OW)   output; dout is its gradient; dx has x's shape

Window (oh, ow) covers input rows ``oh * stride_h - pad_h + kh * dilation_h`` for
``kh`` in ``range(kernel_h)`` (likewise for columns). Padding is -inf, so taps
outside the image are skipped. The gradient of a window goes to its *first*
maximum in row-major order (``is_new_max``); a NaN wins and propagates.

Forward: one output element per thread. Backward is a gather: each thread owns dx
elements and, for every window that covers its element, recomputes that window's
argmax and adds the window's gradient if the argmax is its element. The windows are
visited in row-major order, the order the CPU kernel adds them in, so there are no
atomics and the sums are the same, bitwise, on every run.
"""

from __future__ import annotations


from numba import cuda

from numbacnn.kernels.common import window_argmax as _window_argmax_source
from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for

POOL_THREADS = 8 if SIMULATOR else 256
POOL_MAX_BLOCKS = 2 if SIMULATOR else 65535


# The CPU backend's window scan, compiled from the same Python source as a CUDA device
# function (the simulator cannot pass its arrays into a CPU-compiled helper).
window_argmax = cuda.jit(device=True)(_window_argmax_source.py_func)


@cuda.jit
def max_pool2d_forward_kernel(out, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    # out (N, C, OH, OW) written; x (N, C, H, W)
    batch, channels, out_height, out_width = out.shape
    for index in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        ow = index % out_width
        oh = (index // out_width) % out_height
        c = (index // (out_width * out_height)) % channels
        n = index // (out_width * out_height * channels)
        best_row, best_col, best = window_argmax(x, n, c, oh, ow, kernel_h, kernel_w, stride_h, stride_w,
                                                 pad_h, pad_w, dilation_h, dilation_w)
        out[n, c, oh, ow] = best


@cuda.jit
def max_pool2d_backward_kernel(dx, dout, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                               dilation_h, dilation_w):
    # dx (N, C, H, W) written; dout (N, C, OH, OW); x (N, C, H, W)
    batch, channels, in_height, in_width = dx.shape
    out_height, out_width = dout.shape[2], dout.shape[3]
    for index in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        iw = index % in_width
        ih = (index // in_width) % in_height
        c = (index // (in_width * in_height)) % channels
        n = index // (in_width * in_height * channels)
        total = dx.dtype.type(0)
        # kh from the last tap to the first gives oh in increasing order (row-major, as on the CPU)
        for kh in range(kernel_h - 1, -1, -1):
            row = ih + pad_h - kh * dilation_h  # = oh * stride_h for a window whose tap kh is row ih
            if row < 0 or row % stride_h != 0 or row // stride_h >= out_height:
                continue
            oh = row // stride_h
            for kw in range(kernel_w - 1, -1, -1):
                col = iw + pad_w - kw * dilation_w
                if col < 0 or col % stride_w != 0 or col // stride_w >= out_width:
                    continue
                ow = col // stride_w
                best_row, best_col, best = window_argmax(x, n, c, oh, ow, kernel_h, kernel_w, stride_h, stride_w,
                                                         pad_h, pad_w, dilation_h, dilation_w)
                if best_row == ih and best_col == iw:
                    total += dout[n, c, oh, ow]
        dx[n, c, ih, iw] = total


def max_pool2d_forward(out, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w) -> None:
    """out[n, c, oh, ow] = max of x over window (oh, ow)."""
    blocks = blocks_for(out.size, POOL_THREADS, POOL_MAX_BLOCKS)
    max_pool2d_forward_kernel[blocks, POOL_THREADS](
        out, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)


def max_pool2d_backward(dx, dout, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                        dilation_h, dilation_w) -> None:
    """dx[i] = sum of dout over the windows whose first maximum is element i."""
    blocks = blocks_for(dx.size, POOL_THREADS, POOL_MAX_BLOCKS)
    max_pool2d_backward_kernel[blocks, POOL_THREADS](
        dx, dout, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)


# --------------------------------------------------------------------------- #
# indices (PyTorch's return_indices) and max unpooling
#
#   indices  (N, C, OH, OW) int64: each window's first maximum as a flat index into
#            its (H, W) plane, ``row * W + col`` (PyTorch's format); -1 for a window
#            that is all padding
# --------------------------------------------------------------------------- #


@cuda.jit
def max_pool2d_forward_indices_kernel(out, indices, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                      dilation_h, dilation_w):
    # out (N, C, OH, OW), indices (N, C, OH, OW) written; x (N, C, H, W)
    batch, channels, out_height, out_width = out.shape
    in_width = x.shape[3]
    for index in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        ow = index % out_width
        oh = (index // out_width) % out_height
        c = (index // (out_width * out_height)) % channels
        n = index // (out_width * out_height * channels)
        best_row, best_col, best = window_argmax(x, n, c, oh, ow, kernel_h, kernel_w, stride_h, stride_w,
                                                 pad_h, pad_w, dilation_h, dilation_w)
        out[n, c, oh, ow] = best
        indices[n, c, oh, ow] = best_row * in_width + best_col if best_row >= 0 else -1


@cuda.jit
def max_pool2d_backward_indices_kernel(dx, dout, indices, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                       dilation_h, dilation_w):
    # dx (N, C, H, W) written; dout, indices (N, C, OH, OW)
    # The same gather as max_pool2d_backward_kernel, with the stored index in place of
    # the window rescan: no atomics, windows added in row-major order as on the CPU.
    batch, channels, in_height, in_width = dx.shape
    out_height, out_width = dout.shape[2], dout.shape[3]
    for index in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        iw = index % in_width
        ih = (index // in_width) % in_height
        c = (index // (in_width * in_height)) % channels
        n = index // (in_width * in_height * channels)
        flat = ih * in_width + iw
        total = dx.dtype.type(0)
        for kh in range(kernel_h - 1, -1, -1):
            row = ih + pad_h - kh * dilation_h
            if row < 0 or row % stride_h != 0 or row // stride_h >= out_height:
                continue
            oh = row // stride_h
            for kw in range(kernel_w - 1, -1, -1):
                col = iw + pad_w - kw * dilation_w
                if col < 0 or col % stride_w != 0 or col // stride_w >= out_width:
                    continue
                ow = col // stride_w
                if indices[n, c, oh, ow] == flat:
                    total += dout[n, c, oh, ow]
        dx[n, c, ih, iw] = total


@cuda.jit
def max_unpool2d_forward_kernel(out, x, indices):
    # out (N, C, OH, OW), already zeroed; x, indices (N, C, H, W): one thread per input element.
    # Two inputs naming one output element race (either may win), as in PyTorch on a GPU;
    # max_pool2d's own indices never do that with different values.
    batch, channels, in_height, in_width = x.shape
    out_height, out_width = out.shape[2], out.shape[3]
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        iw = index % in_width
        ih = (index // in_width) % in_height
        c = (index // (in_width * in_height)) % channels
        n = index // (in_width * in_height * channels)
        target = indices[n, c, ih, iw]
        if 0 <= target < out_height * out_width:
            out[n, c, target // out_width, target % out_width] = x[n, c, ih, iw]


@cuda.jit
def max_unpool2d_backward_kernel(dx, dout, indices):
    # dx, indices (N, C, H, W); dout (N, C, OH, OW): dx = dout.flat[indices] per plane
    batch, channels, in_height, in_width = dx.shape
    out_height, out_width = dout.shape[2], dout.shape[3]
    for index in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        iw = index % in_width
        ih = (index // in_width) % in_height
        c = (index // (in_width * in_height)) % channels
        n = index // (in_width * in_height * channels)
        source = indices[n, c, ih, iw]
        if 0 <= source < out_height * out_width:
            dx[n, c, ih, iw] = dout[n, c, source // out_width, source % out_width]
        else:
            dx[n, c, ih, iw] = 0


@cuda.jit
def zero_kernel(out):
    # out (n,): a flat view
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = 0


def max_pool2d_forward_indices(out, indices, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                               dilation_h, dilation_w) -> None:
    """out = max of x over each window; indices = its flat position in the (H, W) plane."""
    blocks = blocks_for(out.size, POOL_THREADS, POOL_MAX_BLOCKS)
    max_pool2d_forward_indices_kernel[blocks, POOL_THREADS](
        out, indices, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)


def max_pool2d_backward_indices(dx, dout, indices, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                dilation_h, dilation_w) -> None:
    """dx[i] = sum of dout over the windows whose stored index is element i."""
    blocks = blocks_for(dx.size, POOL_THREADS, POOL_MAX_BLOCKS)
    max_pool2d_backward_indices_kernel[blocks, POOL_THREADS](
        dx, dout, indices, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)


def max_unpool2d_forward(out, x, indices) -> None:
    """out = 0, then out[n, c].flat[indices[n, c, h, w]] = x[n, c, h, w]."""
    flat = out.reshape(-1)
    zero_kernel[blocks_for(flat.shape[0], POOL_THREADS, POOL_MAX_BLOCKS), POOL_THREADS](flat)
    blocks = blocks_for(x.size, POOL_THREADS, POOL_MAX_BLOCKS)
    max_unpool2d_forward_kernel[blocks, POOL_THREADS](out, x, indices)


def max_unpool2d_backward(dx, dout, indices) -> None:
    """dx[n, c, h, w] = dout[n, c].flat[indices[n, c, h, w]]."""
    blocks = blocks_for(dx.size, POOL_THREADS, POOL_MAX_BLOCKS)
    max_unpool2d_backward_kernel[blocks, POOL_THREADS](dx, dout, indices)
