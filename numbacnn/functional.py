"""The functional API and dispatcher: ``import numbacnn.functional as F``.

Each function validates its arguments once (``numbacnn.shapes``), picks the kernel
backend from where the input arrays live (``numbacnn.device.backend``), allocates
the outputs there and calls the kernel. Nothing here loops over pixels, and no
function modifies its inputs. Results keep the inputs' dtype (float32 or float64)
and device.

Layout is NCHW; weights are (F, C / groups, KH, KW) and linear weights (OUT, IN),
as in PyTorch, whose ``torch.nn.functional`` semantics these functions follow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numbacnn.device import backend, device_of
from numbacnn.shapes import (
    ShapeError,
    check_array,
    check_same_dtype,
    check_shape,
    conv2d_geometry,
    pool2d_geometry,
)

Array = Any  # a NumPy array or a CUDA device array
IntOrPair = int | tuple[int, int]


# --------------------------------------------------------------------------- #
# placement helpers
# --------------------------------------------------------------------------- #


def _common_device(op: str, **arrays: Array) -> str:
    """The one device all given arrays (None skipped) live on; error if they differ."""
    placed = [(name, device_of(a)) for name, a in arrays.items() if a is not None]
    first_name, first_device = placed[0]
    for name, where in placed[1:]:
        if where != first_device:
            raise ValueError(
                f"{op}: {first_name} is on {first_device} but {name} is on {where}; "
                f"all inputs must be on one device (move them with numbacnn.to_device(array, "
                f"'{first_device}'))"
            )
    return first_device


def _contiguous(a: Array, name: str, op: str, where: str) -> Array:
    """C-contiguous version of ``a``: a copy for strided NumPy views (values and dtype
    unchanged); CUDA arrays must already be contiguous."""
    if a is None:
        return None
    if where == "cpu":
        return np.ascontiguousarray(a)
    is_contiguous = getattr(a, "is_c_contiguous", None)
    if is_contiguous is not None and not is_contiguous():
        raise ValueError(f"{op}: {name} is a non-contiguous CUDA array; expected a C-contiguous one")
    return a


def _prepare(op: str, **arrays: Array) -> tuple[str, Any, dict[str, Array]]:
    """Device, kernel backend and contiguous versions of the named arrays."""
    where = _common_device(op, **arrays)
    kernels = backend(where)
    return where, kernels, {name: _contiguous(a, name, op, where) for name, a in arrays.items()}


# --------------------------------------------------------------------------- #
# convolution
# --------------------------------------------------------------------------- #


def conv2d(
    x: Array, w: Array, b: Array | None = None, stride: IntOrPair = 1,
    padding: IntOrPair | str = 0, dilation: IntOrPair = 1, groups: int = 1,
) -> Array:
    """2-D convolution (cross-correlation, as in every deep-learning library).

    Parameters
    ----------
    x : array (N, C, H, W)
        Input images, float32 or float64.
    w : array (F, C // groups, KH, KW)
        Filters, same dtype as x.
    b : array (F,), optional
        Bias added to every output pixel of a filter.
    stride, dilation : int or (int, int)
        Step between kernel positions, spacing between kernel taps; >= 1.
    padding : int, (int, int), "valid" or "same"
        Zero padding on each side. "same" keeps H and W (stride 1 only); when the
        total ``dilation * (k - 1)`` is odd the extra row/column goes bottom/right.
    groups : int
        Split channels into groups convolved separately; must divide C and F.
        ``groups == C`` is a depthwise convolution.

    Returns
    -------
    array (N, F, OH, OW)
        ``OH = floor((H + pad_top + pad_bottom - dilation*(KH-1) - 1) / stride) + 1``
        (likewise OW), on x's device, in x's dtype.
    """
    op = "conv2d"
    check_array(x, "x", op, 4, batched_image=True)
    check_array(w, "w", op, 4)
    if b is not None:
        check_array(b, "b", op, 1)
    dtype = check_same_dtype(op, x=x, w=w, b=b)
    geometry = conv2d_geometry(x.shape, w.shape, stride, padding, dilation, groups, op)
    if b is not None:
        check_shape(b, "b", op, (geometry.out_channels,), f" (one bias per filter; w.shape={tuple(w.shape)})")
    _, kernels, arrays = _prepare(op, x=x, w=w, b=b)
    bias = arrays["b"] if b is not None else kernels.zeros((geometry.out_channels,), dtype)
    out = kernels.empty(geometry.output_shape, dtype)
    kernels.conv2d_forward(out, arrays["x"], arrays["w"], bias, *geometry.kernel_args())
    return out


def conv2d_backward(
    gy: Array, x: Array, w: Array, stride: IntOrPair = 1, padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1, groups: int = 1, input_grad: bool = True,
) -> tuple[Array | None, Array, Array]:
    """Gradients of ``sum(gy * conv2d(x, w, b, ...))``.

    Parameters
    ----------
    gy : array (N, F, OH, OW)
        Gradient of the loss with respect to conv2d's output.
    x, w, stride, padding, dilation, groups
        As passed to :func:`conv2d`.
    input_grad : bool
        Compute gx; a network's first layer can skip it (returns None).

    Returns
    -------
    gx : array (N, C, H, W) or None
    gw : array (F, C // groups, KH, KW)
    gb : array (F,)
    """
    op = "conv2d_backward"
    check_array(gy, "gy", op, 4, batched_image=True)
    check_array(x, "x", op, 4, batched_image=True)
    check_array(w, "w", op, 4)
    dtype = check_same_dtype(op, gy=gy, x=x, w=w)
    geometry = conv2d_geometry(x.shape, w.shape, stride, padding, dilation, groups, op)
    check_shape(gy, "gy", op, geometry.output_shape, " (conv2d's output shape for these x, w and hyperparameters)")
    _, kernels, arrays = _prepare(op, gy=gy, x=x, w=w)
    args = geometry.kernel_args()
    gx = None
    if input_grad:
        gx = kernels.empty(geometry.input_shape, dtype)
        kernels.conv2d_backward_input(gx, arrays["gy"], arrays["w"], *args)
    gw = kernels.empty(geometry.weight_shape, dtype)
    kernels.conv2d_backward_weight(gw, arrays["gy"], arrays["x"], *args)
    gb = kernels.empty((geometry.out_channels,), dtype)
    kernels.conv2d_backward_bias(gb, arrays["gy"])
    return gx, gw, gb


# --------------------------------------------------------------------------- #
# max pooling
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# ReLU
# --------------------------------------------------------------------------- #


def relu(x: Array) -> Array:
    """``max(x, 0)`` elementwise, any shape. NaN stays NaN.

    Returns
    -------
    array of x's shape
    """
    op = "relu"
    check_array(x, "x", op)
    _, kernels, arrays = _prepare(op, x=x)
    out = kernels.empty(tuple(x.shape), np.dtype(x.dtype))
    kernels.relu_forward(out.reshape(-1), arrays["x"].reshape(-1))
    return out


def relu_backward(gy: Array, x: Array) -> Array:
    """Gradient of ``sum(gy * relu(x))``: gy where x > 0, else 0 (0 at x == 0).

    Returns
    -------
    array of x's shape
    """
    op = "relu_backward"
    check_array(gy, "gy", op)
    check_array(x, "x", op)
    dtype = check_same_dtype(op, gy=gy, x=x)
    check_shape(gy, "gy", op, tuple(x.shape), " (x's shape)")
    _, kernels, arrays = _prepare(op, gy=gy, x=x)
    gx = kernels.empty(tuple(x.shape), dtype)
    kernels.relu_backward(gx.reshape(-1), arrays["gy"].reshape(-1), arrays["x"].reshape(-1))
    return gx


# --------------------------------------------------------------------------- #
# linear
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# loss
# --------------------------------------------------------------------------- #


def _check_labels(op: str, labels: Array, batch: int, classes: int) -> None:
    if not hasattr(labels, "dtype") or not hasattr(labels, "shape"):
        raise TypeError(f"{op}: labels must be an integer array, got {type(labels).__name__}")
    dtype = np.dtype(labels.dtype)
    if dtype.kind not in "iu":
        raise TypeError(f"{op}: labels has dtype {dtype.name}, expected an integer dtype (class indices)")
    check_shape(labels, "labels", op, (batch,), " (one class index per row of logits)")
    host_labels = labels if isinstance(labels, np.ndarray) else _host_copy(labels)
    low, high = int(host_labels.min()), int(host_labels.max())
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise ValueError(f"{op}: labels contains {bad}, expected 0 <= label < {classes} (logits has {classes} classes)")


def _host_copy(a: Array) -> np.ndarray:
    from numbacnn.device import to_host

    return to_host(a)


def softmax_cross_entropy(logits: Array, labels: Array) -> tuple[float, Array]:
    """Mean cross-entropy of ``softmax(logits)`` against integer labels.

    Parameters
    ----------
    logits : array (N, K)
        Unnormalised class scores, float32 or float64.
    labels : integer array (N,)
        Class indices, ``0 <= label < K``, on the same device as logits.

    Returns
    -------
    loss : float
        ``mean_n(logsumexp(logits[n]) - logits[n, labels[n]])`` as a Python float.
    grad : array (N, K)
        Gradient of the mean loss with respect to logits (already divided by N),
        on logits' device.
    """
    op = "softmax_cross_entropy"
    check_array(logits, "logits", op, 2)
    batch, classes = (int(s) for s in logits.shape)
    _check_labels(op, labels, batch, classes)
    where, kernels, arrays = _prepare(op, logits=logits, labels=labels)
    label_array = arrays["labels"]
    if where == "cpu":
        # lossless after the range check; one label dtype means one compiled kernel
        label_array = label_array.astype(np.int64, copy=False)
    dtype = np.dtype(logits.dtype)
    grad = kernels.empty((batch, classes), dtype)
    losses = kernels.empty((batch,), dtype)
    kernels.softmax_cross_entropy(grad, losses, arrays["logits"], label_array)
    host_losses = losses if where == "cpu" else _host_copy(losses)
    return float(np.sum(host_losses, dtype=np.float64) / batch), grad


__all__ = [
    "conv2d", "conv2d_backward", "linear", "linear_backward", "max_pool2d",
    "max_pool2d_backward", "relu", "relu_backward", "softmax_cross_entropy",
]
