"""Training metrics on the CPU: running sums of the loss and of correct predictions.

The same name, signature and shapes as ``kernels/cuda/metrics.py`` (whose docstring
is the specification): ``totals`` (2,) float64 is updated with the sum of
``losses`` and the number of rows of ``logits`` whose first maximum is the label.
"""

from numba import njit

from numbacnn.kernels.common import is_new_max


@njit(cache=True)
def accumulate_loss_and_correct(totals, losses, logits, labels):
    # totals (2,) float64 updated; losses (N,); logits (N, K); labels (N,)
    batch, classes = logits.shape
    loss_sum = 0.0
    correct = 0.0
    for n in range(batch):  # rows in order: the same sum on every run
        loss_sum += losses[n]
        best_k = 0
        best = logits[n, 0]
        for k in range(1, classes):
            if is_new_max(logits[n, k], best):
                best = logits[n, k]
                best_k = k
        if best_k == labels[n]:
            correct += 1.0
    totals[0] += loss_sum
    totals[1] += correct
