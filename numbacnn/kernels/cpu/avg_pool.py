"""Window pooling on the CPU for avg_pool2d and the adaptive pools.

Each output (oh, ow) reads the input rectangle rows [h_start[oh], h_end[oh]) x
columns [w_start[ow], w_end[ow]) of its plane, already clipped to the input by
``numbacnn.shapes`` (which also computes each window's divisor: PyTorch's
count_include_pad / divisor_override rules). So one kernel serves avg_pool2d,
adaptive_avg_pool2d and adaptive_max_pool2d. Backward kernels work one (n, c) plane
per parallel iteration, so overlapping windows add up without races.
"""

from numba import njit, prange

from numbacnn.kernels.common import window_avg, window_avg_plane_backward, window_max, window_max_plane_backward


@njit(parallel=True, cache=True)
def window_avg_forward(out, x, h_start, h_end, w_start, w_end, divisor):
    # out (N, C, OH, OW); x (N, C, H, W); divisor (OH, OW) float64
    n_, c_, oh_, ow_ = out.shape
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        for oh in range(oh_):
            for ow in range(ow_):
                out[n, c, oh, ow] = window_avg(x, n, c, oh, ow, h_start, h_end, w_start, w_end, divisor)


@njit(parallel=True, cache=True)
def window_avg_backward(gx, gy, h_start, h_end, w_start, w_end, divisor):
    # gx (N, C, H, W) zero-filled here; gy (N, C, OH, OW)
    n_, c_ = gy.shape[0], gy.shape[1]
    for plane in prange(n_ * c_):
        window_avg_plane_backward(gx, gy, plane // c_, plane % c_, h_start, h_end, w_start, w_end, divisor)


@njit(parallel=True, cache=True)
def window_max_forward(out, indices, x, h_start, h_end, w_start, w_end):
    # out, indices (N, C, OH, OW); indices are flat h * W + w in the plane (PyTorch's)
    n_, c_, oh_, ow_ = out.shape
    width = x.shape[3]
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        for oh in range(oh_):
            for ow in range(ow_):
                best, best_h, best_w = window_max(x, n, c, oh, ow, h_start, h_end, w_start, w_end)
                out[n, c, oh, ow] = best
                indices[n, c, oh, ow] = best_h * width + best_w


@njit(parallel=True, cache=True)
def window_max_backward(gx, gy, indices):
    # gx (N, C, H, W): each gy element added at its flat index in the plane
    n_, c_ = gy.shape[0], gy.shape[1]
    for plane in prange(n_ * c_):
        window_max_plane_backward(gx, gy, indices, plane // c_, plane % c_)
