"""Leaky ReLU on CUDA, forward and backward, over flat (1-D) views of any shape.

Elementwise, one element per thread per grid-stride step (as ``activation.py``).
"""

from __future__ import annotations

from numba import cuda

from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured

THREADS = 8 if SIMULATOR else 256
MAX_BLOCKS = 2 if SIMULATOR else 4096


@cuda.jit
def leaky_relu_forward_kernel(out, x, negative_slope):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        value = x[i]
        out[i] = value if value > 0 else value * negative_slope


@cuda.jit
def leaky_relu_backward_kernel(dx, dout, x, negative_slope):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        dx[i] = dout[i] if x[i] > 0 else dout[i] * negative_slope


def leaky_relu_forward(out, x, negative_slope) -> None:
    """out = x where x > 0, else negative_slope * x (negative_slope in x's dtype)."""
    configured(leaky_relu_forward_kernel, blocks_for(x.shape[0], THREADS, MAX_BLOCKS), THREADS)(
        out, x, negative_slope)


def leaky_relu_backward(dx, dout, x, negative_slope) -> None:
    """dx = dout where x > 0, else negative_slope * dout."""
    configured(leaky_relu_backward_kernel, blocks_for(x.shape[0], THREADS, MAX_BLOCKS), THREADS)(
        dx, dout, x, negative_slope)
