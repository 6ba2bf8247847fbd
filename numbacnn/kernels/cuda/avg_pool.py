"""Window pooling on CUDA for avg_pool2d and the adaptive pools (see the CPU file
``kernels/cpu/avg_pool.py`` for the window arrays). Forward: one output element per
thread; backward: one (n, c) plane per thread (a scatter without atomics; simple,
not fast, on a GPU), grid-stride loops throughout."""

from __future__ import annotations

from numba import cuda

from numbacnn.kernels import common
from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured

THREADS = 8 if SIMULATOR else 128
MAX_BLOCKS = 2 if SIMULATOR else 4096

# The CPU backend's window helpers, compiled from the same Python source as CUDA device
# functions (the simulator cannot pass its arrays into a CPU-compiled helper).
window_avg = cuda.jit(device=True)(common.window_avg.py_func)
window_avg_plane_backward = cuda.jit(device=True)(common.window_avg_plane_backward.py_func)
window_max = cuda.jit(device=True)(common.window_max.py_func)
window_max_plane_backward = cuda.jit(device=True)(common.window_max_plane_backward.py_func)


@cuda.jit
def window_avg_forward_kernel(out, x, h_start, h_end, w_start, w_end, divisor):
    n_, c_, oh_, ow_ = out.shape
    for item in range(cuda.grid(1), n_ * c_ * oh_ * ow_, cuda.gridsize(1)):
        ow = item % ow_
        oh = (item // ow_) % oh_
        c = (item // (ow_ * oh_)) % c_
        n = item // (ow_ * oh_ * c_)
        out[n, c, oh, ow] = window_avg(x, n, c, oh, ow, h_start, h_end, w_start, w_end, divisor)


@cuda.jit
def window_avg_backward_kernel(gx, gy, h_start, h_end, w_start, w_end, divisor):
    n_, c_ = gy.shape[0], gy.shape[1]
    for plane in range(cuda.grid(1), n_ * c_, cuda.gridsize(1)):
        window_avg_plane_backward(gx, gy, plane // c_, plane % c_, h_start, h_end, w_start, w_end, divisor)


@cuda.jit
def window_max_forward_kernel(out, indices, x, h_start, h_end, w_start, w_end):
    n_, c_, oh_, ow_ = out.shape
    width = x.shape[3]
    for item in range(cuda.grid(1), n_ * c_ * oh_ * ow_, cuda.gridsize(1)):
        ow = item % ow_
        oh = (item // ow_) % oh_
        c = (item // (ow_ * oh_)) % c_
        n = item // (ow_ * oh_ * c_)
        best, best_h, best_w = window_max(x, n, c, oh, ow, h_start, h_end, w_start, w_end)
        out[n, c, oh, ow] = best
        indices[n, c, oh, ow] = best_h * width + best_w


@cuda.jit
def window_max_backward_kernel(gx, gy, indices):
    n_, c_ = gy.shape[0], gy.shape[1]
    for plane in range(cuda.grid(1), n_ * c_, cuda.gridsize(1)):
        window_max_plane_backward(gx, gy, indices, plane // c_, plane % c_)


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
