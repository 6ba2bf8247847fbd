"""Independent float64 NumPy references for every functional op.

Written to be obviously correct, never tuned, and independent of numbacnn: they do
their own output-size and padding arithmetic (nothing is imported from
``numbacnn.shapes``). Convolution works on an explicitly zero-padded copy of the
input, one kernel tap at a time with strided slices; pooling is plain Python loops.
"""

from __future__ import annotations

import math

import numpy as np


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def conv_pads(kernel, dilation, padding, stride=(1, 1)):
    """((top, bottom), (left, right)) for an int, a pair, "valid" or "same"."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        pads = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    ph, pw = _pair(padding)
    return (ph, ph), (pw, pw)


def _conv_taps(x, w, stride, padding, dilation, groups):
    """The zero-padded input, the top/left padding, and one entry per (group, kernel
    tap): (input channels, filters, kh, kw, padded rows, padded columns) that the tap
    multiplies, as slices of the padded input."""
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    _, _, h, wd = x.shape
    f, cg, kh_size, kw_size = w.shape
    (pt, pb), (pl, pr) = conv_pads((kh_size, kw_size), (dh, dw), padding)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - dh * (kh_size - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw_size - 1) - 1) // sw + 1
    fg = f // groups
    taps = [(slice(g * cg, (g + 1) * cg), slice(g * fg, (g + 1) * fg), kh, kw,
             slice(kh * dh, kh * dh + sh * (oh - 1) + 1, sh), slice(kw * dw, kw * dw + sw * (ow - 1) + 1, sw))
            for g in range(groups) for kh in range(kh_size) for kw in range(kw_size)]
    return xp, (pt, pl), (oh, ow), taps


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """y (N, F, OH, OW) in float64: cross-correlation of the zero-padded input."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    xp, _, (oh, ow), taps = _conv_taps(x, w, stride, padding, dilation, groups)
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for channels, filters, kh, kw, rows, cols in taps:
        y[:, filters] += np.einsum("nchw,fc->nfhw", xp[:, channels, rows, cols], w[filters, :, kh, kw])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv2d_backward(gy, x, w, stride=1, padding=0, dilation=1, groups=1):
    """(gx, gw, gb) in float64, the adjoint of :func:`conv2d` tap by tap."""
    gy = np.asarray(gy, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    xp, (pt, pl), _, taps = _conv_taps(x, w, stride, padding, dilation, groups)
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for channels, filters, kh, kw, rows, cols in taps:
        gw[filters, :, kh, kw] = np.einsum("nfhw,nchw->fc", gy[:, filters], xp[:, channels, rows, cols])
        gxp[:, channels, rows, cols] += np.einsum("nfhw,fc->nchw", gy[:, filters], w[filters, :, kh, kw])
    gx = gxp[:, :, pt:pt + x.shape[2], pl:pl + x.shape[3]]
    return gx, gw, gy.sum(axis=(0, 2, 3))


def pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _windows(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Yield (n, c, oh, ow, [(value, ih, iw), ...] in row-major order)."""
    kh_size, kw_size = _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else kernel_size)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    n_size, c_size, h, wd = x.shape
    oh_size = pool_output_size(h, kh_size, sh, ph, dh, ceil_mode)
    ow_size = pool_output_size(wd, kw_size, sw, pw, dw, ceil_mode)
    for n in range(n_size):
        for c in range(c_size):
            for oh in range(oh_size):
                for ow in range(ow_size):
                    taps = []
                    for kh in range(kh_size):
                        for kw in range(kw_size):
                            ih, iw = oh * sh - ph + kh * dh, ow * sw - pw + kw * dw
                            if 0 <= ih < h and 0 <= iw < wd:
                                taps.append((x[n, c, ih, iw], ih, iw))
                    yield n, c, oh, ow, oh_size, ow_size, taps


def _first_max(taps):
    best = taps[0]
    for tap in taps[1:]:
        if tap[0] > best[0] or math.isnan(tap[0]):
            best = tap
    return best


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    x = np.asarray(x, np.float64)
    kh_size, kw_size = _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else kernel_size)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    # sized here, not from the first window: an empty batch has no windows
    y = np.full((x.shape[0], x.shape[1],
                 pool_output_size(x.shape[2], kh_size, sh, ph, dh, ceil_mode),
                 pool_output_size(x.shape[3], kw_size, sw, pw, dw, ceil_mode)), -np.inf)
    for n, c, oh, ow, _, _, taps in _windows(x, kernel_size, stride, padding, dilation, ceil_mode):
        y[n, c, oh, ow] = _first_max(taps)[0] if taps else -np.inf
    return y


def max_pool2d_backward(gy, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    x = np.asarray(x, np.float64)
    gy = np.asarray(gy, np.float64)
    gx = np.zeros_like(x)
    for n, c, oh, ow, _, _, taps in _windows(x, kernel_size, stride, padding, dilation, ceil_mode):
        if taps:
            _, ih, iw = _first_max(taps)
            gx[n, c, ih, iw] += gy[n, c, oh, ow]
    return gx


def relu(x):
    x = np.asarray(x, np.float64)
    return np.where(x > 0, x, 0.0) + np.where(np.isnan(x), x, 0.0)


def relu_backward(gy, x):
    return np.where(np.asarray(x, np.float64) > 0, np.asarray(gy, np.float64), 0.0)


def linear(x, w, b=None):
    y = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    return y if b is None else y + np.asarray(b, np.float64)


def linear_backward(gy, x, w):
    gy, x, w = (np.asarray(a, np.float64) for a in (gy, x, w))
    return gy @ w, gy.T @ x, gy.sum(axis=0)


def softmax_cross_entropy(logits, labels):
    z = np.asarray(logits, np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(z))
    loss = -log_probs[rows, labels].mean()
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1.0
    return loss, grad / len(z)


# --------------------------------------------------------------------------- #
# issue 11 item 1: indices, unpooling, softmax family and losses with PyTorch's options
# --------------------------------------------------------------------------- #


def max_pool2d_with_indices(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """(y, indices): indices are ``row * W + col`` of each window's first maximum in its plane."""
    x = np.asarray(x, np.float64)
    y = max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    indices = np.full(y.shape, -1, np.int64)
    for n, c, oh, ow, _, _, taps in _windows(x, kernel_size, stride, padding, dilation, ceil_mode):
        if taps:
            _, ih, iw = _first_max(taps)
            indices[n, c, oh, ow] = ih * x.shape[3] + iw
    return y, indices


def max_pool2d_backward_from_indices(gy, indices, input_shape):
    """gx: each gy element added at its flat index, plane by plane."""
    gy = np.asarray(gy, np.float64)
    gx = np.zeros(input_shape)
    for n in range(gy.shape[0]):
        for c in range(gy.shape[1]):
            plane = gx[n, c].reshape(-1)
            for position, index in np.ndenumerate(indices[n, c]):
                plane[index] += gy[n, c][position]
    return gx


def max_unpool2d(x, indices, output_hw):
    """out (N, C, OH, OW): zeros, with x[n, c, h, w] placed at indices[n, c, h, w] (later wins)."""
    x = np.asarray(x, np.float64)
    out = np.zeros((x.shape[0], x.shape[1], *output_hw))
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            plane = out[n, c].reshape(-1)
            for position, index in np.ndenumerate(indices[n, c]):
                plane[index] = x[n, c][position]
    return out


def max_unpool2d_backward(gy, indices):
    gy = np.asarray(gy, np.float64)
    gx = np.zeros(indices.shape)
    for n in range(gy.shape[0]):
        for c in range(gy.shape[1]):
            plane = gy[n, c].reshape(-1)
            for position, index in np.ndenumerate(indices[n, c]):
                gx[n, c][position] = plane[index]
    return gx


def _rows(x, dim):
    """x with the axis ``dim`` moved last, as (rows, K), and the function undoing it."""
    moved = np.moveaxis(np.atleast_1d(x), dim, -1)
    shape = moved.shape

    def back(rows):
        return np.moveaxis(rows.reshape(shape), -1, dim).reshape(np.shape(x))

    return moved.reshape(-1, shape[-1]), back


def softmax(x, dim):
    rows, back = _rows(np.asarray(x, np.float64), dim)
    out = np.empty_like(rows)
    for r, row in enumerate(rows):
        e = np.exp(row - row.max())
        out[r] = e / e.sum()
    return back(out)


def log_softmax(x, dim):
    rows, back = _rows(np.asarray(x, np.float64), dim)
    out = np.empty_like(rows)
    for r, row in enumerate(rows):
        shifted = row - row.max()
        out[r] = shifted - math.log(np.exp(shifted).sum())
    return back(out)


def _jacobian_transpose_product(gy, x, dim, jacobian):
    """J^T gy per row along dim, J = jacobian(p) built explicitly from the row's softmax p."""
    p_rows, back = _rows(softmax(x, dim), dim)
    g_rows, _ = _rows(np.asarray(gy, np.float64), dim)
    out = np.empty_like(p_rows)
    for r, (p, g) in enumerate(zip(p_rows, g_rows)):
        out[r] = jacobian(p).T @ g
    return back(out)


def softmax_backward(gy, x, dim):
    """J^T gy per row with the explicit Jacobian diag(p) - p p^T."""
    return _jacobian_transpose_product(gy, x, dim, lambda p: np.diag(p) - np.outer(p, p))


def log_softmax_backward(gy, x, dim):
    """J^T gy per row with the explicit Jacobian I - 1 p^T."""
    return _jacobian_transpose_product(gy, x, dim, lambda p: np.eye(len(p)) - np.outer(np.ones(len(p)), p))


def _loss_elements(scores):
    """(N, C, S) view of (C,), (N, C) or (N, C, d...) scores."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim == 1:
        return scores.reshape(1, -1, 1)
    # the spatial size written out: reshape cannot infer -1 when N = 0
    return scores.reshape(scores.shape[0], scores.shape[1], int(np.prod(scores.shape[2:], dtype=np.int64)))


def _loss_coefficients(scores, target, weight, ignore_index, label_smoothing):
    """Per element (n, s): the coefficients a_c of -sum_c a_c log p_c, and the element's
    weight in the mean's denominator (PyTorch's definitions, written out)."""
    z = _loss_elements(scores)
    n_size, classes, s_size = z.shape
    w = np.ones(classes) if weight is None else np.asarray(weight, np.float64)
    eps = label_smoothing
    coefficients = np.zeros(z.shape)
    denominators = np.zeros((n_size, s_size))
    probabilities = np.issubdtype(np.asarray(target).dtype, np.floating)
    t = _loss_elements(target) if probabilities else np.asarray(target).reshape(n_size, s_size)
    for n in range(n_size):
        for s in range(s_size):
            if probabilities:
                q = t[n, :, s] * (1 - eps) + eps / classes
                coefficients[n, :, s] = w * q
                denominators[n, s] = 1.0
            elif t[n, s] != ignore_index:
                coefficients[n, :, s] = eps / classes * w
                coefficients[n, t[n, s], s] += (1 - eps) * w[t[n, s]]
                denominators[n, s] = w[t[n, s]]
    return coefficients, denominators


def _reduce_loss(per_element, denominators, reduction, out_shape):
    if reduction == "none":
        return per_element.reshape(out_shape)
    if reduction == "sum":
        return per_element.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.float64(per_element.sum()) / np.float64(denominators.sum())


def _element_shape(scores):
    scores = np.asarray(scores)
    return () if scores.ndim == 1 else (scores.shape[0], *scores.shape[2:])


def cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    a, denominators = _loss_coefficients(logits, target, weight, ignore_index, label_smoothing)
    log_p = log_softmax(_loss_elements(logits), 1)
    per_element = -(a * log_p).sum(axis=1)
    return _reduce_loss(per_element, denominators, reduction, _element_shape(logits))


def cross_entropy_backward(grad_output, logits, target, weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0):
    """Chain rule: dL/dlog_p = -scale * a, then log_softmax's Jacobian."""
    a, denominators = _loss_coefficients(logits, target, weight, ignore_index, label_smoothing)
    z = _loss_elements(logits)
    if reduction == "none":
        scale = np.asarray(grad_output, np.float64).reshape(z.shape[0], 1, z.shape[2])
    elif reduction == "mean" and denominators.sum() == 0:
        # every element ignored: the mean loss is 0/0 = NaN, but no element depends on
        # the logits, so PyTorch's gradient is zero (checked with torch 2.13)
        scale = 0.0
    else:
        scale = float(grad_output) / (denominators.sum() if reduction == "mean" else 1.0)
    grad = log_softmax_backward(-scale * a, z, 1)
    return grad.reshape(np.shape(logits))


def nll_loss(log_probs, target, weight=None, ignore_index=-100, reduction="mean"):
    a, denominators = _loss_coefficients(log_probs, target, weight, ignore_index, 0.0)
    per_element = -(a * _loss_elements(log_probs)).sum(axis=1)
    return _reduce_loss(per_element, denominators, reduction, _element_shape(log_probs))


def nll_loss_backward(grad_output, log_probs, target, weight=None, ignore_index=-100, reduction="mean"):
    a, denominators = _loss_coefficients(log_probs, target, weight, ignore_index, 0.0)
    z = _loss_elements(log_probs)
    if reduction == "none":
        scale = np.asarray(grad_output, np.float64).reshape(z.shape[0], 1, z.shape[2])
    elif reduction == "mean" and denominators.sum() == 0:
        scale = 0.0  # every element ignored: zero gradient, as in cross_entropy_backward
    else:
        scale = float(grad_output) / (denominators.sum() if reduction == "mean" else 1.0)
    return (-scale * a).reshape(np.shape(log_probs))


# --------------------------------------------------------------------------- #
# issue 11 items 2-4 (PARITY-2): leaky_relu, avg/adaptive pooling, batch_norm
# --------------------------------------------------------------------------- #


def leaky_relu(x, slope):
    x = np.asarray(x, np.float64)
    return np.where(x > 0, x, slope * x)


def leaky_relu_backward(gy, x, slope):
    return np.where(np.asarray(x) > 0, gy, slope * np.asarray(gy, np.float64))


def avg_pool2d_matrix(in_hw, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                      divisor_override=None):
    """The (OH*OW, H*W) matrix A with avg_pool2d(plane) = A @ plane.ravel(), from
    PyTorch's documented rule, one window at a time in plain loops."""
    (h, w), (kh, kw) = in_hw, _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else kernel_size)
    ph, pw = _pair(padding)
    oh_, ow_ = pool_output_size(h, kh, sh, ph, 1, ceil_mode), pool_output_size(w, kw, sw, pw, 1, ceil_mode)
    a = np.zeros((oh_ * ow_, h * w))
    for oh in range(oh_):
        for ow in range(ow_):
            h0, w0 = oh * sh - ph, ow * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            cells = [(i, j) for i in range(max(h0, 0), min(h1, h)) for j in range(max(w0, 0), min(w1, w))]
            if divisor_override is not None:
                divisor = divisor_override
            elif count_include_pad:
                divisor = (h1 - h0) * (w1 - w0)
            else:
                divisor = len(cells)
            for i, j in cells:
                a[oh * ow_ + ow, i * w + j] = 1.0 / divisor
    return a, (oh_, ow_)


