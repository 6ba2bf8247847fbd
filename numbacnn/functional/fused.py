"""Fused neighbours: Conv2d + ReLU (+ MaxPool2d) and their backwards.

Each function here computes exactly what the unfused calls it names compute, in one
call; :class:`numbacnn.nn.Sequential` picks them when it sees the pattern (see
``numbacnn/nn/fusion.py``). The compositions below are the readable definition:
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


# --------------------------------------------------------------------------- #
# Bordered workspaces: the fast CPU path used by nn/fusion.py.
#
# A "bordered buffer" is a C-contiguous (N, C, H + 2*border_h, W + 2*border_w)
# array whose border is zero and stays zero: it is zeroed once when allocated
# (:func:`bordered_empty`) and the functions below write interiors only. A conv
# with padding p reads its input from a buffer bordered by p (no padding copy, the
# same buffer for forward and grad-weight); its grad-input reads the output gradient
# from a buffer bordered by K - 1 - p. Offsets are (row, column) of the interior.
# These functions check shapes cheaply (they run several times per training step);
# the caller (a fused group) owns the buffers.
# --------------------------------------------------------------------------- #

def fast_conv_padding(x_shape: tuple, w_shape: tuple, stride: Any, padding: Any, dilation: Any, groups: int,
                      device: str = "cpu") -> tuple[int, int] | None:
    """(pad_h, pad_w) when the bordered fast path handles this convolution, else None.

    Needs: CPU, stride 1, dilation 1, groups 1, the register-blocked kernels' filter
    counts (``conv_fast.fast_path_applies``), the same padding on both sides of each
    axis and smaller than the kernel, and at least two output rows.
    """
    from numbacnn.kernels.cpu.conv_fast import fast_path_applies

    if device != "cpu" or isinstance(padding, str) or len(x_shape) != 4:
        return None
    kernel_h, kernel_w = int(w_shape[2]), int(w_shape[3])
    pad_h, pad_w = padding
    if not fast_path_applies(int(w_shape[0]), kernel_h, kernel_w, stride[0], stride[1], dilation[0],
                             dilation[1], groups):
        return None
    if pad_h >= kernel_h or pad_w >= kernel_w or x_shape[1] != w_shape[1]:
        return None
    if x_shape[2] + 2 * pad_h - kernel_h + 1 < 2 or x_shape[3] + 2 * pad_w - kernel_w + 1 < 1:
        return None
    return int(pad_h), int(pad_w)


def bordered_empty(shape: tuple, border: tuple[int, int], dtype: Any) -> Any:
    """A zeroed (N, C, H + 2*border_h, W + 2*border_w) host buffer for an (N, C, H, W) interior."""
    import numpy as np

    n, c, h, w = shape
    return np.zeros((n, c, h + 2 * border[0], w + 2 * border[1]), dtype)


def interior(buffer: Any, border: tuple[int, int], shape: tuple) -> Any:
    """The (N, C, H, W) interior view of a bordered buffer."""
    top, left = border
    return buffer[:, :, top:top + shape[2], left:left + shape[3]]


def copy_into_border(padded: Any, border: tuple[int, int], x: Any) -> None:
    """padded's interior = x (N, C, H, W): the network input into its first conv's buffer."""
    from numbacnn.kernels.cpu import fused as kernels

    import numpy as np

    kernels.copy_into_border_kernel(*border)(padded, np.ascontiguousarray(x))


def _dummy_indices():
    import numpy as np

    return np.empty((1, 1, 1, 1), np.int64)


def conv2d_relu_padded(
    x_padded: Any, w: Any, b: Any, out: Any, out_border: tuple[int, int], *, pooled: Any = None,
    pooled_border: tuple[int, int] = (0, 0), indices: Any = None,
) -> None:
    """relu(conv2d) of a padded input into bordered buffers, optionally 2x2-pooled.

    Parameters
    ----------
    x_padded : (N, C, OH + KH - 1, OW + KW - 1)
        The zero-padded input (a bordered buffer).
    w : (F, C, KH, KW);  b : (F,)
    out : bordered buffer, interior (N, F, OH, OW) at ``out_border``, or None
        The ReLU output; None with ``pooled`` when only the pooled output is
        wanted (a fused group's backward needs only the pool's output and indices).
    pooled, pooled_border, indices : optional
        With ``pooled``: the 2x2 / stride-2 max pool of the ReLU output into its
        interior (N, F, OH // 2, OW // 2), and ``indices`` (same shape, int64) the
        flat ``row * OW + col`` of each window's maximum.
    """
    from numbacnn.kernels.cpu import fused as kernels

    filters, _, kernel_h, kernel_w = w.shape
    in_height, in_width = x_padded.shape[2], x_padded.shape[3]
    if pooled is None:
        kernel = kernels.conv_rows_kernel(filters, kernel_h, kernel_w, kernels.MODE_RELU, in_height, in_width,
                                          *out_border, itemsize=x_padded.itemsize)
        kernel(out, out, _dummy_indices(), out, x_padded, w, b)
    else:
        kernel = kernels.conv_rows_kernel(filters, kernel_h, kernel_w, kernels.MODE_RELU_POOL, in_height, in_width,
                                          *out_border, *pooled_border, store_out=out is not None,
                                          itemsize=x_padded.itemsize)
        out = pooled if out is None else out  # an unused argument of the right type
        kernel(out, pooled, indices, out, x_padded, w, b)


def conv2d_backward_padded(
    gz_padded: Any, gz_border: tuple[int, int], x_padded: Any, w: Any, padding: tuple[int, int], *,
    gx: Any = None, gx_border: tuple[int, int] = (0, 0), mask: Any = None, mask_border: tuple[int, int] = (0, 0),
    gz_bordered_by_1: Any = None, gx_also: Any = None, gx_also_border: tuple[int, int] = (0, 0),
) -> tuple[Any, Any]:
    """conv2d's backward on bordered buffers: returns (gw, gb), new arrays; writes gx.

    Parameters
    ----------
    gz_padded : bordered buffer, interior (N, F, OH, OW) at ``gz_border`` = (KH - 1 - pad_h, KW - 1 - pad_w)
        The gradient of the conv output, zero-bordered for the grad-input correlation.
    x_padded : (N, C, OH + KH - 1, OW + KW - 1)
        The forward's padded input.
    w : (F, C, KH, KW)
    padding : (pad_h, pad_w)
    gx : bordered buffer, interior (N, C, H, W) at ``gx_border``, optional
        Receives the input gradient (skipped when None).
    mask : bordered buffer, interior (N, C, H, W) at ``mask_border``, optional
        When given, gx is zeroed where mask <= 0 (mask is a ReLU output: gx becomes
        the gradient of that ReLU's input).
    gz_bordered_by_1 : the gradient again, bordered by (1, 1), optional
        For a 3x3 kernel without padding: grad-weight then runs over whole planes.
    gx_also, gx_also_border : bordered buffer, interior (N, C, H, W), optional
        Written with the same input gradient as gx (a previous 3x3 layer without
        padding reads its gradient with two borders), when gx is computed.

    Returns
    -------
    gw : (F, C, KH, KW), gb : (F,), in w's dtype (float64 sums)
    """
    import numpy as np

    from numbacnn.kernels.cpu import fused as kernels
    from numbacnn.kernels.cpu.conv import conv2d_backward_input_general
    from numbacnn.kernels.cpu.conv_fast import GRAD_WEIGHT_CHUNKS, MIN_FILTERS

    filters, channels, kernel_h, kernel_w = w.shape
    batch = x_padded.shape[0]
    out_height = x_padded.shape[2] - kernel_h + 1
    gz_for_weights, gz_weights_border = gz_padded, gz_border
    if gz_bordered_by_1 is not None:
        gz_for_weights, gz_weights_border = gz_bordered_by_1, (1, 1)
    planes = (kernel_h, kernel_w) == (3, 3) and tuple(gz_weights_border) == (1, 1) \
        and gz_for_weights.shape[2:] == x_padded.shape[2:]
    # a fixed number of partial sums, of the images (plane kernel) or of the N * OH output
    # rows, whatever the thread count: the same gradient with 1 thread or many
    chunks = max(1, min(GRAD_WEIGHT_CHUNKS, batch if planes else batch * out_height))
    partial_w = np.empty((chunks, filters, channels, kernel_h, kernel_w), np.float64)
    partial_b = np.empty((chunks, filters), np.float64)
    if planes:  # the same row width in both buffers: whole planes as single dot products
        kernel = kernels.weight_bias_gradient_3x3_kernel(filters, x_padded.shape[3])
    else:
        kernel = kernels.weight_bias_gradient_kernel(filters, kernel_h, kernel_w, *gz_weights_border)
    kernel(partial_w, partial_b, gz_for_weights, x_padded)
    gw = partial_w.sum(axis=0).astype(w.dtype)
    gb = partial_b.sum(axis=0).astype(w.dtype)
    if gx is not None:
        in_height = x_padded.shape[2] - 2 * padding[0]
        if channels >= MIN_FILTERS and in_height >= 2:
            flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, F, KH, KW)
            no_bias = np.zeros(channels, w.dtype)
            in_height_gz, in_width_gz = gz_padded.shape[2], gz_padded.shape[3]
            twice = gx_also is not None
            also = gx_also if twice else gx
            if mask is None:
                kernel = kernels.conv_rows_kernel(channels, kernel_h, kernel_w, kernels.MODE_BIAS, in_height_gz,
                                                  in_width_gz, *gx_border, *gx_also_border, store_twice=twice,
                                                  itemsize=gz_padded.itemsize)
                kernel(gx, also, _dummy_indices(), gx, gz_padded, flipped, no_bias)
            else:
                kernel = kernels.conv_rows_kernel(channels, kernel_h, kernel_w, kernels.MODE_MASK, in_height_gz,
                                                  in_width_gz, *gx_border, *gx_also_border, *mask_border,
                                                  store_twice=twice, itemsize=gz_padded.itemsize)
                kernel(gx, also, _dummy_indices(), mask, gz_padded, flipped, no_bias)
        else:  # few channels (a network's first layer): the general kernel on plain arrays
            out_shape = (batch, filters, out_height, x_padded.shape[3] - kernel_w + 1)
            shape = (batch, channels, in_height, x_padded.shape[3] - 2 * padding[1])
            plain = np.empty(shape, w.dtype)
            conv2d_backward_input_general(plain, np.ascontiguousarray(interior(gz_padded, gz_border, out_shape)), w,
                                          1, 1, padding[0], padding[1], 1, 1, 1)
            if mask is not None:
                plain = np.where(interior(mask, mask_border, shape) > 0, plain, 0).astype(w.dtype)
            interior(gx, gx_border, shape)[...] = plain
            if gx_also is not None:
                interior(gx_also, gx_also_border, shape)[...] = plain
    return gw, gb


def max_pool2d_relu_backward_padded(gz_padded: Any, gz_border: tuple[int, int], gp: Any, indices: Any,
                                    pooled: Any, pooled_border: tuple[int, int] = (0, 0), *, also: Any = None,
                                    also_border: tuple[int, int] = (0, 0)) -> None:
    """gz's interior (N, C, OH, OW) = 2x2 pool backward of gp (N, C, PH, PW) from saved
    ``indices``, through the ReLU before the pool.

    ``pooled`` is the pool's output (a bordered buffer, interior (N, C, PH, PW) at
    ``pooled_border``): the ReLU output at a window's maximum is the pooled value, so
    ``pooled > 0`` is the ReLU mask wherever a gradient lands. ``also`` (a second
    bordered buffer, interior at ``also_border``) receives the same gradient.
    """
    from numbacnn.kernels.cpu import fused as kernels

    import numpy as np

    second_border = also_border if also is not None else (-1, -1)
    kernel = kernels.max_pool2x2_relu_backward_kernel(*gz_border, *pooled_border, *second_border)
    kernel(gz_padded, np.ascontiguousarray(gp), indices, pooled, gz_padded if also is None else also)


def copy_interior(dst: Any, dst_border: tuple[int, int], src: Any, src_border: tuple[int, int]) -> None:
    """dst's interior = src's interior (bordered buffers around the same (N, C, H, W))."""
    from numbacnn.kernels.cpu import fused as kernels

    kernels.copy_interior_kernel(*src_border, *dst_border)(dst, src)


def relu_backward_padded(gz_padded: Any, gz_border: tuple[int, int], gy: Any, y: Any) -> None:
    """gz's interior = gy where y > 0, else 0 (gy, y (N, C, OH, OW))."""
    from numbacnn.kernels.cpu import fused as kernels

    import numpy as np

    kernels.relu_mask_bordered_kernel(*gz_border)(gz_padded, np.ascontiguousarray(gy), np.ascontiguousarray(y))
