"""Max pooling and its backward: the dispatcher for ``kernels/<device>/pool.py``."""

from __future__ import annotations

import numpy as np

from numbacnn.functional._dispatch import Array, IntOrPair, _prepare
from numbacnn.shapes import check_array, check_same_dtype, check_shape, pool2d_geometry


def max_pool2d(
    x: Array, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
    dilation: IntOrPair = 1, ceil_mode: bool = False,
) -> Array:
    """2-D max pooling.

    Parameters
    ----------
    x : array (N, C, H, W)
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

    Returns
    -------
    array (N, C, OH, OW)
    """
    op = "max_pool2d"
    check_array(x, "x", op, 4, batched_image=True)
    geometry = pool2d_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, op)
    _, kernels, arrays = _prepare(op, x=x)
    out = kernels.empty(geometry.output_shape, np.dtype(x.dtype))
    kernels.max_pool2d_forward(out, arrays["x"], *geometry.kernel_args())
    return out


def max_pool2d_backward(
    gy: Array, x: Array, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
) -> Array:
    """Gradient of ``sum(gy * max_pool2d(x, ...))`` with respect to x.

    Each window's gradient goes to its first maximum in row-major order; where
    windows overlap, the gradients add up.

    Returns
    -------
    array (N, C, H, W)
    """
    op = "max_pool2d_backward"
    check_array(gy, "gy", op, 4, batched_image=True)
    check_array(x, "x", op, 4, batched_image=True)
    dtype = check_same_dtype(op, gy=gy, x=x)
    geometry = pool2d_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, op)
    check_shape(gy, "gy", op, geometry.output_shape, " (max_pool2d's output shape for this x)")
    _, kernels, arrays = _prepare(op, gy=gy, x=x)
    gx = kernels.empty(tuple(x.shape), dtype)
    kernels.max_pool2d_backward(gx, arrays["gy"], arrays["x"], *geometry.kernel_args())
    return gx
