"""ReLU on the CPU, forward and backward, over flat (1-D) views of any shape."""

from numba import njit, prange


@njit(parallel=True, cache=True)
def relu_forward(out, x):
    """out = max(x, 0); out and x are 1-D of the same length. NaN stays NaN."""
    for i in prange(x.shape[0]):
        value = x[i]
        # written as "not <= 0" so NaN passes through, as in PyTorch
        out[i] = value if not value <= 0 else 0
    return


@njit(parallel=True, cache=True)
def relu_backward(dx, dout, x):
    """dx = dout where x > 0, else 0 (the gradient at exactly 0 is 0)."""
    for i in prange(x.shape[0]):
        dx[i] = dout[i] if x[i] > 0 else 0
