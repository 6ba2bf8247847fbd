"""Window pooling on CUDA for avg_pool2d and the adaptive pools (see the CPU file
``kernels/cpu/avg_pool.py`` for the window arrays). Forward: one output element per
thread; backward: one (n, c) plane per thread (a scatter without atomics; simple,
not fast, on a GPU), grid-stride loops throughout."""

from __future__ import annotations

from numba import cuda

from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured

THREADS = 8 if SIMULATOR else 128
MAX_BLOCKS = 2 if SIMULATOR else 4096


@cuda.jit
def window_avg_forward_kernel(out, x, h_start, h_end, w_start, w_end, divisor):
    n_, c_, oh_, ow_ = out.shape
    for item in range(cuda.grid(1), n_ * c_ * oh_ * ow_, cuda.gridsize(1)):
        ow = item % ow_
        oh = (item // ow_) % oh_
        c = (item // (ow_ * oh_)) % c_
        n = item // (ow_ * oh_ * c_)
        total = 0.0
        for h in range(h_start[oh], h_end[oh]):
            for w in range(w_start[ow], w_end[ow]):
                total += x[n, c, h, w]
        out[n, c, oh, ow] = total / divisor[oh, ow]


@cuda.jit
def window_avg_backward_kernel(gx, gy, h_start, h_end, w_start, w_end, divisor):
    n_, c_, oh_, ow_ = gy.shape
    for plane in range(cuda.grid(1), n_ * c_, cuda.gridsize(1)):
        n, c = plane // c_, plane % c_
        for h in range(gx.shape[2]):
            for w in range(gx.shape[3]):
                gx[n, c, h, w] = 0
        for oh in range(oh_):
            for ow in range(ow_):
                share = gy[n, c, oh, ow] / divisor[oh, ow]
                for h in range(h_start[oh], h_end[oh]):
                    for w in range(w_start[ow], w_end[ow]):
                        gx[n, c, h, w] += share


@cuda.jit
def window_max_forward_kernel(out, indices, x, h_start, h_end, w_start, w_end):
    n_, c_, oh_, ow_ = out.shape
    width = x.shape[3]
    for item in range(cuda.grid(1), n_ * c_ * oh_ * ow_, cuda.gridsize(1)):
        ow = item % ow_
        oh = (item // ow_) % oh_
        c = (item // (ow_ * oh_)) % c_
        n = item // (ow_ * oh_ * c_)
        best_h = h_start[oh]
        best_w = w_start[ow]
        best = x[n, c, best_h, best_w]
        for h in range(h_start[oh], h_end[oh]):
            for w in range(w_start[ow], w_end[ow]):
                value = x[n, c, h, w]
                if value > best or value != value:  # PyTorch's test: NaN propagates
                    best = value
                    best_h = h
                    best_w = w
        out[n, c, oh, ow] = best
        indices[n, c, oh, ow] = best_h * width + best_w


@cuda.jit
def window_max_backward_kernel(gx, gy, indices):
    n_, c_, oh_, ow_ = gy.shape
    width = gx.shape[3]
    for plane in range(cuda.grid(1), n_ * c_, cuda.gridsize(1)):
        n, c = plane // c_, plane % c_
        for h in range(gx.shape[2]):
            for w in range(width):
                gx[n, c, h, w] = 0
        for oh in range(oh_):
            for ow in range(ow_):
                index = indices[n, c, oh, ow]
                gx[n, c, index // width, index % width] += gy[n, c, oh, ow]


def _elements(a) -> int:
    return a.shape[0] * a.shape[1] * a.shape[2] * a.shape[3]


def window_avg_forward(out, x, h_start, h_end, w_start, w_end, divisor) -> None:
    configured(window_avg_forward_kernel, blocks_for(_elements(out), THREADS, MAX_BLOCKS), THREADS)(
        out, x, h_start, h_end, w_start, w_end, divisor)


def window_avg_backward(gx, gy, h_start, h_end, w_start, w_end, divisor) -> None:
    planes = gy.shape[0] * gy.shape[1]
    configured(window_avg_backward_kernel, blocks_for(planes, THREADS, MAX_BLOCKS), THREADS)(
        gx, gy, h_start, h_end, w_start, w_end, divisor)


def window_max_forward(out, indices, x, h_start, h_end, w_start, w_end) -> None:
    configured(window_max_forward_kernel, blocks_for(_elements(out), THREADS, MAX_BLOCKS), THREADS)(
        out, indices, x, h_start, h_end, w_start, w_end)


def window_max_backward(gx, gy, indices) -> None:
    planes = gy.shape[0] * gy.shape[1]
    configured(window_max_backward_kernel, blocks_for(planes, THREADS, MAX_BLOCKS), THREADS)(gx, gy, indices)
