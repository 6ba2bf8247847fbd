"""Fused neighbours: Conv2d + ReLU (+ MaxPool2d) and their backwards.

Each function here computes exactly what the unfused calls it names compute, in one
call; :class:`numbacnn.nn.Sequential` picks them when it sees the pattern (see
``numbacnn/nn/fusion.py`` and the fused wing, ``numbacnn/fused``, whose CPU fast path
is tested equal to these). The compositions below are the readable definition:
``conv2d_relu(x, w, b)`` *is* ``relu(conv2d(x, w, b))``.

Two facts make the fused backwards possible without keeping the pre-activation:

* ReLU's mask can be read from its output: ``relu(z) > 0`` exactly where ``z > 0``
  (a NaN in z gives a NaN output, and ``NaN > 0`` is False either way), so
  ``relu_backward(g, z) == relu_backward(g, relu(z))``.
* Max pooling's backward needs only where each window's maximum was (the int64
  ``indices`` of ``max_pool2d(..., return_indices=True)``), not its input.
"""

from __future__ import annotations

from typing import Any

from numbacnn.functional._dispatch import Array, IntOrPair
from numbacnn.functional.activation import relu, relu_backward
from numbacnn.functional.conv import conv2d, conv2d_backward
from numbacnn.functional.pool import max_pool2d, max_pool2d_backward


def _store(result: Array, out: Array | None) -> Array:
    """``result`` copied into ``out`` when the caller gave one (its workspace), else result."""
    if out is None:
        return result
    if tuple(out.shape) != tuple(result.shape) or out.dtype != result.dtype:
        raise ValueError(f"out has shape {tuple(out.shape)} and dtype {out.dtype}, expected "
                         f"{tuple(result.shape)} and {result.dtype}")
    out[...] = result
    return out


def conv2d_relu(
    x: Array, w: Array, b: Array | None = None, stride: IntOrPair = 1, padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1, groups: int = 1, *, out: Array | None = None,
) -> Array:
    """``relu(conv2d(x, w, b, ...))`` in one call.

    Parameters
    ----------
    x : array (N, C, H, W)
    w : array (F, C // groups, KH, KW)
    b : array (F,), optional
    stride, padding, dilation, groups
        As :func:`numbacnn.functional.conv2d`.
    out : array (N, F, OH, OW), optional
        Written and returned instead of a new array.

    Returns
    -------
    y : array (N, F, OH, OW), ``max(conv2d(x, w, b), 0)``; it is also what the
        backward needs (its mask, ``y > 0``).
    """
    return _store(relu(conv2d(x, w, b, stride, padding, dilation, groups)), out)


def conv2d_relu_max_pool2d(
    x: Array, w: Array, b: Array | None = None, stride: IntOrPair = 1, padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1, groups: int = 1, *, pool_kernel_size: IntOrPair = 2,
    pool_stride: IntOrPair | None = None, pool_padding: IntOrPair = 0, pool_dilation: IntOrPair = 1,
    ceil_mode: bool = False, out: Array | None = None, relu_out: Array | None = None,
    indices_out: Array | None = None,
) -> tuple[Array, Array, Array]:
    """``max_pool2d(relu(conv2d(x, w, b, ...)), ..., return_indices=True)`` in one call.

    Parameters
    ----------
    x, w, b, stride, padding, dilation, groups
        As :func:`numbacnn.functional.conv2d`.
    pool_kernel_size, pool_stride, pool_padding, pool_dilation, ceil_mode
        As ``kernel_size, stride, padding, dilation, ceil_mode`` of
        :func:`numbacnn.functional.max_pool2d`.
    out, relu_out, indices_out : arrays, optional
        Workspaces for the three results.

    Returns
    -------
    pooled : array (N, F, PH, PW)
    y : array (N, F, OH, OW)
        The ReLU output (the pool's input), whose ``y > 0`` is the backward's mask.
    indices : int64 array (N, F, PH, PW)
        Each window's first maximum as a flat index ``row * OW + col`` into its
        (OH, OW) plane of y, as PyTorch's ``return_indices``.
    """
    y = _store(relu(conv2d(x, w, b, stride, padding, dilation, groups)), relu_out)
    pooled, indices = max_pool2d(y, pool_kernel_size, pool_stride, pool_padding, pool_dilation, ceil_mode,
                                 return_indices=True)
    return _store(pooled, out), y, _store(indices, indices_out)


