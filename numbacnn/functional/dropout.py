"""Dropout and its backward: the dispatcher for ``dropout_apply`` in
``kernels/<device>/dropout.py``.

The mask is drawn on the host by a ``numpy.random.Generator`` (PCG64) from the seed
and copied to the input's device, so the same seed gives the same mask on the CPU
and on CUDA, and the backward multiplies by the same mask (a kept element is scaled
by 1 / (1 - p), as PyTorch's inverted dropout). It does not reproduce PyTorch's
masks (a different generator).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from numbacnn.device import to_device
from numbacnn.functional._dispatch import Array, _check_elementwise_pair, _prepare
from numbacnn.shapes import check_array


def dropout_mask(shape: tuple, p: float, dtype: Any, seed: int | np.random.Generator | None) -> np.ndarray:
    """The host mask dropout multiplies by: 0 with probability p, else 1 / (1 - p).

    ``seed`` is an int (the same int gives the same mask), a Generator (advanced) or
    None (fresh entropy). p == 1 gives all zeros (PyTorch's result).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    keep = rng.random(tuple(shape)) >= p
    scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
    return (keep * scale).astype(dtype)


def dropout(x: Array, p: float = 0.5, training: bool = True, inplace: bool = False, *,
            seed: int | np.random.Generator | None = None, return_mask: bool = False) -> Array | tuple:
    """Inverted dropout, PyTorch's ``F.dropout``: zero each element with probability
    ``p`` and scale the rest by 1 / (1 - p); the identity (a copy) when not training.

    Parameters
    ----------
    x : array, any shape, float32 or float64
    p : float in [0, 1]
    training : bool
    inplace : bool
        Refused (True): write-in-place dropout is not supported; use the result.
    seed : int, Generator or None
        The mask's source (see :func:`dropout_mask`).
    return_mask : bool
        Also return the mask (x's shape, dtype and device) for :func:`dropout_backward`;
        None when not training.

    Returns
    -------
    y : array of x's shape
    mask : only with ``return_mask``
    """
    op = "dropout"
    check_array(x, "x", op, empty="any")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{op}: p must be a probability between 0 and 1, got {p!r}")
    for name, value in (("training", training), ("inplace", inplace), ("return_mask", return_mask)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
    if inplace:
        raise ValueError(f"{op}: inplace=True is not supported; use the returned array (inplace=False)")
    where, kernels, arrays = _prepare(op, x=x)
    y = kernels.empty(tuple(x.shape), np.dtype(x.dtype))
    if not training:
        if x.size:
            kernels.dropout_apply(y.reshape(-1), arrays["x"].reshape(-1),
                                  to_device(np.ones(x.size, np.dtype(x.dtype)), where))
        return (y, None) if return_mask else y
    mask = to_device(dropout_mask(tuple(x.shape), float(p), np.dtype(x.dtype), seed), where)
    if x.size:
        kernels.dropout_apply(y.reshape(-1), arrays["x"].reshape(-1), mask.reshape(-1))
    return (y, mask) if return_mask else y


def dropout_backward(gy: Array, mask: Array) -> Array:
    """Gradient of ``sum(gy * dropout(x))`` w.r.t. x: ``gy * mask``.

    Parameters
    ----------
    gy : array
    mask : array of gy's shape and dtype, from ``dropout(..., return_mask=True)``

    Returns
    -------
    array of gy's shape
    """
    op = "dropout_backward"
    _check_elementwise_pair(op, "mask", "gy", gy=gy, mask=mask)
    where, kernels, arrays = _prepare(op, gy=gy, mask=mask)
    gx = kernels.empty(tuple(gy.shape), np.dtype(gy.dtype))
    if gy.size:
        kernels.dropout_apply(gx.reshape(-1), arrays["gy"].reshape(-1), arrays["mask"].reshape(-1))
    return gx
