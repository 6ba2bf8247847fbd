"""Window pooling on the CPU for avg_pool2d and the adaptive pools.

Each output (oh, ow) reads the input rectangle rows [h_start[oh], h_end[oh]) x
columns [w_start[ow], w_end[ow]) of its plane, already clipped to the input by
``numbacnn.shapes`` (which also computes each window's divisor: PyTorch's
count_include_pad / divisor_override rules). So one kernel serves avg_pool2d,
adaptive_avg_pool2d and adaptive_max_pool2d. Backward kernels work one (n, c) plane
per parallel iteration, so overlapping windows add up without races.
"""

from numba import njit, prange


@njit(parallel=True, cache=True)
def window_avg_forward(out, x, h_start, h_end, w_start, w_end, divisor):
    # out (N, C, OH, OW); x (N, C, H, W); divisor (OH, OW) float64
    n_, c_, oh_, ow_ = out.shape
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        for oh in range(oh_):
            for ow in range(ow_):
                total = 0.0  # float64 accumulator in both dtypes
                for h in range(h_start[oh], h_end[oh]):
                    for w in range(w_start[ow], w_end[ow]):
                        total += x[n, c, h, w]
                out[n, c, oh, ow] = total / divisor[oh, ow]


@njit(parallel=True, cache=True)
def window_avg_backward(gx, gy, h_start, h_end, w_start, w_end, divisor):
    # gx (N, C, H, W) zero-filled here; gy (N, C, OH, OW)
    n_, c_, oh_, ow_ = gy.shape
    for plane in prange(n_ * c_):
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


@njit(parallel=True, cache=True)
def window_max_forward(out, indices, x, h_start, h_end, w_start, w_end):
    # out, indices (N, C, OH, OW); indices are flat h * W + w in the plane (PyTorch's)
    n_, c_, oh_, ow_ = out.shape
    width = x.shape[3]
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        for oh in range(oh_):
            for ow in range(ow_):
                best_h, best_w = h_start[oh], w_start[ow]
                best = x[n, c, best_h, best_w]
                for h in range(h_start[oh], h_end[oh]):
                    for w in range(w_start[ow], w_end[ow]):
                        value = x[n, c, h, w]
                        # PyTorch's test: a later NaN wins, so NaN propagates
                        if value > best or value != value:
                            best, best_h, best_w = value, h, w
                out[n, c, oh, ow] = best
                indices[n, c, oh, ow] = best_h * width + best_w


@njit(parallel=True, cache=True)
def window_max_backward(gx, gy, indices):
    # gx (N, C, H, W): each gy element added at its flat index in the plane
    n_, c_, oh_, ow_ = gy.shape
    width = gx.shape[3]
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        for h in range(gx.shape[2]):
            for w in range(width):
                gx[n, c, h, w] = 0
        for oh in range(oh_):
            for ow in range(ow_):
                index = indices[n, c, oh, ow]
                gx[n, c, index // width, index % width] += gy[n, c, oh, ow]
