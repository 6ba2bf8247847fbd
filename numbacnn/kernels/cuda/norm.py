"""Batch normalisation on CUDA over x viewed as (N, C, L): one channel per thread
(grid-stride), the same arithmetic as ``kernels/cpu/norm.py``. Simple, not fast on a
GPU (C threads); a block-per-channel reduction is the obvious next step."""

from __future__ import annotations

import math

from numba import cuda

from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured

THREADS = 8 if SIMULATOR else 64
MAX_BLOCKS = 2 if SIMULATOR else 1024


@cuda.jit
def batch_norm_stats_kernel(mean, invstd, running_mean, running_var, x, eps, momentum, training, update):
    n_, c_, l_ = x.shape
    count = n_ * l_
    for c in range(cuda.grid(1), c_, cuda.gridsize(1)):
        if not training:
            mean[c] = running_mean[c]
            invstd[c] = 1.0 / math.sqrt(running_var[c] + eps)
            continue
        total = 0.0
        for n in range(n_):
            for i in range(l_):
                total += float(x[n, c, i])  # float(): float64 also under the simulator (NumPy scalars)
        m = total / count
        squares = 0.0
        for n in range(n_):
            for i in range(l_):
                d = float(x[n, c, i]) - m
                squares += d * d
        mean[c] = m
        invstd[c] = 1.0 / math.sqrt(squares / count + eps)
        if update:
            running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * m
            running_var[c] = (1.0 - momentum) * running_var[c] + momentum * squares / (count - 1)


@cuda.jit
def batch_norm_forward_kernel(y, x, mean, invstd, weight, bias):
    n_, c_, l_ = x.shape
    for item in range(cuda.grid(1), n_ * c_ * l_, cuda.gridsize(1)):
        i = item % l_
        c = (item // l_) % c_
        n = item // (l_ * c_)
        scale = invstd[c] * weight[c]
        y[n, c, i] = x[n, c, i] * scale + (bias[c] - mean[c] * scale)


@cuda.jit
def batch_norm_backward_kernel(gx, gweight, gbias, gy, x, mean, invstd, weight, training):
    n_, c_, l_ = x.shape
    count = n_ * l_
    for c in range(cuda.grid(1), c_, cuda.gridsize(1)):
        sum_gy = 0.0
        sum_gy_xhat = 0.0
        for n in range(n_):
            for i in range(l_):
                g = float(gy[n, c, i])
                sum_gy += g
                sum_gy_xhat += g * (float(x[n, c, i]) - mean[c]) * invstd[c]
        gweight[c] = sum_gy_xhat
        gbias[c] = sum_gy
        scale = weight[c] * invstd[c]
        for n in range(n_):
            for i in range(l_):
                g = float(gy[n, c, i])
                if training:
                    xhat = (float(x[n, c, i]) - mean[c]) * invstd[c]
                    g = g - (sum_gy + xhat * sum_gy_xhat) / count
                gx[n, c, i] = scale * g


def batch_norm_stats(mean, invstd, running_mean, running_var, x, eps, momentum, training, update) -> None:
    configured(batch_norm_stats_kernel, blocks_for(x.shape[1], THREADS, MAX_BLOCKS), THREADS)(
        mean, invstd, running_mean, running_var, x, eps, momentum, training, update)


def batch_norm_forward(y, x, mean, invstd, weight, bias) -> None:
    configured(batch_norm_forward_kernel, blocks_for(x.size, THREADS, MAX_BLOCKS), THREADS)(
        y, x, mean, invstd, weight, bias)


def batch_norm_backward(gx, gweight, gbias, gy, x, mean, invstd, weight, training) -> None:
    configured(batch_norm_backward_kernel, blocks_for(x.shape[1], THREADS, MAX_BLOCKS), THREADS)(
        gx, gweight, gbias, gy, x, mean, invstd, weight, training)
