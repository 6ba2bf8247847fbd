"""Average pooling and the adaptive (global) pools, with their backwards: the
dispatcher for ``kernels/<device>/avg_pool.py``.

Batched (N, C, H, W) or unbatched (C, H, W) input, as PyTorch; N = 0 gives zero-size
results. ``numbacnn.shapes`` turns the hyperparameters into clipped windows and
divisors (small int64/float64 arrays) which every kernel reads, so the kernels only
add, divide and compare.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from numbacnn.device import to_device
from numbacnn.functional._dispatch import Array, IntOrPair, _add_batch_axis, _drop_batch_axis, _prepare
from numbacnn.shapes import (
    _is_int, adaptive_output_size, adaptive_pool_windows, avg_pool2d_windows, check_array, check_same_dtype,
    check_shape, pool2d_geometry,
)


def _check_bool(value: Any, name: str, op: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
    return bool(value)


def _avg_windows(op: str, x_shape: tuple, kernel_size: Any, stride: Any, padding: Any, ceil_mode: Any,
                 count_include_pad: Any, divisor_override: Any) -> tuple:
    geometry = pool2d_geometry(x_shape, kernel_size, stride, padding, 1, ceil_mode, op)
    _check_bool(count_include_pad, "count_include_pad", op)
    if divisor_override is not None and (not _is_int(divisor_override) or divisor_override == 0):
        raise ValueError(f"{op}: divisor_override must be a non-zero int or None, got {divisor_override!r}")
    return geometry.output_shape, avg_pool2d_windows(geometry, bool(count_include_pad), divisor_override)


def _adaptive_windows(op: str, x_shape: tuple, output_size: Any) -> tuple:
    out_h, out_w = adaptive_output_size(output_size, x_shape, op)
    hs, he = adaptive_pool_windows(int(x_shape[2]), out_h)
    ws, we = adaptive_pool_windows(int(x_shape[3]), out_w)
    divisor = np.outer(he - hs, we - ws).astype(np.float64)
    return (int(x_shape[0]), int(x_shape[1]), out_h, out_w), (hs, he, ws, we, divisor)


def _on(where: str, arrays: tuple) -> tuple:
    return tuple(to_device(np.ascontiguousarray(a), where) for a in arrays)


def avg_pool2d(x: Array, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Array:
    """2-D average pooling, PyTorch's ``F.avg_pool2d``.

    Parameters
    ----------
    x : array (N, C, H, W) or (C, H, W), float32 or float64; N may be 0
    kernel_size, stride, padding : int or (int, int)
        ``stride`` defaults to ``kernel_size``; zero padding of at most
        ``kernel_size // 2`` on each side.
    ceil_mode : bool
        Round the output size up (a last window starting past the input and its
        left padding is dropped).
    count_include_pad : bool
        Divide by the window's size including padding (PyTorch's default) or by the
        number of input pixels it covers.
    divisor_override : int or None
        Divide every window's sum by this instead.

    Returns
    -------
    array (N, C, OH, OW), or (C, OH, OW) for an unbatched x
    """
    op = "avg_pool2d"
    x, unbatched = _add_batch_axis(x, 4)
    check_array(x, "x", op, 4, batched_image=True, empty="batch")
    shape, windows = _avg_windows(op, tuple(x.shape), kernel_size, stride, padding, ceil_mode,
                                  count_include_pad, divisor_override)
    return _drop_batch_axis(_window_avg(op, x, shape, windows), unbatched)


def _window_avg(op: str, x: Array, shape: tuple, windows: tuple) -> Array:
    where, kernels, arrays = _prepare(op, x=x)
    y = kernels.empty(shape, np.dtype(x.dtype))
    if shape[0]:
        kernels.window_avg_forward(y, arrays["x"], *_on(where, windows))
    return y


def _window_avg_backward(op: str, gy: Array, x_shape: tuple, out_shape: tuple, windows: tuple) -> Array:
    check_shape(gy, "gy", op, out_shape, " (the pooling output's shape)")
    where, kernels, arrays = _prepare(op, gy=gy)
    gx = kernels.empty(x_shape, np.dtype(gy.dtype))
    if x_shape[0]:
        kernels.window_avg_backward(gx, arrays["gy"], *_on(where, windows))
    return gx


def _input_shape(input_shape: Sequence[int], op: str) -> tuple[tuple, bool]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (3, 4) or min(shape[-3:]) < 1:
        raise ValueError(f"{op}: input_shape must be (N, C, H, W) or (C, H, W) with C, H, W >= 1, got {shape}")
    return (shape if len(shape) == 4 else (1, *shape)), len(shape) == 3


def avg_pool2d_backward(gy: Array, input_shape: Sequence[int], kernel_size: IntOrPair,
                        stride: IntOrPair | None = None, padding: IntOrPair = 0, ceil_mode: bool = False,
                        count_include_pad: bool = True, divisor_override: int | None = None) -> Array:
    """Gradient of ``sum(gy * avg_pool2d(x, ...))`` with respect to x: each gy element
    spread evenly (1 / divisor) over its window; overlaps add up.

    Parameters
    ----------
    gy : array (N, C, OH, OW) or (C, OH, OW)
    input_shape : x's shape, (N, C, H, W) or (C, H, W)

    Returns
    -------
    array of ``input_shape``
    """
    op = "avg_pool2d_backward"
    shape, unbatched = _input_shape(input_shape, op)
    if unbatched:
        gy, _ = _add_batch_axis(gy, 4)
    check_array(gy, "gy", op, 4, batched_image=True, empty="batch")
    out_shape, windows = _avg_windows(op, shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                      divisor_override)
    return _drop_batch_axis(_window_avg_backward(op, gy, shape, out_shape, windows), unbatched)


def adaptive_avg_pool2d(x: Array, output_size: Any) -> Array:
    """Adaptive average pooling to ``output_size`` (PyTorch's ``F.adaptive_avg_pool2d``):
    output (i, j) averages rows [floor(i*H/OH), ceil((i+1)*H/OH)) and the same for
    columns. ``output_size=1`` is global average pooling.

    Parameters
    ----------
    x : array (N, C, H, W) or (C, H, W)
    output_size : int or (int or None, int or None)
        None keeps that axis' input size.

    Returns
    -------
    array (N, C, OH, OW) or (C, OH, OW)
    """
    op = "adaptive_avg_pool2d"
    x, unbatched = _add_batch_axis(x, 4)
    check_array(x, "x", op, 4, batched_image=True, empty="batch")
    shape, windows = _adaptive_windows(op, tuple(x.shape), output_size)
    return _drop_batch_axis(_window_avg(op, x, shape, windows), unbatched)


def adaptive_avg_pool2d_backward(gy: Array, input_shape: Sequence[int]) -> Array:
    """Gradient of ``sum(gy * adaptive_avg_pool2d(x, gy's spatial size))`` w.r.t. x.

    Returns
    -------
    array of ``input_shape`` ((N, C, H, W) or (C, H, W))
    """
    op = "adaptive_avg_pool2d_backward"
    shape, unbatched = _input_shape(input_shape, op)
    if unbatched:
        gy, _ = _add_batch_axis(gy, 4)
    check_array(gy, "gy", op, 4, batched_image=True, empty="batch")
    out_shape, windows = _adaptive_windows(op, shape, tuple(int(s) for s in gy.shape[2:]))
    return _drop_batch_axis(_window_avg_backward(op, gy, shape, out_shape, windows), unbatched)


def adaptive_max_pool2d(x: Array, output_size: Any, return_indices: bool = False) -> Array | tuple[Array, Array]:
    """Adaptive max pooling (PyTorch's ``F.adaptive_max_pool2d``): the windows of
    :func:`adaptive_avg_pool2d`, each's first maximum (a NaN wins, as in PyTorch).

    Returns
    -------
    y : array (N, C, OH, OW) or (C, OH, OW)
    indices : int64 array of y's shape, only with ``return_indices``
        Flat ``row * W + col`` of each maximum in its (H, W) plane.
    """
    op = "adaptive_max_pool2d"
    _check_bool(return_indices, "return_indices", op)
    x, unbatched = _add_batch_axis(x, 4)
    check_array(x, "x", op, 4, batched_image=True, empty="batch")
    shape, windows = _adaptive_windows(op, tuple(x.shape), output_size)
    where, kernels, arrays = _prepare(op, x=x)
    y = kernels.empty(shape, np.dtype(x.dtype))
    indices = kernels.empty(shape, np.dtype(np.int64))
    if shape[0]:
        kernels.window_max_forward(y, indices, arrays["x"], *_on(where, windows[:4]))
    y, indices = _drop_batch_axis(y, unbatched), _drop_batch_axis(indices, unbatched)
    return (y, indices) if return_indices else y


def adaptive_max_pool2d_backward(gy: Array, x: Array | None = None, *, indices: Array | None = None,
                                 input_shape: Sequence[int] | None = None) -> Array:
    """Gradient of ``sum(gy * adaptive_max_pool2d(x, gy's spatial size))`` w.r.t. x: each
    gy element goes to its window's maximum.

    Parameters
    ----------
    gy : array (N, C, OH, OW) or (C, OH, OW)
    x : the forward's input, or None when ``indices`` and ``input_shape`` are given
    indices : int64 array of gy's shape, from ``return_indices=True`` (skips the
        recomputation of the maxima)
    input_shape : x's shape, needed with ``indices`` when x is None

    Returns
    -------
    array of x's shape
    """
    op = "adaptive_max_pool2d_backward"
    if x is None and (indices is None or input_shape is None):
        raise ValueError(f"{op}: pass x, or indices= together with input_shape=")
    shape = tuple(int(s) for s in (x.shape if x is not None else input_shape))
    full, unbatched = _input_shape(shape, op)
    if unbatched:
        gy, _ = _add_batch_axis(gy, 4)
    check_array(gy, "gy", op, 4, batched_image=True, empty="batch")
    if indices is None:
        check_same_dtype(op, gy=gy, x=x)
        _, indices = adaptive_max_pool2d(x, tuple(int(s) for s in gy.shape[2:]), return_indices=True)
    if unbatched:
        indices, _ = _add_batch_axis(indices, 4)
    if np.dtype(getattr(indices, "dtype", None)) != np.int64:
        raise TypeError(f"{op}: indices must be an int64 array (as adaptive_max_pool2d(..., return_indices=True) "
                        f"returns), got {getattr(indices, 'dtype', type(indices).__name__)}")
    check_shape(indices, "indices", op, tuple(gy.shape), " (gy's shape)")
    where, kernels, arrays = _prepare(op, gy=gy, indices=indices)
    plane = full[2] * full[3]
    if where == "cpu" and indices.size and not (0 <= int(indices.min()) and int(indices.max()) < plane):
        raise ValueError(f"{op}: indices must be flat positions 0 <= index < {plane} in each (H, W) plane")
    gx = kernels.empty(full, np.dtype(gy.dtype))
    if full[0]:
        kernels.window_max_backward(gx, arrays["gy"], arrays["indices"])
    return _drop_batch_axis(gx, unbatched)
