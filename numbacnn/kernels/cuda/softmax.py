"""Softmax, log-softmax, cross-entropy and NLL loss on CUDA, forward and backward.

The same functions, shapes and formulas as ``kernels/cpu/softmax.py`` (read its
docstring first): every array is viewed as (M, K, S) with the class axis in the
middle; ``dlosses`` is (N, S), or (1, 1) for one value broadcast to every element.

One thread per row (m, s) in a grid-stride loop: each thread runs its row's body,
the same Python source as the CPU's (``kernels/common.py``, compiled here as CUDA
device functions), which subtracts the row maximum before exponentiating and keeps
the sum of exponentials in float64. Rows are independent, so there are no atomics
and results do not depend on the launch configuration. (A row per block with
shared-memory reductions, as ``loss.py`` does for the fast common case, would be
faster for thousands of classes; these kernels are the general path.)
"""

from __future__ import annotations

from numba import cuda

from numbacnn.kernels import common
from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for

SOFTMAX_ROW_THREADS = 8 if SIMULATOR else 128
SOFTMAX_ROW_MAX_BLOCKS = 2 if SIMULATOR else 65535

# The CPU backend's row bodies, compiled from the same Python source as CUDA device
# functions (the simulator cannot pass its arrays into a CPU-compiled helper).
row_log_sum_exp = cuda.jit(device=True)(common.row_log_sum_exp.py_func)
loss_gradient = cuda.jit(device=True)(common.loss_gradient.py_func)
softmax_row = cuda.jit(device=True)(common.softmax_row.py_func)
log_softmax_row = cuda.jit(device=True)(common.log_softmax_row.py_func)
softmax_backward_row = cuda.jit(device=True)(common.softmax_backward_row.py_func)
log_softmax_backward_row = cuda.jit(device=True)(common.log_softmax_backward_row.py_func)
cross_entropy_row = cuda.jit(device=True)(common.cross_entropy_row.py_func)
cross_entropy_backward_row = cuda.jit(device=True)(common.cross_entropy_backward_row.py_func)
cross_entropy_probs_row = cuda.jit(device=True)(common.cross_entropy_probs_row.py_func)
cross_entropy_probs_backward_row = cuda.jit(device=True)(common.cross_entropy_probs_backward_row.py_func)
nll_loss_row = cuda.jit(device=True)(common.nll_loss_row.py_func)
nll_loss_backward_row = cuda.jit(device=True)(common.nll_loss_backward_row.py_func)


@cuda.jit
def softmax_forward_kernel(out, x):
    # out, x (M, K, S)
    outer, classes, inner = x.shape
    for task in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        m, s = task // inner, task % inner
        softmax_row(out, x, m, s, row_log_sum_exp(x, m, s))


@cuda.jit
def log_softmax_forward_kernel(out, x):
    # out, x (M, K, S)
    outer, classes, inner = x.shape
    for task in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        m, s = task // inner, task % inner
        log_softmax_row(out, x, m, s, row_log_sum_exp(x, m, s))


