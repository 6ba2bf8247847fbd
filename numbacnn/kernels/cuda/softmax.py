"""Softmax, log-softmax, cross-entropy and NLL loss on CUDA, forward and backward.

The same functions, shapes and formulas as ``kernels/cpu/softmax.py`` (read its
docstring first): every array is viewed as (M, K, S) with the class axis in the
middle; ``dlosses`` is (N, S), or (1, 1) for one value broadcast to every element.

One thread per row (m, s) in a grid-stride loop: each thread scans its row's K
classes, subtracting the row maximum before exponentiating, and keeps the sum of
exponentials in float64 as the CPU does. Rows are independent, so there are no
atomics and results do not depend on the launch configuration. (A row per block
with shared-memory reductions, as ``loss.py`` does for the fast common case, would
be faster for thousands of classes; these kernels are the general path.)
"""

from __future__ import annotations

import math

from numba import cuda

from numbacnn.kernels.common import is_new_max
from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for

SOFTMAX_ROW_THREADS = 8 if SIMULATOR else 128
SOFTMAX_ROW_MAX_BLOCKS = 2 if SIMULATOR else 65535


@cuda.jit(device=True)
def _row_log_sum_exp(x, m, s):
    """log sum_k exp(x[m, k, s]) in float64, the row maximum subtracted first (NaN wins)."""
    classes = x.shape[1]
    row_max = x[m, 0, s]
    for k in range(1, classes):
        if is_new_max(x[m, k, s], row_max):
            row_max = x[m, k, s]
    total = 0.0
    for k in range(classes):
        total += math.exp(x[m, k, s] - row_max)
    return row_max + math.log(total)


@cuda.jit(device=True)
def _broadcast(dlosses, n, s):
    """dlosses[n, s], or its single value when it is (1, 1)."""
    return dlosses[min(n, dlosses.shape[0] - 1), min(s, dlosses.shape[1] - 1)]


@cuda.jit
def softmax_forward_kernel(out, x):
    # out, x (M, K, S)
    outer, classes, inner = x.shape
    for task in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        m = task // inner
        s = task % inner
        log_sum_exp = _row_log_sum_exp(x, m, s)
        for k in range(classes):
            out[m, k, s] = math.exp(x[m, k, s] - log_sum_exp)


@cuda.jit
def log_softmax_forward_kernel(out, x):
    # out, x (M, K, S)
    outer, classes, inner = x.shape
    for task in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        m = task // inner
        s = task % inner
        log_sum_exp = _row_log_sum_exp(x, m, s)
        for k in range(classes):
            out[m, k, s] = x[m, k, s] - log_sum_exp


@cuda.jit
def softmax_backward_kernel(dx, dout, y):
    # dx, dout, y (M, K, S); y = softmax(x)
    outer, classes, inner = y.shape
    for task in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        m = task // inner
        s = task % inner
        dot = 0.0
        for k in range(classes):
            dot += dout[m, k, s] * y[m, k, s]
        for k in range(classes):
            dx[m, k, s] = y[m, k, s] * (dout[m, k, s] - dot)


@cuda.jit
def log_softmax_backward_kernel(dx, dout, y):
    # dx, dout, y (M, K, S); y = log_softmax(x)
    outer, classes, inner = y.shape
    for task in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        m = task // inner
        s = task % inner
        total = 0.0
        for k in range(classes):
            total += dout[m, k, s]
        for k in range(classes):
            dx[m, k, s] = dout[m, k, s] - math.exp(y[m, k, s]) * total


@cuda.jit
def cross_entropy_forward_kernel(losses, target_weights, logits, target, weight, ignore_index, smoothing):
    # losses, target_weights (N, S) written; logits (N, C, S); target (N, S); weight (C,)
    batch, classes, inner = logits.shape
    for task in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n = task // inner
        s = task % inner
        t = target[n, s]
        if t == ignore_index:
            losses[n, s] = 0
            target_weights[n, s] = 0
            continue
        log_sum_exp = _row_log_sum_exp(logits, n, s)
        loss = (1.0 - smoothing) * weight[t] * (log_sum_exp - logits[n, t, s])
        if smoothing != 0.0:  # skipped otherwise: an infinite logit must not turn 0 * inf into NaN
            smooth = 0.0
            for c in range(classes):
                smooth += weight[c] * (log_sum_exp - logits[n, c, s])
            loss += smoothing / classes * smooth
        losses[n, s] = loss
        target_weights[n, s] = weight[t]