def adaptive_cells(in_hw, out_hw):
    """For each output (oh, ow), the input cells PyTorch's adaptive pools read."""
    (h, w), (oh_, ow_) = in_hw, out_hw
    return [[(i, j) for i in range(math.floor(oh * h / oh_), math.ceil((oh + 1) * h / oh_))
             for j in range(math.floor(ow * w / ow_), math.ceil((ow + 1) * w / ow_))]
            for oh in range(oh_) for ow in range(ow_)]


def adaptive_avg_pool2d_matrix(in_hw, out_hw):
    a = np.zeros((out_hw[0] * out_hw[1], in_hw[0] * in_hw[1]))
    for row, cells in enumerate(adaptive_cells(in_hw, out_hw)):
        for i, j in cells:
            a[row, i * in_hw[1] + j] = 1.0 / len(cells)
    return a


def apply_plane_matrix(x, a, out_hw):
    """Apply a per-plane linear map (N, C, H, W) -> (N, C, OH, OW)."""
    x = np.asarray(x, np.float64)
    n, c = x.shape[:2]
    return (x.reshape(n, c, a.shape[1]) @ a.T).reshape(n, c, *out_hw)


def apply_plane_matrix_transposed(gy, a, in_hw):
    gy = np.asarray(gy, np.float64)
    n, c = gy.shape[:2]
    return (gy.reshape(n, c, a.shape[0]) @ a).reshape(n, c, *in_hw)


