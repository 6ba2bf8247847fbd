"""Batch normalisation on CUDA over x viewed as (N, C, L): the per-channel sums as
block reductions, the per-element passes one thread per element.

The same functions, arguments and arithmetic as ``kernels/cpu/norm.py`` (read its
docstrings first): every sum is taken in float64, whatever x's dtype, the variance
in two passes (the mean first, then the squared deviations from it), and the
running variance is updated with the unbiased variance.

How the work is split, and why. A channel's statistics are sums over its
``count = N * L`` values, and a network has few channels (Tiny VGG: 10) but many
values per channel (batch 64 at 28 x 28: 50176). One thread per channel, as this
file first did, keeps 10 threads of a GPU busy; one block per channel would keep 10
of an H100's 132 SMs busy. So every sum over a channel is taken as in
``channel_sums.py``: the channel's values cut into ``parts`` chunks, one block of
``REDUCE_THREADS`` threads per (channel, part) adding in float64 with a fixed-order
shared-memory tree into ``partials[c, p]``, then one thread per channel adding its
``parts`` partials in order (C * parts additions in all, ``parts <= MAX_PARTS``)
and finishing the statistic. No atomics: the same bits on every run.

- ``batch_norm_stats``, training: partial sums of x -> partial sums of
  (x - mean)^2 (thread 0 of each block adds the channel's partial sums into the
  mean first) -> mean, invstd and the running-statistics update (one thread per
  channel; the mean added in the same order, so the same bits). Three launches.
  Eval: one thread per channel copies the running statistics (no reduction).
- ``batch_norm_forward``: one thread per element of (N, C, L), grid-stride.
- ``batch_norm_backward``: partial sums of gy and of gy * xhat in one pass (two
  shared arrays) -> gbias, gweight and the float64 totals (one thread per
  channel) -> gx, one thread per element, grid-stride.

Launch sizes come from ``launch.blocks_for`` (for the sums through
``channel_sums.partial_blocks`` and ``channel_blocks``); under the simulator the
blocks are tiny and the grids capped (see ``launch.py``), with the same code paths,
and the parts small enough that the tests' small shapes still cut channels into
several parts, the last one shorter (``tests/test_cuda_batch_norm.py``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from numbacnn.kernels.cuda.channel_sums import (
    CHANNEL_THREADS,
    REDUCE_THREADS,
    channel_blocks,
    channel_partial_sums,
    partial_blocks,
    parts_per_channel,
)
from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured
from numbacnn.kernels.cuda.memory import empty
from numbacnn.kernels.cuda.reduce import block_sum

# the per-channel sums' launch sizes are channel_sums.py's; the per-element passes:
# one thread per element, grid-stride
ELEMENT_THREADS = 8 if SIMULATOR else 256
ELEMENT_MAX_BLOCKS = 2 if SIMULATOR else 4096


# --------------------------------------------------------------------------- #
# statistics


@cuda.jit(device=True)
def channel_mean(sums, c, count):
    """The mean of channel c from its partial sums (C, parts) float64, added in order:
    the squares kernel and the finishing kernel get the same bits."""
    total = 0.0
    for p in range(sums.shape[1]):
        total += sums[c, p]
    return total / count


@cuda.jit
def channel_squares_kernel(squares, sums, x):
    # squares (C, parts) float64 written: per chunk, the sum of (x - mean)^2; sums (C, parts)
    # float64 from channel_sum_kernel (the mean); x (N, C, L)
    n_, c_, l_ = x.shape
    parts = squares.shape[1]
    count = n_ * l_
    chunk = (count + parts - 1) // parts
    partial = cuda.shared.array(REDUCE_THREADS, dtype=float64)
    block_mean = cuda.shared.array(1, dtype=float64)  # the channel's mean, for the whole block
    thread = cuda.threadIdx.x
    for task in range(cuda.blockIdx.x, c_ * parts, cuda.gridDim.x):  # the same trip count for the whole block
        c = task // parts
        p = task % parts
        if thread == 0:  # parts additions, once per block rather than once per thread
            block_mean[0] = channel_mean(sums, c, count)
        cuda.syncthreads()
        m = block_mean[0]  # read before block_sum's first barrier, so thread 0's next write waits for it
        total = 0.0
        for k in range(p * chunk + thread, min((p + 1) * chunk, count), REDUCE_THREADS):
            d = float(x[k // l_, c, k % l_]) - m
            total += d * d
        partial[thread] = total
        block_sum(partial, thread)
        if thread == 0:  # only thread 0 reads partial[0]: the next task's writes wait at block_sum's barrier
            squares[c, p] = partial[0]


@cuda.jit
def batch_norm_stats_kernel(mean, invstd, running_mean, running_var, sums, squares, count, eps, momentum,
                            update):
    # mean, invstd (C,) float64 written; running_mean, running_var (C,) updated when ``update``;
    # sums, squares (C, parts) float64 from channel_sum_kernel and channel_squares_kernel; count = N * L
    for c in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        m = channel_mean(sums, c, count)
        total = 0.0
        for p in range(squares.shape[1]):
            total += squares[c, p]
        mean[c] = m
        invstd[c] = 1.0 / math.sqrt(total / count + eps)
        if update:  # PyTorch's rule: the running variance takes the unbiased variance
            running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * m
            running_var[c] = (1.0 - momentum) * running_var[c] + momentum * total / (count - 1)


@cuda.jit
def batch_norm_eval_stats_kernel(mean, invstd, running_mean, running_var, eps):
    # mean, invstd (C,) float64 written; running_mean, running_var (C,)
    for c in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        mean[c] = running_mean[c]
        invstd[c] = 1.0 / math.sqrt(float(running_var[c]) + eps)


def batch_norm_stats(mean, invstd, running_mean, running_var, x, eps, momentum, training, update) -> None:
    """Per channel: the mean and 1/sqrt(var + eps) the forward normalises with (float64, (C,)).

    Training: the batch's mean and biased variance over N and L, and, when ``update``,
    running = (1 - momentum) * running + momentum * batch with the unbiased variance.
    Eval: from the running statistics. x is (N, C, L); the other arrays (C,).
    """
    n_, c_, l_ = x.shape
    finish_blocks = channel_blocks(c_)
    if not training:
        configured(batch_norm_eval_stats_kernel, finish_blocks, CHANNEL_THREADS)(
            mean, invstd, running_mean, running_var, eps)
        return
    sums = channel_partial_sums(x)  # (C, parts) float64
    squares = empty(sums.shape, np.float64)
    configured(channel_squares_kernel, partial_blocks(c_, sums.shape[1]), REDUCE_THREADS)(squares, sums, x)
    configured(batch_norm_stats_kernel, finish_blocks, CHANNEL_THREADS)(
        mean, invstd, running_mean, running_var, sums, squares, n_ * l_, eps, momentum, update)


# --------------------------------------------------------------------------- #
# forward


@cuda.jit
def batch_norm_forward_kernel(y, x, mean, invstd, weight, bias):
    # y, x (N, C, L); mean, invstd (C,) float64; weight, bias (C,)
    n_, c_, l_ = x.shape
    for item in range(cuda.grid(1), n_ * c_ * l_, cuda.gridsize(1)):
        i = item % l_
        c = (item // l_) % c_
        n = item // (l_ * c_)
        scale = invstd[c] * weight[c]
        y[n, c, i] = x[n, c, i] * scale + (bias[c] - mean[c] * scale)


def batch_norm_forward(y, x, mean, invstd, weight, bias) -> None:
    """y = (x - mean) * invstd * weight + bias per channel; y, x (N, C, L)."""
    configured(batch_norm_forward_kernel, blocks_for(x.size, ELEMENT_THREADS, ELEMENT_MAX_BLOCKS),
               ELEMENT_THREADS)(y, x, mean, invstd, weight, bias)


# --------------------------------------------------------------------------- #
# backward


@cuda.jit
def batch_norm_backward_sums_kernel(partials, gy, x, mean, invstd):
    # partials (2, C, parts) float64 written: [0] sums of gy, [1] sums of gy * xhat, per chunk;
    # gy, x (N, C, L); mean, invstd (C,) float64
    n_, c_, l_ = x.shape
    parts = partials.shape[2]
    count = n_ * l_
    chunk = (count + parts - 1) // parts
    gy_part = cuda.shared.array(REDUCE_THREADS, dtype=float64)
    gy_xhat_part = cuda.shared.array(REDUCE_THREADS, dtype=float64)
    thread = cuda.threadIdx.x
    for task in range(cuda.blockIdx.x, c_ * parts, cuda.gridDim.x):  # the same trip count for the whole block
        c = task // parts
        p = task % parts
        m = mean[c]
        s = invstd[c]
        sum_gy = 0.0
        sum_gy_xhat = 0.0
        for k in range(p * chunk + thread, min((p + 1) * chunk, count), REDUCE_THREADS):
            n = k // l_
            i = k % l_
            g = float(gy[n, c, i])
            sum_gy += g
            sum_gy_xhat += g * (float(x[n, c, i]) - m) * s
        gy_part[thread] = sum_gy
        gy_xhat_part[thread] = sum_gy_xhat
        block_sum(gy_part, thread)
        block_sum(gy_xhat_part, thread)
        if thread == 0:
            partials[0, c, p] = gy_part[0]
            partials[1, c, p] = gy_xhat_part[0]


@cuda.jit
def batch_norm_backward_totals_kernel(totals, gweight, gbias, partials):
    # totals (2, C) float64 written: [0] sum(gy), [1] sum(gy * xhat); gweight, gbias (C,) written;
    # partials (2, C, parts) float64 from batch_norm_backward_sums_kernel
    for c in range(cuda.grid(1), gbias.shape[0], cuda.gridsize(1)):
        sum_gy = 0.0
        sum_gy_xhat = 0.0
        for p in range(partials.shape[2]):
            sum_gy += partials[0, c, p]
            sum_gy_xhat += partials[1, c, p]
        totals[0, c] = sum_gy
        totals[1, c] = sum_gy_xhat
        gbias[c] = sum_gy
        gweight[c] = sum_gy_xhat


@cuda.jit
def batch_norm_backward_input_kernel(gx, gy, x, mean, invstd, weight, totals, training):
    # gx, gy, x (N, C, L); mean, invstd (C,) float64; weight (C,); totals (2, C) float64
    n_, c_, l_ = x.shape
    count = n_ * l_
    for item in range(cuda.grid(1), n_ * c_ * l_, cuda.gridsize(1)):
        i = item % l_
        c = (item // l_) % c_
        n = item // (l_ * c_)
        g = float(gy[n, c, i])
        if training:  # the batch statistics depend on x too
            xhat = (float(x[n, c, i]) - mean[c]) * invstd[c]
            g = g - (totals[0, c] + xhat * totals[1, c]) / count
        gx[n, c, i] = weight[c] * invstd[c] * g


def batch_norm_backward(gx, gweight, gbias, gy, x, mean, invstd, weight, training) -> None:
    """gweight = sum(gy * xhat), gbias = sum(gy) per channel; gx = weight * invstd *
    (gy - (sum(gy) + xhat * sum(gy * xhat)) / count) in training, weight * invstd * gy
    in eval. gx, gy, x (N, C, L); every other array (C,), mean and invstd float64."""
    n_, c_, l_ = x.shape
    parts = parts_per_channel(c_, n_ * l_)
    partials = empty((2, c_, parts), np.float64)
    totals = empty((2, c_), np.float64)
    configured(batch_norm_backward_sums_kernel, partial_blocks(c_, parts), REDUCE_THREADS)(
        partials, gy, x, mean, invstd)
    configured(batch_norm_backward_totals_kernel, channel_blocks(c_), CHANNEL_THREADS)(
        totals, gweight, gbias, partials)
    configured(batch_norm_backward_input_kernel, blocks_for(x.size, ELEMENT_THREADS, ELEMENT_MAX_BLOCKS),
               ELEMENT_THREADS)(gx, gy, x, mean, invstd, weight, totals, training)
