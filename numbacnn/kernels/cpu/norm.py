"""Batch normalisation on the CPU over x viewed as (N, C, L), one channel per
parallel iteration; sums in float64 for both dtypes."""

from numba import njit, prange


@njit(parallel=True, cache=True)
def batch_norm_stats(mean, invstd, running_mean, running_var, x, eps, momentum, training, update):
    """Per channel: the statistics the forward normalises with, into mean and invstd
    (float64, (C,)). Training: the batch's mean and 1/sqrt(biased var + eps), and,
    when ``update``, running = (1 - momentum) * running + momentum * batch with the
    unbiased variance (PyTorch's rule). Eval: from the running statistics."""
    n_, c_, l_ = x.shape
    count = n_ * l_
    for c in prange(c_):
        if not training:
            mean[c] = running_mean[c]
            invstd[c] = 1.0 / (running_var[c] + eps) ** 0.5
            continue
        total = 0.0
        for n in range(n_):
            for i in range(l_):
                total += x[n, c, i]
        m = total / count
        squares = 0.0  # two passes: no cancellation from E[x^2] - E[x]^2
        for n in range(n_):
            for i in range(l_):
                d = x[n, c, i] - m
                squares += d * d
        mean[c] = m
        invstd[c] = 1.0 / (squares / count + eps) ** 0.5
        if update:
            running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * m
            running_var[c] = (1.0 - momentum) * running_var[c] + momentum * squares / (count - 1)


@njit(parallel=True, cache=True)
def batch_norm_forward(y, x, mean, invstd, weight, bias):
    """y = (x - mean) * invstd * weight + bias per channel; y, x (N, C, L)."""
    n_, c_, l_ = x.shape
    for c in prange(c_):
        scale = invstd[c] * weight[c]
        shift = bias[c] - mean[c] * scale
        for n in range(n_):
            for i in range(l_):
                y[n, c, i] = x[n, c, i] * scale + shift


@njit(parallel=True, cache=True)
def batch_norm_backward(gx, gweight, gbias, gy, x, mean, invstd, weight, training):
    """gweight = sum(gy * xhat), gbias = sum(gy); gx = weight * invstd * (gy - (sum(gy)
    + xhat * sum(gy * xhat)) / count) in training (the batch statistics depend on x),
    weight * invstd * gy in eval."""
    n_, c_, l_ = x.shape
    count = n_ * l_
    for c in prange(c_):
        sum_gy = 0.0
        sum_gy_xhat = 0.0
        for n in range(n_):
            for i in range(l_):
                g = gy[n, c, i]
                sum_gy += g
                sum_gy_xhat += g * (x[n, c, i] - mean[c]) * invstd[c]
        gweight[c] = sum_gy_xhat
        gbias[c] = sum_gy
        scale = weight[c] * invstd[c]
        for n in range(n_):
            for i in range(l_):
                g = gy[n, c, i]
                if training:
                    xhat = (x[n, c, i] - mean[c]) * invstd[c]
                    g = g - (sum_gy + xhat * sum_gy_xhat) / count
                gx[n, c, i] = scale * g