def adaptive_max_pool2d(x, out_hw):
    """(y, indices): each window's first maximum in row-major order, NaN winning."""
    x = np.asarray(x, np.float64)
    n_, c_, h, w = x.shape
    y = np.zeros((n_, c_, *out_hw))
    idx = np.zeros((n_, c_, *out_hw), np.int64)
    for n in range(n_):
        for c in range(c_):
            for row, cells in enumerate(adaptive_cells((h, w), out_hw)):
                best = None
                for i, j in cells:
                    v = x[n, c, i, j]
                    if best is None or v > best[0] or math.isnan(v):
                        best = (v, i * w + j)
                y[n, c, row // out_hw[1], row % out_hw[1]] = best[0]
                idx[n, c, row // out_hw[1], row % out_hw[1]] = best[1]
    return y, idx


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    """(y, new_running_mean, new_running_var) in float64 with np.mean / np.var."""
    x = np.asarray(x, np.float64)
    axes = (0, *range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        count = x.size // x.shape[1]
        new_mean = None if running_mean is None else (1 - momentum) * running_mean + momentum * mean
        new_var = None if running_var is None else (1 - momentum) * running_var + momentum * var * count / (count - 1)
    else:
        mean, var = np.asarray(running_mean, np.float64), np.asarray(running_var, np.float64)
        new_mean, new_var = running_mean, running_var
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if weight is not None:
        y = y * np.reshape(weight, shape)
    if bias is not None:
        y = y + np.reshape(bias, shape)
    return y, new_mean, new_var


def batch_norm_backward(gy, x, running_mean, running_var, weight, training, eps):
    """(gx, gweight, gbias) by the chain rule written out in float64."""
    x, gy = np.asarray(x, np.float64), np.asarray(gy, np.float64)
    axes = (0, *range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = np.asarray(running_mean, np.float64), np.asarray(running_var, np.float64)
    invstd = (1 / np.sqrt(var + eps)).reshape(shape)
    xhat = (x - mean.reshape(shape)) * invstd
    w = np.ones(x.shape[1]) if weight is None else np.asarray(weight, np.float64)
    g = gy * w.reshape(shape)  # gradient w.r.t. xhat
    if training:
        gx = invstd * (g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True))
    else:
        gx = invstd * g
    return gx, (gy * xhat).sum(axis=axes), gy.sum(axis=axes)


def adam(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    """torch.optim.Adam / AdamW for one parameter, written out in float64: ``grads`` are
    the gradients of the steps it had one in, so the bias correction counts its own steps."""
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if decoupled:
            p *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - betas[1] ** t) + eps
        p -= lr / (1 - betas[0] ** t) * m / denom
    return p
