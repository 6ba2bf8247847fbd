"""Batch normalisation and its backward: the dispatcher for ``kernels/<device>/norm.py``.

x of shape (N, C, *) (PyTorch's ``F.batch_norm``: (N, C), (N, C, L), (N, C, H, W),
...) is viewed as (N, C, L). The running statistics are updated in place, as PyTorch
does; the per-channel mean and 1/std the forward used are recomputed by the
backward (one reduction pass) rather than carried between calls.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from numbacnn.device import to_device
from numbacnn.functional._dispatch import Array, _prepare
from numbacnn.shapes import ShapeError, check_array, check_same_dtype, check_shape


def _view(x: Array) -> Array:
    n, c = int(x.shape[0]), int(x.shape[1])
    return x.reshape((n, c, int(np.prod(x.shape[2:], dtype=np.int64))))


def _check(op: str, x: Array, running_mean: Array | None, running_var: Array | None, weight: Array | None,
           bias: Array | None, training: Any, eps: Any) -> int:
    check_array(x, "x", op, empty="any")  # an empty x gives an empty result, as in PyTorch
    if len(x.shape) < 2:
        raise ShapeError(f"{op}: x must have at least 2 dimensions (N, C, *), got shape {tuple(x.shape)}")
    channels = int(x.shape[1])
    for name, a in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if a is not None:
            check_array(a, name, op, 1, empty="any")  # (0,) for x with zero channels
            check_shape(a, name, op, (channels,), " (x's channel count)")
    check_same_dtype(op, x=x, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{op}: training must be a bool, got {training!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"{op}: eps must be a positive number, got {eps!r}")
    if training and x.size and x.size // channels < 2:
        raise ValueError(f"{op}: training needs more than 1 value per channel, got x of shape "
                         f"{tuple(x.shape)} (use a larger batch, or training=False)")
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: training=False needs running_mean and running_var (or pass training=True to "
                         f"normalise with the batch statistics)")
    return channels


def _statistics(op: str, kernels: Any, where: str, xv: Array, running_mean: Array | None,
                running_var: Array | None, training: bool, momentum: float, eps: float) -> tuple:
    channels = int(xv.shape[1])
    mean = kernels.empty((channels,), np.dtype(np.float64))
    invstd = kernels.empty((channels,), np.dtype(np.float64))
    update = bool(training and running_mean is not None and running_var is not None)
    dummy = mean  # read by no branch when there are no running statistics
    kernels.batch_norm_stats(mean, invstd, dummy if running_mean is None else running_mean,
                             dummy if running_var is None else running_var, xv, float(eps), float(momentum),
                             bool(training), update)
    return mean, invstd


def _filled(where: str, channels: int, dtype: np.dtype, value: float) -> Array:
    return to_device(np.full(channels, value, dtype), where)


def batch_norm(x: Array, running_mean: Array | None, running_var: Array | None, weight: Array | None = None,
               bias: Array | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Array:
    """Batch normalisation, PyTorch's ``F.batch_norm``.

    Training: normalise each channel with the batch's mean and biased variance over
    (N, *), and, when running statistics are given, update them in place:
    ``running = (1 - momentum) * running + momentum * batch`` with the *unbiased*
    variance. (A cumulative average, PyTorch's ``momentum=None`` in ``BatchNorm2d``,
    is momentum = 1 / num_batches_tracked, which the layer passes.) Eval: normalise
    with the running statistics. Then ``y = xhat * weight + bias`` (each optional).

    Parameters
    ----------
    x : array (N, C, *), float32 or float64; zero-size axes give a zero-size result
        (running statistics untouched), as in PyTorch
    running_mean, running_var : array (C,) of x's dtype, or None (training only)
    weight, bias : array (C,) or None (1 and 0)
    training : bool
    momentum : float
    eps : float > 0
        Added to the variance.

    Returns
    -------
    array of x's shape
    """
    op = "batch_norm"
    channels = _check(op, x, running_mean, running_var, weight, bias, training, eps)
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"{op}: momentum must be a number, got {momentum!r} (BatchNorm2d turns None into a "
                        f"cumulative average)")
    where, kernels, arrays = _prepare(op, x=x, running_mean=running_mean, running_var=running_var,
                                      weight=weight, bias=bias)
    dtype = np.dtype(x.dtype)
    if not x.size:  # PyTorch returns an empty result and leaves the running statistics as they are
        return kernels.empty(tuple(int(s) for s in x.shape), dtype)
    xv = _view(arrays["x"])
    mean, invstd = _statistics(op, kernels, where, xv, running_mean, running_var, bool(training), momentum, eps)
    y = kernels.empty(tuple(xv.shape), dtype)
    kernels.batch_norm_forward(y, xv, mean, invstd,
                               _filled(where, channels, dtype, 1.0) if weight is None else arrays["weight"],
                               _filled(where, channels, dtype, 0.0) if bias is None else arrays["bias"])
    return y.reshape(tuple(x.shape))


def batch_norm_backward(gy: Array, x: Array, running_mean: Array | None, running_var: Array | None,
                        weight: Array | None = None, training: bool = False,
                        eps: float = 1e-5) -> tuple[Array, Array | None, Array | None]:
    """Gradients of ``sum(gy * batch_norm(x, ...))`` (the forward's arguments, before
    its running-stat update in eval mode; training mode uses only x).

    Returns
    -------
    gx : array of x's shape
    gweight, gbias : arrays (C,), or None when ``weight`` is None (no affine)
    """
    op = "batch_norm_backward"
    channels = _check(op, x, running_mean, running_var, weight, None, training, eps)
    check_array(gy, "gy", op, empty="any")
    check_same_dtype(op, gy=gy, x=x)
    check_shape(gy, "gy", op, tuple(x.shape), " (x's shape)")
    where, kernels, arrays = _prepare(op, gy=gy, x=x, running_mean=running_mean, running_var=running_var,
                                      weight=weight)
    dtype = np.dtype(x.dtype)
    if not x.size:  # nothing flowed through: an empty gx, zero weight and bias gradients
        gx = kernels.empty(tuple(int(s) for s in x.shape), dtype)
        if weight is None:
            return gx, None, None
        return gx, _filled(where, channels, dtype, 0.0), _filled(where, channels, dtype, 0.0)
    xv = _view(arrays["x"])
    if training:  # the batch statistics again; the running ones are not touched
        mean, invstd = _statistics(op, kernels, where, xv, None, None, True, 0.0, eps)
    else:
        mean, invstd = _statistics(op, kernels, where, xv, arrays["running_mean"], arrays["running_var"], False,
                                   0.0, eps)
    gx = kernels.empty(tuple(xv.shape), dtype)
    gweight = kernels.empty((channels,), dtype)
    gbias = kernels.empty((channels,), dtype)
    kernels.batch_norm_backward(gx, gweight, gbias, _view(arrays["gy"]), xv, mean, invstd,
                                _filled(where, channels, dtype, 1.0) if weight is None else arrays["weight"],
                                bool(training))
    if weight is None:
        return gx.reshape(tuple(x.shape)), None, None
    return gx.reshape(tuple(x.shape)), gweight, gbias
