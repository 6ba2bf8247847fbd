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


# Layers of fewer multiply-adds than this run on one thread: a parallel region's
# fork/join costs more than a small layer's work once another process holds a core
# (Tiny VGG's 490->10 layer at batch 64 is 0.3 M multiply-adds, ~0.05 ms on one
# core; its three parallel regions took 2 ms per step at load 6, issue 10).
SERIAL_BELOW = 1 << 20


@njit(cache=True, fastmath=FASTMATH)
def _linear_out(out, x, w, b, n, o):
    total = 0.0
    for i in range(x.shape[1]):
        total += x[n, i] * w[o, i]
    out[n, o] = total + b[o]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def linear_forward(out, x, w, b):
    """out[n, o] = b[o] + sum_i x[n, i] * w[o, i] (rows of x and w are contiguous)."""
    batch, out_features = out.shape
    if batch * out_features * x.shape[1] < SERIAL_BELOW:
        for task in range(batch * out_features):
            _linear_out(out, x, w, b, task // out_features, task % out_features)
    else:
        for task in prange(batch * out_features):
            _linear_out(out, x, w, b, task // out_features, task % out_features)


@njit(cache=True, fastmath=FASTMATH)
def _linear_dx_row(dx, dout, w, n):
    in_features = w.shape[1]
    for i in range(in_features):
        dx[n, i] = 0
    for o in range(dout.shape[1]):
        grad = dout[n, o]
        for i in range(in_features):
            dx[n, i] += grad * w[o, i]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def linear_backward_input(dx, dout, w):
    """dx[n, i] = sum_o dout[n, o] * w[o, i] (one row per thread, zeroed first)."""
    batch, out_features = dout.shape
    if batch * out_features * w.shape[1] < SERIAL_BELOW:
        for n in range(batch):
            _linear_dx_row(dx, dout, w, n)
    else:
        for n in prange(batch):
            _linear_dx_row(dx, dout, w, n)


@njit(cache=True, fastmath=FASTMATH)
def _linear_dw_row(dw, dout, x, o):
    in_features = x.shape[1]
    for i in range(in_features):
        dw[o, i] = 0
    for n in range(dout.shape[0]):
        grad = dout[n, o]
        for i in range(in_features):
            dw[o, i] += grad * x[n, i]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def linear_backward_weight(dw, dout, x):
    """dw[o, i] = sum_n dout[n, o] * x[n, i] (one row per thread, zeroed first)."""
    batch, out_features = dout.shape
    if batch * out_features * x.shape[1] < SERIAL_BELOW:
        for o in range(out_features):
            _linear_dw_row(dw, dout, x, o)
    else:
        for o in prange(out_features):
            _linear_dw_row(dw, dout, x, o)