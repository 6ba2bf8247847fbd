"""Fully connected layer and its backward: the dispatcher for ``kernels/<device>/linear.py``."""

from __future__ import annotations

from numbacnn.functional._dispatch import Array, _output, _prepare, _split_out
from numbacnn.shapes import ShapeError, check_array, check_same_dtype, check_shape


def _check_linear(op: str, x: Array, w: Array) -> tuple[Array, Array, tuple[int, ...]]:
    """x (*, IN) as a matrix (M, IN), w (OUT, IN) or (IN,) as (OUT, IN), and the
    output shape (*, OUT), or (*) for a 1-D w, as PyTorch's linear. The leading axes
    of x may be empty (M = 0). Reshapes only: views of contiguous arrays."""
    check_array(x, "x", op, empty="any")
    check_array(w, "w", op)
    if len(x.shape) < 1:
        raise ShapeError(f"{op}: x must have at least 1 dimension (*, in_features), got shape ()")
    if len(w.shape) not in (1, 2):
        raise ShapeError(f"{op}: w must have 2 dimensions (out_features, in_features) or 1 (in_features), "
                         f"got shape {tuple(w.shape)}")
    # tuple(): the CUDA simulator's shapes do not take negative indices
    x_shape, w_shape = tuple(x.shape), tuple(w.shape)
    features = int(w_shape[-1])
    if x_shape[-1] != features:
        raise ShapeError(
            f"{op}: x has {x_shape[-1]} features but w expects {features} (w.shape={tuple(w.shape)}, "
            f"layout (out_features, in_features)); flatten images with x.reshape(len(x), -1)"
        )
    leading = tuple(int(s) for s in x_shape[:-1])
    rows = 1
    for size in leading:
        rows *= size
    matrix_w = w if len(w.shape) == 2 else w.reshape((1, features))
    out_shape = leading + ((int(w.shape[0]),) if len(w.shape) == 2 else ())
    return x.reshape((rows, features)), matrix_w, out_shape


def linear(x: Array, w: Array, b: Array | None = None, *, out: Array | None = None) -> Array:
    """Fully connected layer: ``x @ w.T + b``.

    Parameters
    ----------
    x : array (*, IN)
        Any number of leading axes (none: a single vector), which may be empty.
    w : array (OUT, IN), or (IN,) for one output feature without its axis
    b : array (OUT,) (() for a 1-D w), optional
    out : array (*, OUT), optional
        Written and returned instead of a new array (a workspace kept between
        calls): x's dtype and device, C-contiguous, not overlapping x, w or b.

    Returns
    -------
    array (*, OUT), or (*) for a 1-D w; zero-size when x is
    """
    op = "linear"
    one_output = hasattr(w, "shape") and len(w.shape) == 1  # a 1-D w: one output, no axis for it
    x, w, out_shape = _check_linear(op, x, w)
    if b is not None:
        check_array(b, "b", op, 0 if one_output else 1)
    dtype = check_same_dtype(op, x=x, w=w, b=b)
    if b is not None:
        if one_output:
            b = b.reshape((1,))
        check_shape(b, "b", op, (w.shape[0],), f" (one bias per output feature; w.shape={tuple(w.shape)})")
    where, kernels, arrays = _prepare(op, x=x, w=w, b=b)
    bias = arrays["b"] if b is not None else kernels.zeros((w.shape[0],), dtype)
    if out is not None:
        out = _output(op, "out", out, kernels, where, out_shape, dtype, arrays).reshape((x.shape[0], w.shape[0]))
    else:
        out = kernels.empty((x.shape[0], w.shape[0]), dtype)
    if x.shape[0]:  # M = 0: nothing to compute
        kernels.linear_forward(out, arrays["x"], arrays["w"], bias)
    return out.reshape(out_shape)


def linear_backward(gy: Array, x: Array, w: Array, *,
                    out: tuple[Array | None, Array | None, Array | None] | None = None,
                    ) -> tuple[Array, Array, Array]:
    """Gradients of ``sum(gy * linear(x, w, b))``.

    Parameters
    ----------
    gy : array (*, OUT), or (*) for a 1-D w
        Gradient with respect to linear's output.
    x, w
        As passed to :func:`linear`.
    out : (gx, gw, gb) tuple of arrays or None, optional
        Where to write each gradient (None entries are allocated), in the returned
        shapes: workspaces kept between steps, checked as :func:`linear`'s ``out``;
        none may overlap gy, x, w or another entry.

    Returns
    -------
    gx : array of x's shape
    gw : array of w's shape
    gb : array (OUT,), or () for a 1-D w
        With empty leading axes, gw and gb are zeros (sums over no rows).
    """
    op = "linear_backward"
    x_shape, w_shape = tuple(x.shape), tuple(w.shape)
    x, w, out_shape = _check_linear(op, x, w)
    check_array(gy, "gy", op, empty="any")
    dtype = check_same_dtype(op, gy=gy, x=x, w=w)
    check_shape(gy, "gy", op, out_shape, " (linear's output shape (*, OUT))")
    gy = gy.reshape((x.shape[0], w.shape[0]))
    gb_shape = (w.shape[0],) if len(w_shape) == 2 else ()
    where, kernels, arrays = _prepare(op, gy=gy, x=x, w=w)
    gx_out, gw_out, gb_out = _split_out(op, out, 3)
    if not x.shape[0]:  # no rows: an empty gx, and the sums over rows are zero
        return (kernels.empty(x_shape, dtype), kernels.zeros(w_shape, dtype),
                kernels.zeros(gb_shape if gb_shape else (1,), dtype).reshape(gb_shape))
    gx = _output(op, "out[0]", gx_out, kernels, where, x_shape, dtype, arrays).reshape(tuple(x.shape))
    kernels.linear_backward_input(gx, arrays["gy"], arrays["w"])
    gw = _output(op, "out[1]", gw_out, kernels, where, w_shape, dtype,
                 dict(arrays, **{"out[0]": gx})).reshape(tuple(w.shape))
    kernels.linear_backward_weight(gw, arrays["gy"], arrays["x"])
    gb = _output(op, "out[2]", gb_out, kernels, where, gb_shape, dtype,
                 dict(arrays, **{"out[0]": gx, "out[1]": gw})).reshape((w.shape[0],))
    # the bias gradient sums gy over the batch: conv's bias kernel on (N, OUT, 1, 1)
    kernels.conv2d_backward_bias(gb, arrays["gy"].reshape(gy.shape[0], gy.shape[1], 1, 1))
    return gx.reshape(x_shape), gw.reshape(w_shape), gb.reshape(gb_shape)
