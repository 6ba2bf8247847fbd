"""Softmax cross-entropy on the CPU: per-row losses and the logits' gradient.

Shapes::

    logits  (N, K)   scores
    labels  (N,)     int64 class indices, 0 <= label < K
    losses  (N,)     per-row loss, -log softmax(logits)[label]
    grad    (N, K)   d(mean loss)/d logits = (softmax - one_hot) / N

Numerically stable: the row maximum is subtracted before exponentiating, so
large logits do not overflow (log-sum-exp trick).
"""

import math

import numpy as np
from numba import njit, prange


# Batches of fewer logits than this run on one thread (a one-sample batch, a tiny test):
# there a parallel region's fork/join costs more than the work. A training batch (64 x
# 10 logits) runs in parallel though its work is microseconds: the region keeps the
# worker threads awake between the forward's last parallel region and the backward's
# first. Without it the classifier's Python (~150 us) outlasts the threads' spinning
# (GOMP_SPINCOUNT, numbacnn/__init__.py), they sleep, and the backward's first region
# waits ~50 us for them to wake: the stride-2 Tiny VGG's step 0.95-0.97x with it, the
# main job's 0.98-0.99x (in one process, against 1 << 16). Under load the training
# loop's thread governor runs one thread, where the region costs nothing (issue 10
# measured 2 ms a step for the small ops' regions at a fixed 2 threads, load 6).
SERIAL_BELOW = 1 << 9


@njit(cache=True)
def _softmax_cross_entropy_row(grad, losses, logits, labels, n, shifted):
    batch, classes = logits.shape
    row_max = -np.inf
    for k in range(classes):
        value = logits[n, k]
        if value > row_max or math.isnan(value):
            row_max = value
    # each exponential once, kept in float64 in ``shifted`` (classes,) (exp dominates
    # this kernel: 64 x 10 logits took 11.7 us with two per element, 6.9 with one)
    sum_exp = 0.0
    for k in range(classes):
        shifted[k] = math.exp(logits[n, k] - row_max)
        sum_exp += shifted[k]
    label = labels[n]
    losses[n] = row_max + math.log(sum_exp) - logits[n, label]
    for k in range(classes):
        probability = shifted[k] / sum_exp
        grad[n, k] = (probability - (1.0 if k == label else 0.0)) / batch


@njit(parallel=True, cache=True)
def softmax_cross_entropy(grad, losses, logits, labels):
    batch, classes = logits.shape
    if batch * classes < SERIAL_BELOW:
        shifted = np.empty(classes, np.float64)
        for n in range(batch):
            _softmax_cross_entropy_row(grad, losses, logits, labels, n, shifted)
    else:
        for n in prange(batch):
            _softmax_cross_entropy_row(grad, losses, logits, labels, n, np.empty(classes, np.float64))
