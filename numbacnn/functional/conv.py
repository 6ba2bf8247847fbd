"""2-D convolution and its backward: the dispatcher for ``kernels/<device>/conv.py``."""

from __future__ import annotations

from numbacnn.functional._dispatch import Array, IntOrPair, _prepare
from numbacnn.shapes import check_array, check_same_dtype, check_shape, conv2d_geometry


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
