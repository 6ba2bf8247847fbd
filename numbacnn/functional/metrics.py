"""Loss and accuracy kept on the batches' device, read back only when asked.

``softmax_cross_entropy`` returns the mean loss as a Python float, which on a GPU
means a device-to-host copy and a wait for the whole step, every step. A training
loop that only needs the loss every k steps uses :func:`softmax_cross_entropy_rows`
(the per-row losses stay on the device) and a :class:`RunningMetrics`, which adds
each batch's loss sum and correct predictions on the device and copies the two
totals back in :meth:`RunningMetrics.read`: one small transfer per read.
"""

from __future__ import annotations

import numpy as np

from numbacnn.functional._dispatch import Array, _prepare
from numbacnn.functional.loss import _check_labels
from numbacnn.shapes import check_array


def softmax_cross_entropy_rows(logits: Array, labels: Array, check_labels: bool = True) -> tuple[Array, Array]:
    """Per-row softmax cross-entropy and the gradient of the mean, both on logits' device.

    Parameters
    ----------
    logits : array (N, K)
        Unnormalised class scores, float32 or float64.
    labels : integer array (N,)
        Class indices on logits' device.
    check_labels : bool
        Check ``0 <= label < K`` here. On CUDA that reads the labels back to the
        host; a loop that checked its whole dataset once passes False.

    Returns
    -------
    losses : array (N,)
        ``logsumexp(logits[n]) - logits[n, labels[n]]``, logits' dtype and device.
    grad : array (N, K)
        Gradient of the mean loss with respect to logits (divided by N).
    """
    op = "softmax_cross_entropy_rows"
    check_array(logits, "logits", op, 2)
    batch, classes = (int(s) for s in logits.shape)
    if check_labels:
        _check_labels(op, labels, batch, classes)
    where, kernels, arrays = _prepare(op, logits=logits, labels=labels)
    label_array = arrays["labels"]
    if where == "cpu":
        label_array = label_array.astype(np.int64, copy=False)  # one label dtype, one compiled kernel
    dtype = np.dtype(logits.dtype)
    grad = kernels.empty((batch, classes), dtype)
    losses = kernels.empty((batch,), dtype)
    kernels.softmax_cross_entropy(grad, losses, arrays["logits"], label_array)
    return losses, grad


class RunningMetrics:
    """Sums of per-row losses, correct predictions and rows, kept on one device.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        Where the batches' logits live.

    Examples
    --------
    >>> metrics = RunningMetrics("cpu")
    >>> losses, grad = softmax_cross_entropy_rows(logits, labels)   # doctest: +SKIP
    >>> metrics.add(losses, logits, labels)                         # doctest: +SKIP
    >>> loss_sum, correct, rows = metrics.read()                    # doctest: +SKIP
    """

    def __init__(self, device: str) -> None:
        from numbacnn.device import backend

        self.device = device
        self._kernels = backend(device)
        self._totals = self._kernels.zeros((2,), np.float64)
        self.rows = 0  # counted on the host: batch sizes are known without a transfer

    def add(self, losses: Array, logits: Array, labels: Array) -> None:
        """Add one batch: ``losses`` (N,), ``logits`` (N, K), integer ``labels`` (N,), all on ``device``."""
        if self.device == "cpu":
            labels = np.asarray(labels).astype(np.int64, copy=False)
        self._kernels.accumulate_loss_and_correct(self._totals, losses, logits, labels)
        self.rows += int(logits.shape[0])

    def read(self) -> tuple[float, int, int]:
        """``(loss_sum, correct, rows)`` so far; on CUDA one 16-byte device-to-host copy."""
        from numbacnn.device import to_host

        loss_sum, correct = to_host(self._totals)
        return float(loss_sum), int(correct), self.rows
