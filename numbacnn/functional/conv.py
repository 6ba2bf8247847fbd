"""2-D convolution and its backward: the dispatcher for ``kernels/<device>/conv.py``."""

from __future__ import annotations

from numbacnn.functional._dispatch import Array, IntOrPair, _add_batch_axis, _drop_batch_axis, _output, _prepare, _split_out
from numbacnn.shapes import check_array, check_same_dtype, check_shape, conv2d_geometry


def conv2d(
    x: Array, w: Array, b: Array | None = None, stride: IntOrPair = 1,
    padding: IntOrPair | str = 0, dilation: IntOrPair = 1, groups: int = 1, *, out: Array | None = None,
) -> Array:
    """2-D convolution (cross-correlation, as in every deep-learning library).

    Parameters
    ----------
    x : array (N, C, H, W) or (C, H, W)
        Input images, float32 or float64. An unbatched (C, H, W) image gives an
        unbatched (F, OH, OW) output; N = 0 gives a zero-size output.
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
    out : array of the output's shape and x's dtype and device, optional
        Written and returned instead of a new array (a workspace kept between
        calls); C-contiguous, not overlapping x, w or b.

    Returns
    -------
    array (N, F, OH, OW), or (F, OH, OW) for an unbatched x
        ``OH = floor((H + pad_top + pad_bottom - dilation*(KH-1) - 1) / stride) + 1``
        (likewise OW), on x's device, in x's dtype.

    Notes
    -----
    On the CPU, a stride-1 5x5 or 7x7 convolution with 4 or more input channels, output
    rows of two or more vectors and a whole number of row tiles (``numbacnn.kernels.cpu.
    conv_tuning.winograd_outputs``) runs 1-D Winograd kernels compiled for its sizes:
    each new such shape compiles once (about 16 s cold, then from the disk cache);
    ``conv2d_backward`` likewise. Other shapes share one compiled kernel per dtype.
    """
    op = "conv2d"
    x, unbatched = _add_batch_axis(x, 4)
    check_array(x, "x", op, 4, batched_image=True, empty="batch")
    check_array(w, "w", op, 4)
    if b is not None:
        check_array(b, "b", op, 1)
    dtype = check_same_dtype(op, x=x, w=w, b=b)
    geometry = conv2d_geometry(x.shape, w.shape, stride, padding, dilation, groups, op)
    if b is not None:
        check_shape(b, "b", op, (geometry.out_channels,), f" (one bias per filter; w.shape={tuple(w.shape)})")
    where, kernels, arrays = _prepare(op, x=x, w=w, b=b)
    bias = arrays["b"] if b is not None else kernels.zeros((geometry.out_channels,), dtype)
    if out is not None and unbatched:
        out, _ = _add_batch_axis(out, 4)
    out = _output(op, "out", out, kernels, where, geometry.output_shape, dtype, arrays)
    if geometry.batch:  # N = 0: nothing to compute
        kernels.conv2d_forward(out, arrays["x"], arrays["w"], bias, *geometry.kernel_args())
    return _drop_batch_axis(out, unbatched)


def conv2d_backward(
    gy: Array, x: Array, w: Array, stride: IntOrPair = 1, padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1, groups: int = 1, input_grad: bool = True, *,
    out: tuple[Array | None, Array | None, Array | None] | None = None,
) -> tuple[Array | None, Array, Array]:
    """Gradients of ``sum(gy * conv2d(x, w, b, ...))``.

    Parameters
    ----------
    gy : array (N, F, OH, OW), or (F, OH, OW) for an unbatched x
        Gradient of the loss with respect to conv2d's output.
    x, w, stride, padding, dilation, groups
        As passed to :func:`conv2d`.
    input_grad : bool
        Compute gx; a network's first layer can skip it (returns None).
    out : (gx, gw, gb) tuple of arrays or None, optional
        Where to write each gradient (None entries are allocated): workspaces kept
        between steps. Each is checked as :func:`conv2d`'s ``out``; none may overlap
        gy, x, w or another entry.

    Returns
    -------
    gx : array of x's shape, or None
    gw : array (F, C // groups, KH, KW)
    gb : array (F,)
    """
    op = "conv2d_backward"
    x, unbatched = _add_batch_axis(x, 4)
    if unbatched:
        gy, _ = _add_batch_axis(gy, 4)
    check_array(gy, "gy", op, 4, batched_image=True, empty="batch")
    check_array(x, "x", op, 4, batched_image=True, empty="batch")
    check_array(w, "w", op, 4)
    dtype = check_same_dtype(op, gy=gy, x=x, w=w)
    geometry = conv2d_geometry(x.shape, w.shape, stride, padding, dilation, groups, op)
    check_shape(gy, "gy", op, geometry.output_shape, " (conv2d's output shape for these x, w and hyperparameters)")
    where, kernels, arrays = _prepare(op, gy=gy, x=x, w=w)
    args = geometry.kernel_args()
    gx_out, gw_out, gb_out = _split_out(op, out, 3)
    if gx_out is not None and unbatched:
        gx_out, _ = _add_batch_axis(gx_out, 4)
    if not geometry.batch:  # N = 0: an empty gx, and sums over no images are zero
        gx = kernels.empty(geometry.input_shape, dtype) if input_grad else None
        gw, gb = kernels.zeros(geometry.weight_shape, dtype), kernels.zeros((geometry.out_channels,), dtype)
        return _drop_batch_axis(gx, unbatched), gw, gb
    gx = None
    if input_grad:
        gx = _output(op, "out[0]", gx_out, kernels, where, geometry.input_shape, dtype, arrays)
        kernels.conv2d_backward_input(gx, arrays["gy"], arrays["w"], *args)
    gw = _output(op, "out[1]", gw_out, kernels, where, geometry.weight_shape, dtype, dict(arrays, **{"out[0]": gx}))
    kernels.conv2d_backward_weight(gw, arrays["gy"], arrays["x"], *args)
    gb = _output(op, "out[2]", gb_out, kernels, where, (geometry.out_channels,), dtype,
                 dict(arrays, **{"out[0]": gx, "out[1]": gw}))
    kernels.conv2d_backward_bias(gb, arrays["gy"])
    return _drop_batch_axis(gx, unbatched), gw, gb