@cuda.jit
def cross_entropy_backward_kernel(dlogits, dlosses, logits, target, weight, ignore_index, smoothing):
    # dlogits (N, C, S) written; dlosses (N, S) or (1, 1); logits (N, C, S); target (N, S); weight (C,)
    batch, classes, inner = logits.shape
    for task in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n = task // inner
        s = task % inner
        t = target[n, s]
        if t == ignore_index:
            for c in range(classes):
                dlogits[n, c, s] = 0
            continue
        grad = _broadcast(dlosses, n, s)
        log_sum_exp = _row_log_sum_exp(logits, n, s)
        total_weight = 0.0
        if smoothing != 0.0:
            for c in range(classes):
                total_weight += weight[c]
        coefficient_sum = (1.0 - smoothing) * weight[t] + smoothing / classes * total_weight
        for c in range(classes):
            coefficient = smoothing / classes * weight[c]
            if c == t:
                coefficient += (1.0 - smoothing) * weight[t]
            probability = math.exp(logits[n, c, s] - log_sum_exp)
            dlogits[n, c, s] = grad * (probability * coefficient_sum - coefficient)


@cuda.jit
def cross_entropy_probs_forward_kernel(losses, logits, probs, weight, smoothing):
    # losses (N, S) written; logits, probs (N, C, S); weight (C,)
    batch, classes, inner = logits.shape
    for task in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n = task // inner
        s = task % inner
        log_sum_exp = _row_log_sum_exp(logits, n, s)
        loss = 0.0
        for c in range(classes):
            q = (1.0 - smoothing) * probs[n, c, s] + smoothing / classes
            loss += weight[c] * q * (log_sum_exp - logits[n, c, s])
        losses[n, s] = loss


@cuda.jit
def cross_entropy_probs_backward_kernel(dlogits, dlosses, logits, probs, weight, smoothing):
    # dlogits (N, C, S) written; dlosses (N, S) or (1, 1); logits, probs (N, C, S); weight (C,)
    batch, classes, inner = logits.shape
    for task in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n = task // inner
        s = task % inner
        grad = _broadcast(dlosses, n, s)
        log_sum_exp = _row_log_sum_exp(logits, n, s)
        coefficient_sum = 0.0
        for c in range(classes):
            coefficient_sum += weight[c] * ((1.0 - smoothing) * probs[n, c, s] + smoothing / classes)
        for c in range(classes):
            coefficient = weight[c] * ((1.0 - smoothing) * probs[n, c, s] + smoothing / classes)
            probability = math.exp(logits[n, c, s] - log_sum_exp)
            dlogits[n, c, s] = grad * (probability * coefficient_sum - coefficient)


@cuda.jit
def nll_loss_forward_kernel(losses, target_weights, log_probs, target, weight, ignore_index):
    # losses, target_weights (N, S) written; log_probs (N, C, S); target (N, S); weight (C,)
    batch, classes, inner = log_probs.shape
    for task in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n = task // inner
        s = task % inner
        t = target[n, s]
        if t == ignore_index:
            losses[n, s] = 0
            target_weights[n, s] = 0
        else:
            losses[n, s] = -weight[t] * log_probs[n, t, s]
            target_weights[n, s] = weight[t]


@cuda.jit
def nll_loss_backward_kernel(dlog_probs, dlosses, target, weight, ignore_index):
    # dlog_probs (N, C, S) written; dlosses (N, S) or (1, 1); target (N, S); weight (C,)
    batch, classes, inner = dlog_probs.shape
    for task in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n = task // inner
        s = task % inner
        t = target[n, s]
        for c in range(classes):
            dlog_probs[n, c, s] = 0
        if t != ignore_index:
            dlog_probs[n, t, s] = -_broadcast(dlosses, n, s) * weight[t]


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
