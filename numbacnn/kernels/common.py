"""Scalar helpers shared by the CPU and CUDA kernels.

Written once with ``@numba.jit`` so both ``@njit`` and ``@cuda.jit`` code can call
them (Numba compiles them for whichever target calls).
"""

import math

import numba

# Fast-math flags for the CPU kernels: FMA contraction and reassociation let LLVM fuse
# multiply-adds and vectorise reductions. 'nnan' and 'ninf' are left out on purpose:
# a NaN or Inf in an input must still reach the output, and max pooling's NaN rule
# (is_new_max) must keep its meaning.
FASTMATH = {"contract", "reassoc", "arcp", "nsz"}


@numba.jit(nopython=True, inline="always")
def first_valid_output(pad, offset, stride):
    """Smallest output index o >= 0 with ``o*stride - pad + offset >= 0``.

    ``offset`` is the kernel tap's position inside the window (``k * dilation``).
    """
    need = pad - offset
    if need <= 0:
        return 0
    return (need + stride - 1) // stride


@numba.jit(nopython=True, inline="always")
def end_valid_output(in_size, pad, offset, stride, out_size):
    """One past the largest output index o with ``o*stride - pad + offset < in_size``."""
    limit = in_size + pad - offset  # need o*stride < limit
    if limit <= 0:
        return 0
    end = (limit + stride - 1) // stride
    return min(end, out_size)


@numba.jit(nopython=True, inline="always")
def is_new_max(value, best):
    """Max-pooling's comparison: strictly greater keeps the *first* maximum in
    row-major order; a NaN always wins and then stays (as in PyTorch), so a NaN in
    the window shows up in the output."""
    return value > best or math.isnan(value)


@numba.jit(nopython=True, inline="always")
def row_argmax(logits, n):
    """Column of row n's first maximum in logits (N, K), compared with :func:`is_new_max`.

    The metrics kernels on both backends call this, so they count the same rows as
    correct bit for bit.
    """
    best_k = 0
    best = logits[n, 0]
    for k in range(1, logits.shape[1]):
        if is_new_max(logits[n, k], best):
            best = logits[n, k]
            best_k = k
    return best_k


@numba.jit(nopython=True, inline="always")
def window_avg(x, n, c, oh, ow, h_start, h_end, w_start, w_end, divisor):
    """Mean of avg/adaptive pooling's window (oh, ow) of x (N, C, H, W), plane (n, c).

    The window is rows [h_start[oh], h_end[oh]) x columns [w_start[ow], w_end[ow]),
    summed in a float64 accumulator (both dtypes) and divided by divisor[oh, ow].
    """
    total = 0.0
    for h in range(h_start[oh], h_end[oh]):
        for w in range(w_start[ow], w_end[ow]):
            total += x[n, c, h, w]
    return total / divisor[oh, ow]


@numba.jit(nopython=True, inline="always")
def window_avg_plane_backward(gx, gy, n, c, h_start, h_end, w_start, w_end, divisor):
    """avg pooling's backward for one (n, c) plane: zero gx's plane, then add each
    gy[n, c, oh, ow] / divisor[oh, ow] over its window (one caller per plane: no races)."""
    for h in range(gx.shape[2]):
        for w in range(gx.shape[3]):
            gx[n, c, h, w] = 0
    for oh in range(gy.shape[2]):
        for ow in range(gy.shape[3]):
            share = gy[n, c, oh, ow] / divisor[oh, ow]
            for h in range(h_start[oh], h_end[oh]):
                for w in range(w_start[ow], w_end[ow]):
                    gx[n, c, h, w] += share


@numba.jit(nopython=True, inline="always")
def window_max(x, n, c, oh, ow, h_start, h_end, w_start, w_end):
    """(value, row, col) of adaptive max pooling's window (oh, ow) maximum in x's plane
    (n, c); PyTorch's test: a later NaN wins, so NaN propagates."""
    best_h = h_start[oh]
    best_w = w_start[ow]
    best = x[n, c, best_h, best_w]
    for h in range(h_start[oh], h_end[oh]):
        for w in range(w_start[ow], w_end[ow]):
            value = x[n, c, h, w]
            if value > best or value != value:
                best = value
                best_h = h
                best_w = w
    return best, best_h, best_w


