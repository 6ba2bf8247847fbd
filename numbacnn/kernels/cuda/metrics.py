"""Training metrics kept on the GPU: running sums of the loss and of correct predictions.

Shapes::

    totals  (2,) float64   updated: [sum of per-row losses, number of correct rows]
    losses  (N,)           per-row losses of one batch (softmax_cross_entropy's)
    logits  (N, K)         scores; a row is correct when its first maximum is its label
    labels  (N,)           integer class indices

Reading a loss back to the host waits for the GPU to finish the step and costs a
transfer; adding each batch into ``totals`` on the device lets the train loop read
them back once every k steps instead (issue 12). One block, a fixed-order shared-
memory reduction (``block_sum``): the sums are the same, bitwise, on every run.
"""

from __future__ import annotations

from numba import cuda, float64

from numbacnn.kernels.common import row_argmax as _row_argmax_source
from numbacnn.kernels.cuda.launch import SIMULATOR, configured
from numbacnn.kernels.cuda.reduce import block_sum

METRICS_THREADS = 4 if SIMULATOR else 256  # a power of two (tree reduction); one block

# row_argmax takes an array: the simulator cannot pass its fake device arrays to a
# CPU-compiled @numba.jit function, so the kernel calls the same Python source as a
# CUDA device function (as kernels/cuda/pool.py does with window_argmax).
row_argmax = cuda.jit(device=True)(_row_argmax_source.py_func)


@cuda.jit
def accumulate_loss_and_correct_kernel(totals, losses, logits, labels):
    # totals (2,) float64 updated; losses (N,); logits (N, K); labels (N,). One block.
    batch = logits.shape[0]
    loss_part = cuda.shared.array(METRICS_THREADS, dtype=float64)
    correct_part = cuda.shared.array(METRICS_THREADS, dtype=float64)
    thread = cuda.threadIdx.x
    loss_sum = 0.0
    correct = 0.0
    for n in range(thread, batch, METRICS_THREADS):
        loss_sum += losses[n]
        if row_argmax(logits, n) == labels[n]:
            correct += 1.0
    loss_part[thread] = loss_sum
    correct_part[thread] = correct
    block_sum(loss_part, thread)
    block_sum(correct_part, thread)
    if thread == 0:
        totals[0] += loss_part[0]
        totals[1] += correct_part[0]


def accumulate_loss_and_correct(totals, losses, logits, labels) -> None:
    """totals[0] += sum(losses); totals[1] += number of rows whose argmax is the label."""
    configured(accumulate_loss_and_correct_kernel, 1, METRICS_THREADS)(totals, losses, logits, labels)
