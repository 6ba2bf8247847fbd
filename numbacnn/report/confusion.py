"""Per-class results of a classifier: the confusion matrix and per-class accuracy.

One implementation, used by ``numbacnn evaluate``, the HTML report and
``numbacnn explore``. Plain NumPy on integer labels; no kernel involved.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Count how often each true class was predicted as each class.

    Parameters
    ----------
    labels : np.ndarray
        True classes, shape (N,), integers in ``[0, n_classes)``.
    predictions : np.ndarray
        Predicted classes, shape (N,), integers in ``[0, n_classes)``.
    n_classes : int
        Number of classes K.

    Returns
    -------
    np.ndarray
        int64 array of shape (K, K): ``m[t, p]`` is the number of images of true
        class ``t`` predicted as ``p`` (rows: truth, columns: prediction, as
        scikit-learn and PyTorch's torchmetrics).
    """
    labels = np.asarray(labels, dtype=np.int64).ravel()
    predictions = np.asarray(predictions, dtype=np.int64).ravel()
    if labels.shape != predictions.shape:
        raise ValueError(f"labels has {labels.size} entries and predictions {predictions.size}")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} must lie in [0, {n_classes})")
    flat = np.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Fraction of each true class predicted correctly, shape (K,), NaN for a class with no images."""
    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)
