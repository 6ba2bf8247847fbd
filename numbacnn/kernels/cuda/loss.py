"""Softmax cross-entropy on CUDA: per-row losses and the logits' gradient.

Shapes::

    logits  (N, K)   scores
    labels  (N,)     integer class indices, 0 <= label < K (any integer dtype)
    losses  (N,)     per-row loss, -log softmax(logits)[label]
    grad    (N, K)   d(mean loss)/d logits = (softmax - one_hot) / N

One block per row: the threads stride over the row's classes, then the row maximum
and the sum of exponentials are fixed-order shared-memory reductions
(deterministic). The maximum is subtracted before exponentiating (log-sum-exp
trick), so large logits do not overflow; a NaN logit makes its row's loss and
gradient NaN, as on the CPU.
"""

from __future__ import annotations

import math

from numba import cuda

from numbacnn.kernels.common import is_new_max
from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured
from numbacnn.kernels.cuda.reduce import block_max, block_sum

SOFTMAX_THREADS = 4 if SIMULATOR else 128  # a power of two (tree reduction)
SOFTMAX_MAX_BLOCKS = 2 if SIMULATOR else 65535


@cuda.jit
def softmax_cross_entropy_kernel(grad, losses, logits, labels):
    # grad (N, K) written; losses (N,) written; logits (N, K); labels (N,)
    batch, classes = logits.shape
    scratch = cuda.shared.array(SOFTMAX_THREADS, dtype=logits.dtype)
    thread = cuda.threadIdx.x
    one = logits.dtype.type(1)
    inverse_batch = one / logits.dtype.type(batch)
    for n in range(cuda.blockIdx.x, batch, cuda.gridDim.x):  # the same trip count for the whole block
        best = logits.dtype.type(-math.inf)
        for k in range(thread, classes, SOFTMAX_THREADS):
            value = logits[n, k]
            if is_new_max(value, best):
                best = value
        scratch[thread] = best
        block_max(scratch, thread)
        row_max = scratch[0]
        cuda.syncthreads()  # everyone has read the maximum before scratch is reused
        sum_exp = logits.dtype.type(0)
        for k in range(thread, classes, SOFTMAX_THREADS):
            sum_exp += math.exp(logits[n, k] - row_max)
        scratch[thread] = sum_exp
        block_sum(scratch, thread)
        log_sum_exp = row_max + math.log(scratch[0])
        cuda.syncthreads()  # everyone has read the sum before the next row reuses scratch
        label = labels[n]
        if thread == 0:
            losses[n] = log_sum_exp - logits[n, label]
        for k in range(thread, classes, SOFTMAX_THREADS):
            probability = math.exp(logits[n, k] - log_sum_exp)
            grad[n, k] = ((probability - one) if k == label else probability) * inverse_batch


def softmax_cross_entropy(grad, losses, logits, labels) -> None:
    """losses[n] = logsumexp(logits[n]) - logits[n, labels[n]]; grad = (softmax - one_hot) / N."""
    blocks = blocks_for(logits.shape[0], 1, SOFTMAX_MAX_BLOCKS)
    configured(softmax_cross_entropy_kernel, blocks, SOFTMAX_THREADS)(grad, losses, logits, labels)
