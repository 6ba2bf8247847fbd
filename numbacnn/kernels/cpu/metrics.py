"""Training metrics on the CPU: running sums of the loss and of correct predictions.

The same name, signature and shapes as ``kernels/cuda/metrics.py`` (whose docstring
is the specification): ``totals`` (2,) float64 is updated with the sum of
``losses`` and the number of rows of ``logits`` whose first maximum is the label.
"""

from numba import njit

from numbacnn.kernels.common import row_argmax


@njit(cache=True)
def accumulate_loss_and_correct(totals, losses, logits, labels):
    # totals (2,) float64 updated; losses (N,); logits (N, K); labels (N,)
    batch = logits.shape[0]
    loss_sum = 0.0
    correct = 0.0
    for n in range(batch):  # rows in order: the same sum on every run
        loss_sum += losses[n]
        if row_argmax(logits, n) == labels[n]:
            correct += 1.0
    totals[0] += loss_sum
    totals[1] += correct
