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

Parallel over the M * S rows (or N * S elements): each task owns its row.
"""

import math

from numba import njit, prange

from numbacnn.kernels.common import is_new_max


@njit(inline="always")
def _row_max_and_log_sum_exp(x, m, s):
    """(max_k x[m, k, s], log sum_k exp(x[m, k, s])) in float64, the maximum subtracted first."""
    classes = x.shape[1]
    row_max = x[m, 0, s]
    for k in range(1, classes):
        if is_new_max(x[m, k, s], row_max):
            row_max = x[m, k, s]
    total = 0.0
    for k in range(classes):
        total += math.exp(x[m, k, s] - row_max)
    return row_max, row_max + math.log(total)


@njit(parallel=True, cache=True)
def softmax_forward(out, x):
    """out[m, :, s] = exp(x - max) / sum(exp(x - max)) along the class axis."""
    outer, classes, inner = x.shape
    for task in prange(outer * inner):
        m = task // inner
        s = task % inner
        row_max, log_sum_exp = _row_max_and_log_sum_exp(x, m, s)
        for k in range(classes):
            out[m, k, s] = math.exp(x[m, k, s] - log_sum_exp)


@njit(parallel=True, cache=True)
def log_softmax_forward(out, x):
    """out[m, :, s] = x - logsumexp(x) along the class axis."""
    outer, classes, inner = x.shape
    for task in prange(outer * inner):
        m = task // inner
        s = task % inner
        row_max, log_sum_exp = _row_max_and_log_sum_exp(x, m, s)
        for k in range(classes):
            out[m, k, s] = x[m, k, s] - log_sum_exp


@njit(parallel=True, cache=True)
def softmax_backward(dx, dout, y):
    """dx = y * (dout - sum_k dout * y), y = softmax(x) (the forward's output)."""
    outer, classes, inner = y.shape
    for task in prange(outer * inner):
        m = task // inner
        s = task % inner
        dot = 0.0
        for k in range(classes):
            dot += dout[m, k, s] * y[m, k, s]
        for k in range(classes):
            dx[m, k, s] = y[m, k, s] * (dout[m, k, s] - dot)


@njit(parallel=True, cache=True)
def log_softmax_backward(dx, dout, y):
    """dx = dout - exp(y) * sum_k dout, y = log_softmax(x) (the forward's output)."""
    outer, classes, inner = y.shape
    for task in prange(outer * inner):
        m = task // inner
        s = task % inner
        total = 0.0
        for k in range(classes):
            total += dout[m, k, s]
        for k in range(classes):
            dx[m, k, s] = dout[m, k, s] - math.exp(y[m, k, s]) * total


@njit(inline="always")
def _broadcast(dlosses, n, s):
    """dlosses[n, s], or its single value when it is (1, 1)."""
    return dlosses[min(n, dlosses.shape[0] - 1), min(s, dlosses.shape[1] - 1)]


@njit(parallel=True, cache=True)
def cross_entropy_forward(losses, target_weights, logits, target, weight, ignore_index, smoothing):
    """losses[n, s] = sum_c a_c * (lse - logits[n, c, s]); target_weights[n, s] = weight[t]
    (both 0 where target == ignore_index)."""
    batch, classes, inner = logits.shape
    for task in prange(batch * inner):
        n = task // inner
        s = task % inner
        t = target[n, s]
        if t == ignore_index:
            losses[n, s] = 0
            target_weights[n, s] = 0
            continue
        row_max, log_sum_exp = _row_max_and_log_sum_exp(logits, n, s)
        loss = (1.0 - smoothing) * weight[t] * (log_sum_exp - logits[n, t, s])
        if smoothing != 0.0:  # skipped otherwise: an infinite logit must not turn 0 * inf into NaN
            smooth = 0.0
            for c in range(classes):
                smooth += weight[c] * (log_sum_exp - logits[n, c, s])
            loss += smoothing / classes * smooth
        losses[n, s] = loss
        target_weights[n, s] = weight[t]


@njit(parallel=True, cache=True)
def cross_entropy_backward(dlogits, dlosses, logits, target, weight, ignore_index, smoothing):
    """dlogits[n, c, s] = dlosses[n, s] * (p_c * sum(a) - a_c); 0 where ignored."""
    batch, classes, inner = logits.shape
    for task in prange(batch * inner):
        n = task // inner
        s = task % inner
        t = target[n, s]
        if t == ignore_index:
            for c in range(classes):
                dlogits[n, c, s] = 0
            continue
        grad = _broadcast(dlosses, n, s)
        row_max, log_sum_exp = _row_max_and_log_sum_exp(logits, n, s)
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


@njit(parallel=True, cache=True)
def cross_entropy_probs_forward(losses, logits, probs, weight, smoothing):
    """losses[n, s] = sum_c weight[c] * q_c * (lse - logits[n, c, s]), q = (1 - eps) * probs + eps / C."""
    batch, classes, inner = logits.shape
    for task in prange(batch * inner):
        n = task // inner
        s = task % inner
        row_max, log_sum_exp = _row_max_and_log_sum_exp(logits, n, s)
        loss = 0.0
        for c in range(classes):
            q = (1.0 - smoothing) * probs[n, c, s] + smoothing / classes
            loss += weight[c] * q * (log_sum_exp - logits[n, c, s])
        losses[n, s] = loss


@njit(parallel=True, cache=True)
def cross_entropy_probs_backward(dlogits, dlosses, logits, probs, weight, smoothing):
    """dlogits[n, c, s] = dlosses[n, s] * (p_c * sum_c' w_c' q_c' - w_c q_c)."""
    batch, classes, inner = logits.shape
    for task in prange(batch * inner):
        n = task // inner
        s = task % inner
        grad = _broadcast(dlosses, n, s)
        row_max, log_sum_exp = _row_max_and_log_sum_exp(logits, n, s)
        coefficient_sum = 0.0
        for c in range(classes):
            coefficient_sum += weight[c] * ((1.0 - smoothing) * probs[n, c, s] + smoothing / classes)
        for c in range(classes):
            coefficient = weight[c] * ((1.0 - smoothing) * probs[n, c, s] + smoothing / classes)
            probability = math.exp(logits[n, c, s] - log_sum_exp)
            dlogits[n, c, s] = grad * (probability * coefficient_sum - coefficient)


@njit(parallel=True, cache=True)
def nll_loss_forward(losses, target_weights, log_probs, target, weight, ignore_index):
    """losses[n, s] = -weight[t] * log_probs[n, t, s]; target_weights[n, s] = weight[t]
    (both 0 where target == ignore_index)."""
    batch, classes, inner = log_probs.shape
    for task in prange(batch * inner):
        n = task // inner
        s = task % inner
        t = target[n, s]
        if t == ignore_index:
            losses[n, s] = 0
            target_weights[n, s] = 0
        else:
            losses[n, s] = -weight[t] * log_probs[n, t, s]
            target_weights[n, s] = weight[t]


@njit(parallel=True, cache=True)
def nll_loss_backward(dlog_probs, dlosses, target, weight, ignore_index):
    """dlog_probs[n, c, s] = -dlosses[n, s] * weight[t] at c == t, else 0."""
    batch, classes, inner = dlog_probs.shape
    for task in prange(batch * inner):
        n = task // inner
        s = task % inner
        t = target[n, s]
        for c in range(classes):
            dlog_probs[n, c, s] = 0
        if t != ignore_index:
            dlog_probs[n, t, s] = -_broadcast(dlosses, n, s) * weight[t]