@cuda.jit
def softmax_backward_kernel(dx, dout, y):
    # dx, dout, y (M, K, S); y = softmax(x)
    outer, classes, inner = y.shape
    for task in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        softmax_backward_row(dx, dout, y, task // inner, task % inner)


@cuda.jit
def log_softmax_backward_kernel(dx, dout, y):
    # dx, dout, y (M, K, S); y = log_softmax(x)
    outer, classes, inner = y.shape
    for task in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        log_softmax_backward_row(dx, dout, y, task // inner, task % inner)


@cuda.jit
def cross_entropy_forward_kernel(losses, target_weights, logits, target, weight, ignore_index, smoothing):
    # losses, target_weights (N, S) written; logits (N, C, S); target (N, S); weight (C,)
    batch, classes, inner = logits.shape
    for task in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n, s = task // inner, task % inner
        cross_entropy_row(losses, target_weights, logits, target, weight, ignore_index, smoothing, n, s,
                          row_log_sum_exp(logits, n, s))


@cuda.jit
def cross_entropy_backward_kernel(dlogits, dlosses, logits, target, weight, ignore_index, smoothing):
    # dlogits (N, C, S) written; dlosses (N, S) or (1, 1); logits (N, C, S); target (N, S); weight (C,)
    batch, classes, inner = logits.shape
    for task in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n, s = task // inner, task % inner
        cross_entropy_backward_row(dlogits, logits, target, weight, ignore_index, smoothing, n, s,
                                   loss_gradient(dlosses, n, s), row_log_sum_exp(logits, n, s))


@cuda.jit
def cross_entropy_probs_forward_kernel(losses, logits, probs, weight, smoothing):
    # losses (N, S) written; logits, probs (N, C, S); weight (C,)
    batch, classes, inner = logits.shape
    for task in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n, s = task // inner, task % inner
        cross_entropy_probs_row(losses, logits, probs, weight, smoothing, n, s, row_log_sum_exp(logits, n, s))


@cuda.jit
def cross_entropy_probs_backward_kernel(dlogits, dlosses, logits, probs, weight, smoothing):
    # dlogits (N, C, S) written; dlosses (N, S) or (1, 1); logits, probs (N, C, S); weight (C,)
    batch, classes, inner = logits.shape
    for task in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n, s = task // inner, task % inner
        cross_entropy_probs_backward_row(dlogits, logits, probs, weight, smoothing, n, s,
                                         loss_gradient(dlosses, n, s), row_log_sum_exp(logits, n, s))


@cuda.jit
def nll_loss_forward_kernel(losses, target_weights, log_probs, target, weight, ignore_index):
    # losses, target_weights (N, S) written; log_probs (N, C, S); target (N, S); weight (C,)
    batch, classes, inner = log_probs.shape
    for task in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        nll_loss_row(losses, target_weights, log_probs, target, weight, ignore_index, task // inner, task % inner)


@cuda.jit
def nll_loss_backward_kernel(dlog_probs, dlosses, target, weight, ignore_index):
    # dlog_probs (N, C, S) written; dlosses (N, S) or (1, 1); target (N, S); weight (C,)
    batch, classes, inner = dlog_probs.shape
    for task in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n, s = task // inner, task % inner
        nll_loss_backward_row(dlog_probs, target, weight, ignore_index, n, s, loss_gradient(dlosses, n, s))


def _launch(kernel, rows, *args) -> None:
    kernel[blocks_for(rows, SOFTMAX_ROW_THREADS, SOFTMAX_ROW_MAX_BLOCKS), SOFTMAX_ROW_THREADS](*args)


def softmax_forward(out, x) -> None:
    """out = softmax of x (M, K, S) along K."""
    _launch(softmax_forward_kernel, x.shape[0] * x.shape[2], out, x)


def log_softmax_forward(out, x) -> None:
    """out = log_softmax of x (M, K, S) along K."""
    _launch(log_softmax_forward_kernel, x.shape[0] * x.shape[2], out, x)


def softmax_backward(dx, dout, y) -> None:
    """dx = y * (dout - sum_k dout * y)."""
    _launch(softmax_backward_kernel, y.shape[0] * y.shape[2], dx, dout, y)


def log_softmax_backward(dx, dout, y) -> None:
    """dx = dout - exp(y) * sum_k dout."""
    _launch(log_softmax_backward_kernel, y.shape[0] * y.shape[2], dx, dout, y)


def cross_entropy_forward(losses, target_weights, logits, target, weight, ignore_index, smoothing) -> None:
    """Per-element cross-entropy with class-index targets (see the module docstring)."""
    _launch(cross_entropy_forward_kernel, logits.shape[0] * logits.shape[2],
            losses, target_weights, logits, target, weight, ignore_index, smoothing)


def cross_entropy_backward(dlogits, dlosses, logits, target, weight, ignore_index, smoothing) -> None:
    """dlogits = dlosses * (softmax * sum(a) - a) per element."""
    _launch(cross_entropy_backward_kernel, logits.shape[0] * logits.shape[2],
            dlogits, dlosses, logits, target, weight, ignore_index, smoothing)


def cross_entropy_probs_forward(losses, logits, probs, weight, smoothing) -> None:
    """Per-element cross-entropy with class-probability targets."""
    _launch(cross_entropy_probs_forward_kernel, logits.shape[0] * logits.shape[2],
            losses, logits, probs, weight, smoothing)


def cross_entropy_probs_backward(dlogits, dlosses, logits, probs, weight, smoothing) -> None:
    """dlogits = dlosses * (softmax * sum(w q) - w q) per element."""
    _launch(cross_entropy_probs_backward_kernel, logits.shape[0] * logits.shape[2],
            dlogits, dlosses, logits, probs, weight, smoothing)


def nll_loss_forward(losses, target_weights, log_probs, target, weight, ignore_index) -> None:
    """losses = -weight[t] * log_probs[t] per element; 0 where ignored."""
    _launch(nll_loss_forward_kernel, log_probs.shape[0] * log_probs.shape[2],
            losses, target_weights, log_probs, target, weight, ignore_index)


def nll_loss_backward(dlog_probs, dlosses, target, weight, ignore_index) -> None:
    """dlog_probs = -dlosses * weight[t] at the target class, else 0."""
    _launch(nll_loss_backward_kernel, dlog_probs.shape[0] * dlog_probs.shape[2],
            dlog_probs, dlosses, target, weight, ignore_index)
