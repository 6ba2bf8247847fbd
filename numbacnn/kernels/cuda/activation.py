"""ReLU on CUDA, forward and backward, over flat (1-D) views of any shape.

Elementwise, one element per thread per grid-stride step; NaN stays NaN.
"""

from __future__ import annotations

from numba import cuda

from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured

RELU_THREADS = 8 if SIMULATOR else 256
RELU_MAX_BLOCKS = 2 if SIMULATOR else 4096


@cuda.jit
def relu_forward_kernel(out, x):
    # out, x: (n,)
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        value = x[i]
        # written as "not <= 0" so NaN passes through, as in PyTorch
        out[i] = value if not value <= zero else zero


@cuda.jit
def relu_backward_kernel(dx, dout, x):
    # dx, dout, x: (n,)
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        dx[i] = dout[i] if x[i] > zero else zero


def relu_forward(out, x) -> None:
    """out = max(x, 0); out and x are 1-D device arrays of the same length."""
    blocks = blocks_for(x.shape[0], RELU_THREADS, RELU_MAX_BLOCKS)
    configured(relu_forward_kernel, blocks, RELU_THREADS)(out, x)


def relu_backward(dx, dout, x) -> None:
    """dx = dout where x > 0, else 0 (the gradient at exactly 0 is 0)."""
    blocks = blocks_for(x.shape[0], RELU_THREADS, RELU_MAX_BLOCKS)
    configured(relu_backward_kernel, blocks, RELU_THREADS)(dx, dout, x)