def max_pool2d_relu_backward(
    gp: Array, indices: Array, y: Array, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False, *, out: Array | None = None,
) -> Array:
    """Gradient with respect to the pre-activation z of ``max_pool2d(relu(z))``.

    ``relu_backward(max_pool2d_backward(gp, indices=indices), y)``: each window's
    gradient goes to its saved maximum, and only where ``y = relu(z) > 0``.

    Parameters
    ----------
    gp : array (N, C, PH, PW)
        Gradient with respect to the pooled output.
    indices : int64 array (N, C, PH, PW)
        From :func:`conv2d_relu_max_pool2d` or ``max_pool2d(..., return_indices=True)``.
    y : array (N, C, OH, OW)
        The ReLU output (the pool's input).
    kernel_size, stride, padding, dilation, ceil_mode
        The pool's hyperparameters.
    out : array (N, C, OH, OW), optional

    Returns
    -------
    gz : array (N, C, OH, OW)
    """
    gy = max_pool2d_backward(gp, None, kernel_size, stride, padding, dilation, ceil_mode, indices=indices,
                             input_shape=tuple(y.shape))
    return _store(relu_backward(gy, y), out)


def conv2d_backward_relu_mask(
    gz: Array, x: Array, w: Array, stride: IntOrPair = 1, padding: IntOrPair | str = 0, dilation: IntOrPair = 1,
    groups: int = 1, *, input_grad: bool = True, mask_input: bool = False, out: Array | None = None,
) -> tuple[Array | None, Array, Array]:
    """:func:`numbacnn.functional.conv2d_backward`, with the input gradient optionally
    passed through the ReLU that produced x.

    When x is itself a ReLU output (a conv after conv + ReLU), ``mask_input=True``
    returns ``relu_backward(gx, x)``: the gradient with respect to the previous
    layer's pre-activation, so that ReLU's backward needs no pass of its own.

    Parameters
    ----------
    gz : array (N, F, OH, OW)
        Gradient with respect to this convolution's output.
    x, w, stride, padding, dilation, groups
        As passed to :func:`numbacnn.functional.conv2d`.
    input_grad : bool
        Compute the input gradient (None otherwise).
    mask_input : bool
        Zero the input gradient where ``x <= 0``.
    out : array of x's shape, optional
        Workspace for the input gradient.

    Returns
    -------
    gx : array (N, C, H, W) or None
    gw : array (F, C // groups, KH, KW)
    gb : array (F,)
    """
    gx, gw, gb = conv2d_backward(gz, x, w, stride, padding, dilation, groups, input_grad=input_grad)
    if gx is not None:
        gx = _store(relu_backward(gx, x) if mask_input else gx, out)
    return gx, gw, gb


def conv2d_relu_backward(
    gy: Array, y: Array, x: Array, w: Array, stride: IntOrPair = 1, padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1, groups: int = 1, *, input_grad: bool = True, mask_input: bool = False,
) -> tuple[Array | None, Array, Array]:
    """Gradients of ``sum(gy * conv2d_relu(x, w, b, ...))``: (gx, gw, gb).

    ``y`` is conv2d_relu's output (its mask); ``mask_input`` as in
    :func:`conv2d_backward_relu_mask`.
    """
    gz = relu_backward(gy, y)
    return conv2d_backward_relu_mask(gz, x, w, stride, padding, dilation, groups, input_grad=input_grad,
                                     mask_input=mask_input)


__all__: list[Any] = [
    "conv2d_relu",
    "conv2d_relu_max_pool2d",
    "max_pool2d_relu_backward",
    "conv2d_backward_relu_mask",
    "conv2d_relu_backward",
]