@numba.jit(nopython=True, inline="always")
def window_max_plane_backward(gx, gy, indices, n, c):
    """Max pooling's backward for one (n, c) plane: zero gx's plane, then add each
    gy[n, c, oh, ow] at its flat index h * W + w (one caller per plane: no races)."""
    width = gx.shape[3]
    for h in range(gx.shape[2]):
        for w in range(width):
            gx[n, c, h, w] = 0
    for oh in range(gy.shape[2]):
        for ow in range(gy.shape[3]):
            index = indices[n, c, oh, ow]
            gx[n, c, index // width, index % width] += gy[n, c, oh, ow]


@numba.jit(nopython=True, inline="always")
def window_argmax(x, n, c, oh, ow, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                  dilation_h, dilation_w):
    """(row, col, value) of max-pooling window (oh, ow)'s first maximum in x (N, C, H, W).

    Taps outside the image are -inf padding and skipped; row is -1 (value -inf) when
    the whole window is padding. The comparison is :func:`is_new_max`, so both
    backends agree bit for bit on which element wins.
    """
    in_height, in_width = x.shape[2], x.shape[3]
    best_row = -1
    best_col = -1
    best = x.dtype.type(-math.inf)  # in x's dtype: no float64 compares in float32 GPU code
    for kh in range(kernel_h):
        ih = oh * stride_h - pad_h + kh * dilation_h
        if ih < 0 or ih >= in_height:
            continue
        for kw in range(kernel_w):
            iw = ow * stride_w - pad_w + kw * dilation_w
            if iw < 0 or iw >= in_width:
                continue
            value = x[n, c, ih, iw]
            if best_row < 0 or is_new_max(value, best):
                best = value
                best_row = ih
                best_col = iw
    return best_row, best_col, best


@numba.jit(nopython=True, inline="always")
def sgd_update(param, grad, velocity, lr, momentum, dampening, weight_decay, nesterov):
    """One element of PyTorch's SGD, in float64: returns (new param, new velocity).

    The velocity is only meaningful when ``momentum != 0`` (see kernels/cpu/optim.py).
    """
    g = grad * 1.0 + weight_decay * param
    new_velocity = velocity * 1.0
    if momentum != 0.0:
        new_velocity = momentum * velocity + (1.0 - dampening) * g
        if nesterov:
            g = g + momentum * new_velocity
        else:
            g = new_velocity
    return param - lr * g, new_velocity


@numba.jit(nopython=True, inline="always")
def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled,
                step_size, sqrt_bias_correction2):
    """One element of PyTorch's Adam / AdamW, in float64: returns (param, exp_avg, exp_avg_sq).

    ``step_size = lr / bias_correction1`` and ``sqrt_bias_correction2`` are computed
    once per kernel call by the caller.
    """
    p = param * 1.0
    g = grad * 1.0
    if decoupled:
        # AdamW: decay the weight itself, outside the adaptive scaling
        p = p * (1.0 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta1 * exp_avg + (1.0 - beta1) * g
    v = beta2 * exp_avg_sq + (1.0 - beta2) * g * g
    denom = math.sqrt(v) / sqrt_bias_correction2 + eps
    return p - step_size * m / denom, m, v


# --------------------------------------------------------------------------- #
# Softmax, log-softmax, cross-entropy and NLL: one row (m, s) of an (M, K, S) view
# --------------------------------------------------------------------------- #
# The bodies of kernels/cpu/softmax.py and kernels/cuda/softmax.py (shapes and
# formulas in the CPU file's docstring): each kernel loops over its rows, a prange on
# the CPU, a grid-stride loop on CUDA, and calls one of these per row. A helper that
# takes arrays cannot call another one in Numba's CUDA simulator (CUDA compiles
# these from their Python source, see kernels/cuda/softmax.py, and the simulator
# cannot pass its arrays into a CPU-compiled helper), so the kernel computes the
# row's log-sum-exp and its loss gradient and passes them in as numbers.


@numba.jit(nopython=True, inline="always")
def row_log_sum_exp(x, m, s):
    """log sum_k exp(x[m, k, s]) in float64, the row maximum subtracted first (the
    maximum is compared with :func:`is_new_max`, so a NaN in the row makes it NaN)."""
    classes = x.shape[1]
    row_max = x[m, 0, s]
    for k in range(1, classes):
        if is_new_max(x[m, k, s], row_max):
            row_max = x[m, k, s]
    total = 0.0
    for k in range(classes):
        total += math.exp(x[m, k, s] - row_max)
    return row_max + math.log(total)


@numba.jit(nopython=True, inline="always")
def loss_gradient(dlosses, n, s):
    """dlosses[n, s], or its single value when dlosses is (1, 1) (a mean or sum's gradient)."""
    return dlosses[min(n, dlosses.shape[0] - 1), min(s, dlosses.shape[1] - 1)]


@numba.jit(nopython=True, inline="always")
def softmax_row(out, x, m, s, log_sum_exp):
    """out[m, :, s] = exp(x[m, :, s] - log_sum_exp)."""
    for k in range(x.shape[1]):
        out[m, k, s] = math.exp(x[m, k, s] - log_sum_exp)


@numba.jit(nopython=True, inline="always")
def log_softmax_row(out, x, m, s, log_sum_exp):
    """out[m, :, s] = x[m, :, s] - log_sum_exp."""
    for k in range(x.shape[1]):
        out[m, k, s] = x[m, k, s] - log_sum_exp


@numba.jit(nopython=True, inline="always")
def softmax_backward_row(dx, dout, y, m, s):
    """dx = y * (dout - sum_k dout * y) on row (m, s); y = softmax(x), the forward's output."""
    classes = y.shape[1]
    dot = 0.0
    for k in range(classes):
        dot += dout[m, k, s] * y[m, k, s]
    for k in range(classes):
        dx[m, k, s] = y[m, k, s] * (dout[m, k, s] - dot)


@numba.jit(nopython=True, inline="always")
def log_softmax_backward_row(dx, dout, y, m, s):
    """dx = dout - exp(y) * sum_k dout on row (m, s); y = log_softmax(x), the forward's output."""
    classes = y.shape[1]
    total = 0.0
    for k in range(classes):
        total += dout[m, k, s]
    for k in range(classes):
        dx[m, k, s] = dout[m, k, s] - math.exp(y[m, k, s]) * total


@numba.jit(nopython=True, inline="always")
def cross_entropy_row(losses, target_weights, logits, target, weight, ignore_index, smoothing, n, s,
                      log_sum_exp):
    """losses[n, s] = sum_c a_c * (lse - logits[n, c, s]); target_weights[n, s] = weight[t]
    (both 0 where target[n, s] == ignore_index, whose log_sum_exp is not used)."""
    classes = logits.shape[1]
    t = target[n, s]
    if t == ignore_index:
        losses[n, s] = 0
        target_weights[n, s] = 0
        return
    loss = (1.0 - smoothing) * weight[t] * (log_sum_exp - logits[n, t, s])
    if smoothing != 0.0:  # skipped otherwise: an infinite logit must not turn 0 * inf into NaN
        smooth = 0.0
        for c in range(classes):
            smooth += weight[c] * (log_sum_exp - logits[n, c, s])
        loss += smoothing / classes * smooth
    losses[n, s] = loss
    target_weights[n, s] = weight[t]


@numba.jit(nopython=True, inline="always")
def cross_entropy_backward_row(dlogits, logits, target, weight, ignore_index, smoothing, n, s, grad,
                               log_sum_exp):
    """dlogits[n, c, s] = grad * (p_c * sum(a) - a_c), grad = the loss gradient of (n, s);
    0 where target[n, s] == ignore_index."""
    classes = logits.shape[1]
    t = target[n, s]
    if t == ignore_index:
        for c in range(classes):
            dlogits[n, c, s] = 0
        return
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


@numba.jit(nopython=True, inline="always")
def cross_entropy_probs_row(losses, logits, probs, weight, smoothing, n, s, log_sum_exp):
    """losses[n, s] = sum_c weight[c] * q_c * (lse - logits[n, c, s]), q = (1 - eps) * probs + eps / C."""
    classes = logits.shape[1]
    loss = 0.0
    for c in range(classes):
        q = (1.0 - smoothing) * probs[n, c, s] + smoothing / classes
        loss += weight[c] * q * (log_sum_exp - logits[n, c, s])
    losses[n, s] = loss


@numba.jit(nopython=True, inline="always")
def cross_entropy_probs_backward_row(dlogits, logits, probs, weight, smoothing, n, s, grad, log_sum_exp):
    """dlogits[n, c, s] = grad * (p_c * sum_c' w_c' q_c' - w_c q_c), grad = the loss gradient of (n, s)."""
    classes = logits.shape[1]
    coefficient_sum = 0.0
    for c in range(classes):
        coefficient_sum += weight[c] * ((1.0 - smoothing) * probs[n, c, s] + smoothing / classes)
    for c in range(classes):
        coefficient = weight[c] * ((1.0 - smoothing) * probs[n, c, s] + smoothing / classes)
        probability = math.exp(logits[n, c, s] - log_sum_exp)
        dlogits[n, c, s] = grad * (probability * coefficient_sum - coefficient)


@numba.jit(nopython=True, inline="always")
def nll_loss_row(losses, target_weights, log_probs, target, weight, ignore_index, n, s):
    """losses[n, s] = -weight[t] * log_probs[n, t, s]; target_weights[n, s] = weight[t]
    (both 0 where target[n, s] == ignore_index)."""
    t = target[n, s]
    if t == ignore_index:
        losses[n, s] = 0
        target_weights[n, s] = 0
    else:
        losses[n, s] = -weight[t] * log_probs[n, t, s]
        target_weights[n, s] = weight[t]


@numba.jit(nopython=True, inline="always")
def nll_loss_backward_row(dlog_probs, target, weight, ignore_index, n, s, grad):
    """dlog_probs[n, c, s] = -grad * weight[t] at c == t, else 0; grad = the loss gradient of (n, s)."""
    t = target[n, s]
    for c in range(dlog_probs.shape[1]):
        dlog_probs[n, c, s] = 0
    if t != ignore_index:
        dlog_probs[n, t, s] = -grad * weight[t]
