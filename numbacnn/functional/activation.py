"""ReLU and its backward: the dispatcher for ``kernels/<device>/activation.py``."""

from __future__ import annotations

import numpy as np

from numbacnn.functional._dispatch import Array, _check_elementwise_pair, _output, _prepare
from numbacnn.shapes import check_array


def relu(x: Array, inplace: bool = False, *, out: Array | None = None) -> Array:
    """``max(x, 0)`` elementwise, any shape (0-d and zero-size included). NaN stays NaN.

    ``inplace=True`` writes the result into x (which must then be contiguous) and
    returns x, as PyTorch's ``relu(x, inplace=True)``. ``out=`` (x's shape, dtype and
    device, C-contiguous; x itself allowed, a partial overlap refused) receives the
    result instead of a new array: a workspace kept between calls.

    Returns
    -------
    array of x's shape
    """
    op = "relu"
    check_array(x, "x", op, empty="any")
    where, kernels, arrays = _prepare(op, x=x)
    if inplace and out is not None:
        raise ValueError(f"{op}: pass inplace=True or out=, not both")
    if inplace:
        if arrays["x"] is not x:
            raise ValueError(f"{op}: inplace=True needs a C-contiguous x, got a strided view (copy it first)")
        kernels.relu_forward(x.reshape(-1), x.reshape(-1))
        return x
    out = _output(op, "out", out, kernels, where, tuple(x.shape), np.dtype(x.dtype), arrays, elementwise=True)
    kernels.relu_forward(out.reshape(-1), arrays["x"].reshape(-1))
    return out


def relu_backward(gy: Array, x: Array, *, out: Array | None = None) -> Array:
    """Gradient of ``sum(gy * relu(x))``: gy where x > 0, else 0 (0 at x == 0).

    ``out=`` (x's shape, dtype and device, C-contiguous; gy or x itself allowed, a
    partial overlap refused) receives the gradient instead of a new array.

    Returns
    -------
    array of x's shape
    """
    op = "relu_backward"
    dtype = _check_elementwise_pair(op, "gy", "x", gy=gy, x=x)
    where, kernels, arrays = _prepare(op, gy=gy, x=x)
    gx = _output(op, "out", out, kernels, where, tuple(x.shape), dtype, arrays, elementwise=True)
    kernels.relu_backward(gx.reshape(-1), arrays["gy"].reshape(-1), arrays["x"].reshape(-1))
    return gx


def _check_slope(negative_slope: object, op: str) -> float:
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: negative_slope must be a number, got {negative_slope!r}")
    return float(negative_slope)


def leaky_relu(x: Array, negative_slope: float = 0.01, inplace: bool = False) -> Array:
    """``x`` where x > 0, else ``negative_slope * x``, elementwise, any shape
    (PyTorch's ``F.leaky_relu``). NaN stays NaN.

    Returns
    -------
    array of x's shape (x itself with ``inplace=True``, which needs a contiguous x)
    """
    op = "leaky_relu"
    check_array(x, "x", op, empty="any")
    slope = _check_slope(negative_slope, op)
    if not isinstance(inplace, (bool, np.bool_)):
        raise TypeError(f"{op}: inplace must be a bool, got {inplace!r}")
    where, kernels, arrays = _prepare(op, x=x)
    if inplace and arrays["x"] is not x:
        raise ValueError(f"{op}: inplace=True needs a C-contiguous x, got a strided view (copy it first)")
    out = x if inplace else kernels.empty(tuple(x.shape), np.dtype(x.dtype))
    if x.size:
        kernels.leaky_relu_forward(out.reshape(-1), arrays["x"].reshape(-1), np.dtype(x.dtype).type(slope))
    return out


def leaky_relu_backward(gy: Array, x: Array, negative_slope: float = 0.01) -> Array:
    """Gradient of ``sum(gy * leaky_relu(x, negative_slope))``: gy where x > 0, else
    ``negative_slope * gy`` (the slope at x == 0, as PyTorch).

    Returns
    -------
    array of x's shape
    """
    op = "leaky_relu_backward"
    dtype = _check_elementwise_pair(op, "gy", "x", gy=gy, x=x)
    slope = _check_slope(negative_slope, op)
    where, kernels, arrays = _prepare(op, gy=gy, x=x)
    gx = kernels.empty(tuple(x.shape), dtype)
    if x.size:
        kernels.leaky_relu_backward(gx.reshape(-1), arrays["gy"].reshape(-1), arrays["x"].reshape(-1),
                                    dtype.type(slope))
    return gx
