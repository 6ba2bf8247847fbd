"""Softmax cross-entropy: the dispatcher for ``kernels/<device>/loss.py``."""

from __future__ import annotations

import numpy as np

from numbacnn.functional._dispatch import Array, _output, _prepare
from numbacnn.shapes import check_array, check_shape


def _check_labels(op: str, labels: Array, batch: int, classes: int) -> None:
    if not hasattr(labels, "dtype") or not hasattr(labels, "shape"):
        raise TypeError(f"{op}: labels must be an integer array, got {type(labels).__name__}")
    dtype = np.dtype(labels.dtype)
    if dtype.kind not in "iu":
        raise TypeError(f"{op}: labels has dtype {dtype.name}, expected an integer dtype (class indices)")
    check_shape(labels, "labels", op, (batch,), " (one class index per row of logits)")
    host_labels = labels if isinstance(labels, np.ndarray) else _host_copy(labels)
    low, high = int(host_labels.min()), int(host_labels.max())
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise ValueError(f"{op}: labels contains {bad}, expected 0 <= label < {classes} (logits has {classes} classes)")


def _host_copy(a: Array) -> np.ndarray:
    from numbacnn.device import to_host

    return to_host(a)


def softmax_cross_entropy(logits: Array, labels: Array, *, out: Array | None = None) -> tuple[float, Array]:
    """Mean cross-entropy of ``softmax(logits)`` against integer labels.

    Parameters
    ----------
    logits : array (N, K)
        Unnormalised class scores, float32 or float64.
    labels : integer array (N,)
        Class indices, ``0 <= label < K``, on the same device as logits.
    out : array (N, K), optional
        Receives the gradient instead of a new array (a workspace kept between
        steps): logits' dtype and device, C-contiguous, not overlapping logits.

    Returns
    -------
    loss : float
        ``mean_n(logsumexp(logits[n]) - logits[n, labels[n]])`` as a Python float.
    grad : array (N, K)
        Gradient of the mean loss with respect to logits (already divided by N),
        on logits' device.
    """
    op = "softmax_cross_entropy"
    check_array(logits, "logits", op, 2)
    batch, classes = (int(s) for s in logits.shape)
    _check_labels(op, labels, batch, classes)
    where, kernels, arrays = _prepare(op, logits=logits, labels=labels)
    label_array = arrays["labels"]
    if where == "cpu":
        # lossless after the range check; one label dtype means one compiled kernel
        label_array = label_array.astype(np.int64, copy=False)
    dtype = np.dtype(logits.dtype)
    grad = _output(op, "out", out, kernels, where, (batch, classes), dtype, {"logits": arrays["logits"]})
    losses = kernels.empty((batch,), dtype)
    kernels.softmax_cross_entropy(grad, losses, arrays["logits"], label_array)
    host_losses = losses if where == "cpu" else _host_copy(losses)
    return float(np.sum(host_losses, dtype=np.float64) / batch), grad

