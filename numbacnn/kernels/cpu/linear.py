"""Fully connected layer on the CPU: ``out = x @ w.T + b`` and its gradients.

Shapes::

    x    (N, IN)     input rows
    w    (OUT, IN)   weights, PyTorch layout
    b    (OUT,)      bias (zeros when the layer has none)
    out  (N, OUT)    output; dout is its gradient

The bias gradient is ``conv2d_backward_bias`` on dout viewed as (N, OUT, 1, 1).

``FASTMATH`` lets LLVM reorder the dot products' sums so they vectorise (without
it the forward runs one multiply-add at a time); it keeps NaN/Inf semantics.
"""

from numba import njit, prange

from numbacnn.kernels.common import FASTMATH


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def linear_forward(out, x, w, b):
    """out[n, o] = b[o] + sum_i x[n, i] * w[o, i] (rows of x and w are contiguous)."""
    batch, out_features = out.shape
    in_features = x.shape[1]
    for task in prange(batch * out_features):
        n = task // out_features
        o = task % out_features
        total = 0.0
        for i in range(in_features):
            total += x[n, i] * w[o, i]
        out[n, o] = total + b[o]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def linear_backward_input(dx, dout, w):
    """dx[n, i] = sum_o dout[n, o] * w[o, i] (one row per thread, zeroed first)."""
    batch, out_features = dout.shape
    in_features = w.shape[1]
    for n in prange(batch):
        for i in range(in_features):
            dx[n, i] = 0
        for o in range(out_features):
            grad = dout[n, o]
            for i in range(in_features):
                dx[n, i] += grad * w[o, i]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def linear_backward_weight(dw, dout, x):
    """dw[o, i] = sum_n dout[n, o] * x[n, i] (one row per thread, zeroed first)."""
    batch, out_features = dout.shape
    in_features = x.shape[1]
    for o in prange(out_features):
        for i in range(in_features):
            dw[o, i] = 0
        for n in range(batch):
            grad = dout[n, o]
            for i in range(in_features):
                dw[o, i] += grad * x[n, i]
