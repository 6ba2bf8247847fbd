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
