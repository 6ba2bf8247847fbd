"""Softmax, log-softmax, cross-entropy and NLL loss on the CPU, forward and backward.

Every array is viewed by the dispatcher as (M, K, S): the class axis K in the
middle, everything before it folded into M, everything after it into S (so
``softmax(x, dim)`` of any shape, and PyTorch's (N, C, d1, d2, ...) losses, are one
layout). Shapes::

    x, out, dx, dout   (M, K, S)   scores, softmax or log-softmax, and gradients
    logits, dlogits    (N, C, S)   loss inputs and their gradient
    target             (N, S)      int64 class indices (or ignore_index)
    probs              (N, C, S)   class-probability targets
    weight             (C,)        per-class weights (ones when the user gave none)
    losses             (N, S)      per-element loss
    target_weights     (N, S)      weight[target], 0 where ignored: mean's denominator
    dlosses            (N, S), or (1, 1) for one value broadcast to every element

Numerically stable: each row's maximum is subtracted before exponentiating
(log-sum-exp), and the sum of exponentials is kept in float64. A NaN wins the
maximum (``is_new_max``), so a NaN score makes its row NaN.

Cross-entropy with class-index targets and label smoothing ``eps`` is, per
element, ``sum_c a_c * (lse - x_c)`` with coefficients
``a_c = (1 - eps) * w_t * [c == t] + eps / C * w_c`` (PyTorch's formula), so its
gradient is ``p_c * sum(a) - a_c`` where ``p = softmax(x)``. Probability targets
are the same with ``a_c = w_c * ((1 - eps) * q_c + eps / C)``.

Parallel over the M * S rows (or N * S elements): each task owns its row. The row
bodies are written once, in ``kernels/common.py``, and shared with the CUDA kernels
(``kernels/cuda/softmax.py``); each kernel here is its loop over the rows. A row whose
target is ``ignore_index`` still has its log-sum-exp computed (and not used).
"""

from numba import njit, prange

from numbacnn.kernels.common import (
    cross_entropy_backward_row,
    cross_entropy_probs_backward_row,
    cross_entropy_probs_row,
    cross_entropy_row,
    log_softmax_backward_row,
    log_softmax_row,
    loss_gradient,
    nll_loss_backward_row,
    nll_loss_row,
    row_log_sum_exp,
    softmax_backward_row,
    softmax_row,
)


@njit(parallel=True, cache=True)
def softmax_forward(out, x):
    """out[m, :, s] = exp(x - max) / sum(exp(x - max)) along the class axis."""
    outer, classes, inner = x.shape
    for task in prange(outer * inner):
        m, s = task // inner, task % inner
        softmax_row(out, x, m, s, row_log_sum_exp(x, m, s))


@njit(parallel=True, cache=True)
def log_softmax_forward(out, x):
    """out[m, :, s] = x - logsumexp(x) along the class axis."""
    outer, classes, inner = x.shape
    for task in prange(outer * inner):
        m, s = task // inner, task % inner
        log_softmax_row(out, x, m, s, row_log_sum_exp(x, m, s))


@njit(parallel=True, cache=True)
def softmax_backward(dx, dout, y):
    """dx = y * (dout - sum_k dout * y), y = softmax(x) (the forward's output)."""
    outer, classes, inner = y.shape
    for task in prange(outer * inner):
        softmax_backward_row(dx, dout, y, task // inner, task % inner)


@njit(parallel=True, cache=True)
def log_softmax_backward(dx, dout, y):
    """dx = dout - exp(y) * sum_k dout, y = log_softmax(x) (the forward's output)."""
    outer, classes, inner = y.shape
    for task in prange(outer * inner):
        log_softmax_backward_row(dx, dout, y, task // inner, task % inner)


@njit(parallel=True, cache=True)
def cross_entropy_forward(losses, target_weights, logits, target, weight, ignore_index, smoothing):
    """losses[n, s] = sum_c a_c * (lse - logits[n, c, s]); target_weights[n, s] = weight[t]
    (both 0 where target == ignore_index)."""
    batch, classes, inner = logits.shape
    for task in prange(batch * inner):
        n, s = task // inner, task % inner
        cross_entropy_row(losses, target_weights, logits, target, weight, ignore_index, smoothing, n, s,
                          row_log_sum_exp(logits, n, s))


@njit(parallel=True, cache=True)
def cross_entropy_backward(dlogits, dlosses, logits, target, weight, ignore_index, smoothing):
    """dlogits[n, c, s] = dlosses[n, s] * (p_c * sum(a) - a_c); 0 where ignored."""
    batch, classes, inner = logits.shape
    for task in prange(batch * inner):
        n, s = task // inner, task % inner
        cross_entropy_backward_row(dlogits, logits, target, weight, ignore_index, smoothing, n, s,
                                   loss_gradient(dlosses, n, s), row_log_sum_exp(logits, n, s))


@njit(parallel=True, cache=True)
def cross_entropy_probs_forward(losses, logits, probs, weight, smoothing):
    """losses[n, s] = sum_c weight[c] * q_c * (lse - logits[n, c, s]), q = (1 - eps) * probs + eps / C."""
    batch, classes, inner = logits.shape
    for task in prange(batch * inner):
        n, s = task // inner, task % inner
        cross_entropy_probs_row(losses, logits, probs, weight, smoothing, n, s, row_log_sum_exp(logits, n, s))


@njit(parallel=True, cache=True)
def cross_entropy_probs_backward(dlogits, dlosses, logits, probs, weight, smoothing):
    """dlogits[n, c, s] = dlosses[n, s] * (p_c * sum_c' w_c' q_c' - w_c q_c)."""
    batch, classes, inner = logits.shape
    for task in prange(batch * inner):
        n, s = task // inner, task % inner
        cross_entropy_probs_backward_row(dlogits, logits, probs, weight, smoothing, n, s,
                                         loss_gradient(dlosses, n, s), row_log_sum_exp(logits, n, s))


@njit(parallel=True, cache=True)
def nll_loss_forward(losses, target_weights, log_probs, target, weight, ignore_index):
    """losses[n, s] = -weight[t] * log_probs[n, t, s]; target_weights[n, s] = weight[t]
    (both 0 where target == ignore_index)."""
    batch, classes, inner = log_probs.shape
    for task in prange(batch * inner):
        nll_loss_row(losses, target_weights, log_probs, target, weight, ignore_index, task // inner, task % inner)


@njit(parallel=True, cache=True)
def nll_loss_backward(dlog_probs, dlosses, target, weight, ignore_index):
    """dlog_probs[n, c, s] = -dlosses[n, s] * weight[t] at c == t, else 0."""
    batch, classes, inner = dlog_probs.shape
    for task in prange(batch * inner):
        n, s = task // inner, task % inner
        nll_loss_backward_row(dlog_probs, target, weight, ignore_index, n, s, loss_gradient(dlosses, n, s))
