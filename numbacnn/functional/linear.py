"""Fully connected layer and its backward: the dispatcher for ``kernels/<device>/linear.py``."""

from __future__ import annotations

from numbacnn.functional._dispatch import Array, _prepare
from numbacnn.shapes import ShapeError, check_array, check_same_dtype, check_shape


def _check_linear(op: str, x: Array, w: Array) -> None:
    check_array(x, "x", op, 2)
    check_array(w, "w", op, 2)
    if x.shape[1] != w.shape[1]:
        raise ShapeError(
            f"{op}: x has {x.shape[1]} features but w expects {w.shape[1]} (w.shape={tuple(w.shape)}, "
            f"layout (out_features, in_features)); flatten images with x.reshape(len(x), -1)"
        )


def linear(x: Array, w: Array, b: Array | None = None) -> Array:
    """Fully connected layer: ``x @ w.T + b``.

    Parameters
    ----------
    x : array (N, IN)
    w : array (OUT, IN)
    b : array (OUT,), optional

    Returns
    -------
    array (N, OUT)
    """
    op = "linear"
    _check_linear(op, x, w)
    if b is not None:
        check_array(b, "b", op, 1)
    dtype = check_same_dtype(op, x=x, w=w, b=b)
    if b is not None:
        check_shape(b, "b", op, (w.shape[0],), f" (one bias per output feature; w.shape={tuple(w.shape)})")
    _, kernels, arrays = _prepare(op, x=x, w=w, b=b)
    bias = arrays["b"] if b is not None else kernels.zeros((w.shape[0],), dtype)
    out = kernels.empty((x.shape[0], w.shape[0]), dtype)
    kernels.linear_forward(out, arrays["x"], arrays["w"], bias)
    return out


def linear_backward(gy: Array, x: Array, w: Array) -> tuple[Array, Array, Array]:
    """Gradients of ``sum(gy * linear(x, w, b))``.

    Returns
    -------
    gx : array (N, IN)
    gw : array (OUT, IN)
    gb : array (OUT,)
    """
    op = "linear_backward"
    _check_linear(op, x, w)
    check_array(gy, "gy", op, 2)
    dtype = check_same_dtype(op, gy=gy, x=x, w=w)
    check_shape(gy, "gy", op, (x.shape[0], w.shape[0]), " (linear's output shape (N, OUT))")
    _, kernels, arrays = _prepare(op, gy=gy, x=x, w=w)
    gx = kernels.empty(tuple(x.shape), dtype)
    kernels.linear_backward_input(gx, arrays["gy"], arrays["w"])
    gw = kernels.empty(tuple(w.shape), dtype)
    kernels.linear_backward_weight(gw, arrays["gy"], arrays["x"])
    gb = kernels.empty((w.shape[0],), dtype)
    # the bias gradient sums gy over the batch: conv's bias kernel on (N, OUT, 1, 1)
    kernels.conv2d_backward_bias(gb, arrays["gy"].reshape(gy.shape[0], gy.shape[1], 1, 1))
    return gx, gw, gb
