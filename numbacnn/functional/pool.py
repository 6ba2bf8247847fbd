"""Max pooling, its backward and max unpooling: the dispatcher for ``kernels/<device>/pool.py``.

Every function takes batched (N, C, H, W) or unbatched (C, H, W) input, as PyTorch
does, and N = 0 gives zero-size results. ``indices`` are PyTorch's: int64, each
window's maximum as a flat index ``row * W + col`` into its own (H, W) plane.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from numbacnn.functional._dispatch import Array, IntOrPair, _add_batch_axis, _drop_batch_axis, _output, _prepare
from numbacnn.shapes import (
    ShapeError, check_array, check_same_dtype, check_shape, pool2d_geometry, unpool2d_output_size,
)


def _check_indices(indices: Array, name: str, op: str, expected: tuple, plane_size: int, where: str) -> None:
    """int64 indices of the expected shape; on the CPU also within the (H, W) plane.

    On CUDA the range is not checked (that would copy the indices to the host on every
    call); the kernels skip an index outside its plane instead of touching memory.
    """
    if not hasattr(indices, "dtype") or not hasattr(indices, "shape"):
        raise TypeError(f"{op}: {name} must be an int64 array, got {type(indices).__name__}")
    if np.dtype(indices.dtype) != np.int64:
        raise TypeError(
            f"{op}: {name} has dtype {np.dtype(indices.dtype).name}, which is not supported: expected int64 "
            f"(as returned by max_pool2d(..., return_indices=True))"
        )
    check_shape(indices, name, op, expected)
    if where == "cpu" and indices.size:
        low, high = int(indices.min()), int(indices.max())
        if low < -1 or high >= plane_size:
            bad = low if low < -1 else high
            raise ValueError(f"{op}: {name} contains {bad}, expected flat indices 0 <= index < {plane_size} "
                             f"into each (H, W) plane")


def max_pool2d(
    x: Array, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
    dilation: IntOrPair = 1, ceil_mode: bool = False, return_indices: bool = False, *,
    out: Array | None = None,
) -> Array | tuple[Array, Array]:
    """2-D max pooling.

    Parameters
    ----------
    x : array (N, C, H, W) or (C, H, W)
        float32 or float64; N may be 0.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size`` (non-overlapping windows).
    padding : int or (int, int)
        Implicit -inf padding on each side; at most ``kernel_size // 2``.
    dilation : int or (int, int)
        Spacing between window taps.
    ceil_mode : bool
        Round the output size up instead of down; a last window that would start
        past the input and its left padding is dropped (PyTorch's rule).
    return_indices : bool
        Also return where each maximum is (for :func:`max_unpool2d` and the
        cheaper backward ``max_pool2d_backward(..., indices=)``).
    out : array of y's shape, x's dtype and device, optional
        Receives y instead of a new array (a workspace kept between calls);
        C-contiguous, not overlapping x.

    Returns
    -------
    y : array (N, C, OH, OW), or (C, OH, OW) for an unbatched x
    indices : int64 array of y's shape, only with ``return_indices``
        Flat position ``row * W + col`` of each window's first maximum in its
        (H, W) input plane, as PyTorch returns.
    """
    op = "max_pool2d"
    if not isinstance(return_indices, (bool, np.bool_)):
        raise TypeError(f"{op}: return_indices must be a bool, got {return_indices!r}")
    x, unbatched = _add_batch_axis(x, 4)
    check_array(x, "x", op, 4, batched_image=True, empty="batch")
    geometry = pool2d_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, op)
    where, kernels, arrays = _prepare(op, x=x)
    if out is not None and unbatched:
        out, _ = _add_batch_axis(out, 4)
    out = _output(op, "out", out, kernels, where, geometry.output_shape, np.dtype(x.dtype), arrays)
    if not return_indices:
        if geometry.batch:
            kernels.max_pool2d_forward(out, arrays["x"], *geometry.kernel_args())
        return _drop_batch_axis(out, unbatched)
    indices = kernels.empty(geometry.output_shape, np.dtype(np.int64))
    if geometry.batch:
        kernels.max_pool2d_forward_indices(out, indices, arrays["x"], *geometry.kernel_args())
    return _drop_batch_axis(out, unbatched), _drop_batch_axis(indices, unbatched)


def max_pool2d_backward(
    gy: Array, x: Array | None, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False, *,
    indices: Array | None = None, input_shape: Sequence[int] | None = None, out: Array | None = None,
) -> Array:
    """Gradient of ``sum(gy * max_pool2d(x, ...))`` with respect to x.

    Each window's gradient goes to its first maximum in row-major order; where
    windows overlap, the gradients add up.

    Parameters
    ----------
    gy : array (N, C, OH, OW) or (C, OH, OW)
        Gradient with respect to max_pool2d's output.
    x : array (N, C, H, W) or (C, H, W), or None
        The forward input. With ``indices`` only its shape is used, and it may be
        None when ``input_shape`` is given instead.
    kernel_size, stride, padding, dilation, ceil_mode
        As passed to :func:`max_pool2d`.
    indices : int64 array of gy's shape, optional
        From ``max_pool2d(..., return_indices=True)``: the windows are not rescanned.
    input_shape : sequence of int, optional
        x's shape, when x is None.
    out : array of x's shape and gy's dtype and device, optional
        Receives the gradient instead of a new array (a workspace kept between
        steps); C-contiguous, not overlapping gy, x or indices.

    Returns
    -------
    array of x's shape (or ``input_shape``)
    """
    op = "max_pool2d_backward"
    if x is None:
        if indices is None or input_shape is None:
            raise TypeError(f"{op}: x is None; pass x, or indices= together with input_shape=")
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) not in (3, 4):
            raise TypeError(f"{op}: input_shape must be (N, C, H, W) or (C, H, W), got {input_shape!r}")
        shape = tuple(int(s) for s in input_shape)
        unbatched = len(shape) == 3
        shape = (1, *shape) if unbatched else shape
        if min(shape[1:]) < 1 or shape[0] < 0:
            raise ShapeError(f"{op}: input_shape={tuple(input_shape)} has an empty axis other than the batch axis")
    else:
        x, unbatched = _add_batch_axis(x, 4)
        check_array(x, "x", op, 4, batched_image=True, empty="batch")
        shape = tuple(int(s) for s in x.shape)
    if unbatched:
        gy, _ = _add_batch_axis(gy, 4)
        indices, _ = _add_batch_axis(indices, 4)
    check_array(gy, "gy", op, 4, batched_image=True, empty="batch")
    dtype = check_same_dtype(op, gy=gy, x=x)
    geometry = pool2d_geometry(shape, kernel_size, stride, padding, dilation, ceil_mode, op)
    check_shape(gy, "gy", op, geometry.output_shape, " (max_pool2d's output shape for this x)")
    if indices is None:
        where, kernels, arrays = _prepare(op, gy=gy, x=x)
    else:
        where, kernels, arrays = _prepare(op, gy=gy, indices=indices)
        _check_indices(arrays["indices"], "indices", op, geometry.output_shape, shape[2] * shape[3], where)
    if out is not None and unbatched:
        out, _ = _add_batch_axis(out, 4)
    gx = _output(op, "out", out, kernels, where, shape, dtype, arrays)
    if not geometry.batch:
        return _drop_batch_axis(gx, unbatched)
    if indices is None:
        kernels.max_pool2d_backward(gx, arrays["gy"], arrays["x"], *geometry.kernel_args())
    else:
        kernels.max_pool2d_backward_indices(gx, arrays["gy"], arrays["indices"], *geometry.kernel_args())
    return _drop_batch_axis(gx, unbatched)


def max_unpool2d(
    x: Array, indices: Array, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, output_size: Sequence[int] | None = None,
) -> Array:
    """Partial inverse of max_pool2d: each value of x goes back to where ``indices``
    says its maximum was; every other output element is 0.

    Parameters
    ----------
    x : array (N, C, H, W) or (C, H, W)
        Pooled values, float32 or float64.
    indices : int64 array of x's shape
        From ``max_pool2d(..., return_indices=True)``: flat ``row * OW + col``
        positions in each (OH, OW) output plane.
    kernel_size, stride, padding
        Those of the max_pool2d being undone (stride defaults to kernel_size).
    output_size : (OH, OW) or a full shape, optional
        Default ``(H - 1) * stride - 2 * padding + kernel_size``; an explicit size
        must lie strictly within ``stride`` of it (PyTorch's rule).

    Returns
    -------
    array (N, C, OH, OW), or (C, OH, OW) for an unbatched x
        When two indices name one element, the later one (row-major) wins on the
        CPU; on CUDA either may win, as in PyTorch.
    """
    op = "max_unpool2d"
    x, unbatched = _add_batch_axis(x, 4)
    if unbatched:
        indices, _ = _add_batch_axis(indices, 4)
    check_array(x, "x", op, 4, batched_image=True, empty="batch")
    out_h, out_w = unpool2d_output_size(x.shape[2:], kernel_size, stride, padding, output_size, op)
    where, kernels, arrays = _prepare(op, x=x, indices=indices)
    _check_indices(arrays["indices"], "indices", op, tuple(x.shape), out_h * out_w, where)
    out = kernels.empty((x.shape[0], x.shape[1], out_h, out_w), np.dtype(x.dtype))
    if x.shape[0]:
        kernels.max_unpool2d_forward(out, arrays["x"], arrays["indices"])
    return _drop_batch_axis(out, unbatched)


def max_unpool2d_backward(gy: Array, indices: Array) -> Array:
    """Gradient of ``sum(gy * max_unpool2d(x, indices, ...))`` with respect to x.

    Parameters
    ----------
    gy : array (N, C, OH, OW) or (C, OH, OW)
        Gradient with respect to max_unpool2d's output.
    indices : int64 array (N, C, H, W) or (C, H, W)
        As passed to :func:`max_unpool2d`.

    Returns
    -------
    array of indices' shape, gy's dtype: ``gy[n, c].flat[indices[n, c, h, w]]``
    """
    op = "max_unpool2d_backward"
    gy, unbatched = _add_batch_axis(gy, 4)
    if unbatched:
        indices, _ = _add_batch_axis(indices, 4)
    check_array(gy, "gy", op, 4, batched_image=True, empty="batch")
    if not hasattr(indices, "shape") or len(indices.shape) != 4 or tuple(indices.shape[:2]) != tuple(gy.shape[:2]):
        raise ShapeError(f"{op}: indices must be (N, C, H, W) with gy's N and C {tuple(gy.shape[:2])}, "
                         f"got {getattr(indices, 'shape', type(indices).__name__)}")
    where, kernels, arrays = _prepare(op, gy=gy, indices=indices)
    _check_indices(arrays["indices"], "indices", op, tuple(indices.shape), gy.shape[2] * gy.shape[3], where)
    gx = kernels.empty(tuple(indices.shape), np.dtype(gy.dtype))
    if gx.size:
        kernels.max_unpool2d_backward(gx, arrays["gy"], arrays["indices"])
    return _drop_batch_axis(gx, unbatched)
