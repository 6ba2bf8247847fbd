"""Leaky ReLU on the CPU, forward and backward, over flat (1-D) views of any shape."""

from numba import njit, prange


@njit(parallel=True, cache=True)
def leaky_relu_forward(out, x, negative_slope):
    """out = x where x > 0, else negative_slope * x; NaN stays NaN (NaN * slope)."""
    for i in prange(x.shape[0]):
        value = x[i]
        out[i] = value if value > 0 else value * negative_slope


@njit(parallel=True, cache=True)
def leaky_relu_backward(dx, dout, x, negative_slope):
    """dx = dout where x > 0, else negative_slope * dout (PyTorch's choice at x == 0)."""
    for i in prange(x.shape[0]):
        dx[i] = dout[i] if x[i] > 0 else dout[i] * negative_slope
