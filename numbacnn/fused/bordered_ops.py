"""The fast path's ops on bordered buffers (``buffers.py``), the CPU kernels reached
through ``numbacnn.device.backend("cpu")`` like every functional op.

Each computes what the composed op of ``numbacnn/functional/fused.py`` it stands for
computes (tested equal in tests/test_fusion.py and against the float64 reference in
tests/test_fusion_kernels.py), reading and writing interiors of bordered buffers at
the given (row, column) offsets. Shapes are checked by the caller (a
:class:`~numbacnn.fused.chain.BlockChain`, which made the buffers from shapes.py);
these run several times per training step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numbacnn.device import backend
from numbacnn.fused.buffers import interior


def _dummy_indices() -> np.ndarray:
    """An unused int64 argument of the right type (the kernels' ``indices`` outside MODE_RELU_POOL)."""
    return np.empty((1, 1, 1, 1), np.int64)


def copy_into_border(padded: Any, border: tuple[int, int], x: Any) -> None:
    """padded's interior = x (N, C, H, W): the network input into its first conv's buffer."""
    backend("cpu").bordered.copy_into_border_kernel(*border)(padded, np.ascontiguousarray(x))


def conv2d_relu_padded(
    x_padded: Any, w: Any, b: Any, out: Any, out_border: tuple[int, int], *, pooled: Any = None,
    pooled_border: tuple[int, int] = (0, 0), indices: Any = None, padding: tuple[int, int] | None = None,
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
    padding : (pad_h, pad_w), optional
        x_padded's border, when known: with it, 5x5 and larger kernels may take the
        FFT (``conv_tuning.fft_size_for``), which reads the unpadded interior.
    """
    cpu = backend("cpu")
    rows = cpu.conv_rows
    filters, _, kernel_h, kernel_w = w.shape
    in_height, in_width = x_padded.shape[2], x_padded.shape[3]
    n = _fft_size(x_padded, w, padding)
    if n:  # the conv by FFT into a plain z, then its ReLU (with a pool: the batch norm kernel, scale 1, shift 0)
        z = _scratch("z", (x_padded.shape[0], filters, in_height - kernel_h + 1, in_width - kernel_w + 1),
                     x_padded.dtype)
        _fft_correlate(z, (0, 0), x_padded, padding, w, b, n)
        relu_pool_padded(z, out, out_border, pooled=pooled, pooled_border=pooled_border, indices=indices)
    elif cpu.conv_small_maps.packs_images(in_width - kernel_w + 1, in_height - kernel_h + 1, x_padded.shape[0],
                                        x_padded.itemsize):
        _conv2d_relu_side_by_side(x_padded, w, b, out, out_border, pooled, pooled_border, indices)
    elif pooled is None:
        kernel = rows.conv_rows_kernel(filters, kernel_h, kernel_w, rows.MODE_RELU, in_height, in_width,
                                          *out_border, itemsize=x_padded.itemsize,
                                          winograd=_by_winograd(x_padded, kernel_h, kernel_w))
        kernel(out, out, _dummy_indices(), out, x_padded, w, b)
    else:
        kernel = rows.conv_rows_kernel(filters, kernel_h, kernel_w, rows.MODE_RELU_POOL, in_height, in_width,
                                          *out_border, *pooled_border, store_out=out is not None,
                                          itemsize=x_padded.itemsize,
                                          winograd=_by_winograd(x_padded, kernel_h, kernel_w))
        out = pooled if out is None else out  # an unused argument of the right type
        kernel(out, pooled, indices, out, x_padded, w, b)


def _correlate_side_by_side(padded: Any, w: Any, b: Any, mode: int) -> tuple[Any, int]:
    """padded's planes (N, C, H, SW) packed side by side (``kernels/cpu/conv_small_maps.py``),
    correlated with w (F, C, KH, KW) + b in the row kernel's ``mode``: returns the packed
    result (ceil(N / G), F, H - KH + 1, G * SW - KW + 1), image g * G + j's outputs at
    columns j * SW + q, and G, the images per packed row."""
    cpu = backend("cpu")
    small, rows = cpu.conv_small_maps, cpu.conv_rows
    filters, _, kernel_h, kernel_w = w.shape
    packed = np.empty(small.packed_shape(padded.shape, padded.shape[3]), padded.dtype)
    small.pack_planes(packed, padded)
    packed_out = np.empty((packed.shape[0], filters, packed.shape[2] - kernel_h + 1, packed.shape[3] - kernel_w + 1),
                          padded.dtype)
    kernel = rows.conv_rows_kernel(filters, kernel_h, kernel_w, mode, packed.shape[2], packed.shape[3],
                                   itemsize=padded.itemsize)
    kernel(packed_out, packed_out, _dummy_indices(), packed_out, packed, w, b)
    return packed_out, packed.shape[3] // padded.shape[3]


def _conv2d_relu_side_by_side(x_padded: Any, w: Any, b: Any, out: Any, out_border: tuple[int, int], pooled: Any,
                              pooled_border: tuple[int, int], indices: Any) -> None:
    """:func:`conv2d_relu_padded` on a small map: one ReLU correlation of the packed rows
    (:func:`_correlate_side_by_side`), each image's outputs copied out (and pooled)."""
    packed_out, group = _correlate_side_by_side(x_padded, w, b, backend("cpu").conv_rows.MODE_RELU)
    slot_width = x_padded.shape[3]
    unpack = backend("cpu").conv_small_maps.unpack_relu_pool_kernel(
        slot_width, group, slot_width - w.shape[3] + 1, *out_border, *pooled_border, pooled is not None,
        out is not None)
    some = out if out is not None else pooled  # unused arguments of the right type
    unpack(some, pooled if pooled is not None else some, indices if indices is not None else _dummy_indices(),
           packed_out)


def _by_winograd(x_padded: Any, kernel_h: int, kernel_w: int) -> bool:
    """True when a stride-1 correlation of the padded x_padded (N, C, H, W) with a
    KH x KW kernel sums by 1-D Winograd (``conv_tuning.winograd_outputs``): forward
    and grad-input (``conv_rows.conv_rows_kernel(..., winograd=True)``) and grad-weight
    (``conv_weight_grad.weight_gradient_winograd_kernel``)."""
    return backend("cpu").conv_tuning.winograd_on_padded(x_padded.shape, x_padded.itemsize, kernel_h, kernel_w)


def _fft_size(x_padded: Any, w: Any, padding: tuple[int, int] | None) -> int:
    """N of the FFT that correlates x_padded (N, C, H + 2 pad_h, W + 2 pad_w) with w
    (``conv_tuning.fft_size_for``), or 0 (unknown padding: 0)."""
    if padding is None:
        return 0
    filters, channels, kernel_h, kernel_w = w.shape
    pad_h, pad_w = padding
    return backend("cpu").conv_tuning.fft_size_for(filters, channels, kernel_h, kernel_w,
                                                   x_padded.shape[2] - 2 * pad_h, x_padded.shape[3] - 2 * pad_w,
                                                   pad_h, pad_w, x_padded.shape[0])


# the FFT's spectra and z, by name, shape and dtype, kept between steps (the kernels'
# wrapped copy, F x C x N x N, 80 KB for Tiny VGG's 7x7 layer, is made at each call)
_SCRATCH: dict = {}


def _scratch(name: str, shape: tuple, dtype: Any) -> np.ndarray:
    """An uninitialised array kept between calls, one per (name, shape, dtype)."""
    key = (name, tuple(shape), np.dtype(dtype).str)
    if key not in _SCRATCH:
        if len(_SCRATCH) >= 32:  # many shapes met (a sweep's batch sizes): start again
            _SCRATCH.clear()
        _SCRATCH[key] = np.empty(shape, dtype)
    return _SCRATCH[key]


def _kernel_spectra(w: Any, n: int, padding: tuple[int, int]) -> tuple[Any, Any]:
    """The spectra (C, N, U, F) of w (F, C, KH, KW) flipped and wrapped,
    ``w'[(pad - k) mod N] = w[k]`` on each axis, so that the circular convolution of
    an unpadded plane with w' is its correlation with w at that padding
    (``kernels/cpu/conv_fft.py``)."""
    fft = backend("cpu").conv_fft
    filters, channels, kernel_h, kernel_w = w.shape
    wrapped = np.zeros((filters, channels, n, n), w.dtype)
    wrapped[:, :, :kernel_h, :kernel_w] = w[:, :, ::-1, ::-1]  # w[K - 1 - j] at j, then shifted by pad - (K - 1)
    wrapped = np.roll(wrapped, (padding[0] - kernel_h + 1, padding[1] - kernel_w + 1), axis=(2, 3))
    spectra_re = _scratch("w_re", (channels, n, n // 2 + 1, filters), w.dtype)
    spectra_im = _scratch("w_im", (channels, n, n // 2 + 1, filters), w.dtype)
    fft.spectra(spectra_re, spectra_im, wrapped, 0, 0, n, n, *fft.twiddles(n, w.dtype))
    return spectra_re, spectra_im


def _fft_correlate(out: Any, out_border: tuple[int, int], x_padded: Any, padding: tuple[int, int], w: Any, b: Any,
                   n: int, *, gradient_of: Any = None, mask: Any = None, mask_border: tuple[int, int] = (0, 0),
                   also: Any = None, also_border: tuple[int, int] = (0, 0)) -> None:
    """A stride-1 conv (or its input gradient) by N x N FFTs (``kernels/cpu/conv_fft.py``).

    Forward (``gradient_of`` None): out's interior (B, F, OH, OW) at out_border =
    conv2d(x) + b, x the interior of x_padded at ``padding``.
    Input gradient (``gradient_of`` = (gz_padded, gz_border), the conv output's gradient
    in a bordered buffer): out's interior (B, C, H, W) = the gradient of the conv's
    input, zero where ``mask`` (a bordered ReLU output) <= 0 when given, written into
    ``also`` too when given; b is ignored.
    """
    fft = backend("cpu").conv_fft
    filters, channels, _, _ = w.shape
    batch = x_padded.shape[0]
    tables = fft.twiddles(n, w.dtype)
    w_re, w_im = _kernel_spectra(w, n, padding)
    if gradient_of is None:
        source, (top, left), planes_in, planes_out = x_padded, padding, channels, filters
        height, width = x_padded.shape[2] - 2 * padding[0], x_padded.shape[3] - 2 * padding[1]
        bias = b
    else:
        (source, (top, left)), planes_in, planes_out = gradient_of, filters, channels
        height, width = source.shape[2] - 2 * top, source.shape[3] - 2 * left
        bias = _scratch("no_bias", (channels,), w.dtype)
        bias[:] = 0
    columns = n // 2 + 1
    in_re = _scratch("in_re", (planes_in, n, columns, batch), w.dtype)
    in_im = _scratch("in_im", (planes_in, n, columns, batch), w.dtype)
    out_re = _scratch("out_re", (planes_out, n, columns, batch), w.dtype)
    out_im = _scratch("out_im", (planes_out, n, columns, batch), w.dtype)
    fft.spectra(in_re, in_im, source, top, left, height, width, *tables)
    fft.products(out_re, out_im, in_re, in_im, w_re, w_im, gradient_of is not None)
    fft.planes(out, *out_border, also if also is not None else out, *also_border,
               mask if mask is not None else out, *mask_border, out_re, out_im, bias, *tables,
               also is not None, mask is not None)


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
    cpu = backend("cpu")
    filters, channels, kernel_h, kernel_w = w.shape
    batch = x_padded.shape[0]
    out_height = x_padded.shape[2] - kernel_h + 1
    out_width = x_padded.shape[3] - kernel_w + 1
    if cpu.conv.lanes_weight_gradient_at_stride_1(batch, out_width):  # a small map: the images in the lanes
        gz = interior(gz_padded, gz_border, (batch, filters, out_height, out_width))
        gw, gb = np.empty(w.shape, w.dtype), np.empty(filters, w.dtype)
        cpu.conv_lanes.backward_weight(gw, gz, x_padded, 1, 1, 0, 0)  # x_padded's border is the padding
        cpu.conv.conv2d_backward_bias(gb, gz)
    else:
        gw, gb = _weight_gradient_padded(gz_padded, gz_border, x_padded, w, gz_bordered_by_1)
    if gx is not None:
        _input_gradient_padded(gz_padded, gz_border, x_padded, w, padding, gx, gx_border, mask, mask_border,
                               gx_also, gx_also_border)
    return gw, gb


def _weight_gradient_padded(gz_padded: Any, gz_border: tuple[int, int], x_padded: Any, w: Any,
                            gz_bordered_by_1: Any) -> tuple[Any, Any]:
    """:func:`conv2d_backward_padded`'s (gw, gb) by the bordered kernels: whole planes
    (3x3 bordered by 1), 1-D Winograd, or row dot products; float64 partial sums."""
    cpu = backend("cpu")
    filters, channels, kernel_h, kernel_w = w.shape
    batch = x_padded.shape[0]
    out_height = x_padded.shape[2] - kernel_h + 1
    gz_for_weights, gz_weights_border = gz_padded, gz_border
    if gz_bordered_by_1 is not None:
        gz_for_weights, gz_weights_border = gz_bordered_by_1, (1, 1)
    planes = (kernel_h, kernel_w) == (3, 3) and tuple(gz_weights_border) == (1, 1) \
        and gz_for_weights.shape[2:] == x_padded.shape[2:]
    winograd = not planes and _by_winograd(x_padded, kernel_h, kernel_w)
    # a fixed number of partial sums, of the images (the whole-plane kernels) or of the
    # N * OH output rows, whatever the thread count: the same gradient with 1 thread or many
    by_images = planes or winograd
    chunks = max(1, min(cpu.conv_tuning.GRAD_WEIGHT_CHUNKS, batch if by_images else batch * out_height))
    partial_w = np.empty((chunks, filters, channels, kernel_h, kernel_w), np.float64)
    partial_b = np.empty((chunks, filters), np.float64)
    if planes:  # the same row width in both buffers: whole planes as single dot products
        kernel = cpu.conv_weight_grad.weight_bias_gradient_3x3_kernel(filters, x_padded.shape[3])
    elif winograd:  # as the forward: fewer multiply-adds
        kernel = cpu.conv_weight_grad.weight_gradient_winograd_kernel(filters, kernel_h, kernel_w,
                                                                      *gz_weights_border, *x_padded.shape[2:],
                                                                      x_padded.itemsize)
    else:
        kernel = cpu.conv_weight_grad.weight_gradient_kernel(filters, kernel_h, kernel_w, *gz_weights_border,
                                                             with_bias=True)
    kernel(partial_w, partial_b, gz_for_weights, x_padded)
    return partial_w.sum(axis=0).astype(w.dtype), partial_b.sum(axis=0).astype(w.dtype)


def _input_gradient_padded(gz_padded: Any, gz_border: tuple[int, int], x_padded: Any, w: Any,
                           padding: tuple[int, int], gx: Any, gx_border: tuple[int, int], mask: Any,
                           mask_border: tuple[int, int], gx_also: Any, gx_also_border: tuple[int, int]) -> None:
    """:func:`conv2d_backward_padded`'s input gradient into gx (and gx_also), through
    the mask when given."""
    cpu = backend("cpu")
    filters, channels, kernel_h, kernel_w = w.shape
    batch = x_padded.shape[0]
    out_height = x_padded.shape[2] - kernel_h + 1
    in_height = x_padded.shape[2] - 2 * padding[0]
    rows = cpu.conv_rows
    n = _fft_size(x_padded, w, padding)
    if n:
        _fft_correlate(gx, gx_border, x_padded, padding, w, None, n, gradient_of=(gz_padded, gz_border),
                       mask=mask, mask_border=mask_border, also=gx_also, also_border=gx_also_border)
    elif channels >= cpu.conv_tuning.MIN_FILTERS and cpu.conv_small_maps.packs_images(
            gz_padded.shape[3] - kernel_w + 1, gz_padded.shape[2] - kernel_h + 1, batch, gz_padded.itemsize):
        _grad_input_side_by_side(gz_padded, w, gx, gx_border, mask, mask_border, gx_also, gx_also_border)
    elif channels >= cpu.conv_tuning.MIN_FILTERS and in_height >= 2:
        flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, F, KH, KW)
        no_bias = np.zeros(channels, w.dtype)
        in_height_gz, in_width_gz = gz_padded.shape[2], gz_padded.shape[3]
        twice = gx_also is not None
        also = gx_also if twice else gx
        if mask is None:
            kernel = rows.conv_rows_kernel(channels, kernel_h, kernel_w, rows.MODE_BIAS, in_height_gz,
                                           in_width_gz, *gx_border, *gx_also_border, store_twice=twice,
                                           itemsize=gz_padded.itemsize,
                                           winograd=_by_winograd(gz_padded, kernel_h, kernel_w))
            kernel(gx, also, _dummy_indices(), gx, gz_padded, flipped, no_bias)
        else:
            kernel = rows.conv_rows_kernel(channels, kernel_h, kernel_w, rows.MODE_MASK, in_height_gz,
                                           in_width_gz, *gx_border, *gx_also_border, *mask_border,
                                           store_twice=twice, itemsize=gz_padded.itemsize,
                                           winograd=_by_winograd(gz_padded, kernel_h, kernel_w))
            kernel(gx, also, _dummy_indices(), mask, gz_padded, flipped, no_bias)
    else:  # few channels (a network's first layer): the general kernel on plain arrays
        out_shape = (batch, filters, out_height, x_padded.shape[3] - kernel_w + 1)
        shape = (batch, channels, in_height, x_padded.shape[3] - 2 * padding[1])
        plain = np.empty(shape, w.dtype)
        gz_plain = np.ascontiguousarray(interior(gz_padded, gz_border, out_shape))
        cpu.conv.conv2d_backward_input_general(plain, gz_plain, w, 1, 1, padding[0], padding[1], 1, 1, 1)
        if mask is not None:
            plain = np.where(interior(mask, mask_border, shape) > 0, plain, 0).astype(w.dtype)
        interior(gx, gx_border, shape)[...] = plain
        if gx_also is not None:
            interior(gx_also, gx_also_border, shape)[...] = plain


def strided_conv2d_backward(gconv: Any, x_padded: Any, w: Any, stride: tuple[int, int], padding: tuple[int, int],
                            gx: Any = None) -> tuple[Any, Any]:
    """A strided conv's backward by the backend's strided kernels (``kernels/cpu/conv.py``
    chooses, as for the functional ``conv2d_backward``): returns (gw, gb), new arrays in
    w's dtype; writes gx when given. A gathered grad-weight sums the bias in its pass.

    Parameters
    ----------
    gconv : (N, F, OH, OW), plain
        The gradient of the conv output.
    x_padded : (N, C, H + 2 * pad_h, W + 2 * pad_w)
        The forward's padded input: grad-weight runs on it with padding 0.
    w : (F, C, KH, KW)
    stride, padding : pairs
    gx : (N, C, H, W), plain, optional
        Receives the input gradient.
    """
    cpu = backend("cpu")
    conv = cpu.conv
    filters, channels, kernel_h, kernel_w = w.shape
    gw, gb = np.empty(w.shape, w.dtype), np.empty(filters, w.dtype)
    if conv.choose_backward_weight(filters, kernel_h, kernel_w, *stride, 1, 1, 1, gconv.shape[0], gconv.shape[3],
                                   channels)[0] == conv.GATHERED:
        cpu.conv_gathered.backward_weight(gw, gconv, x_padded, *stride, 0, 0, db=gb)  # the bias in the same pass
    else:
        conv.conv2d_backward_weight(gw, gconv, x_padded, *stride, 0, 0, 1, 1, 1)
        conv.conv2d_backward_bias(gb, gconv)
    if gx is not None:
        conv.conv2d_backward_input(gx, gconv, w, *stride, *padding, 1, 1, 1)
    return gw, gb


def _grad_input_side_by_side(gz_padded: Any, w: Any, gx: Any, gx_border: tuple[int, int], mask: Any,
                             mask_border: tuple[int, int], gx_also: Any, gx_also_border: tuple[int, int]) -> None:
    """:func:`conv2d_backward_padded`'s input gradient on a small map: one correlation of
    the packed rows with the flipped kernel (:func:`_correlate_side_by_side`), each
    image's gradient copied out through the mask (and twice)."""
    channels, kernel_w = w.shape[1], w.shape[3]
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, F, KH, KW)
    packed_gx, group = _correlate_side_by_side(gz_padded, flipped, np.zeros(channels, w.dtype),
                                               backend("cpu").conv_rows.MODE_BIAS)
    slot_width = gz_padded.shape[3]
    twice = gx_also is not None
    unpack = backend("cpu").conv_small_maps.unpack_masked_kernel(
        slot_width, group, slot_width - kernel_w + 1, *gx_border, *(gx_also_border if twice else (0, 0)),
        *(mask_border if mask is not None else (0, 0)), mask is not None, twice)
    unpack(gx, gx_also if twice else gx, mask if mask is not None else gx, packed_gx)


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
    second_border = also_border if also is not None else (-1, -1)
    kernel = backend("cpu").bordered.max_pool2x2_relu_backward_kernel(*gz_border, *pooled_border, *second_border)
    kernel(gz_padded, np.ascontiguousarray(gp), indices, pooled, gz_padded if also is None else also)


def copy_interior(dst: Any, dst_border: tuple[int, int], src: Any, src_border: tuple[int, int]) -> None:
    """dst's interior = src's interior (bordered buffers around the same (N, C, H, W))."""
    backend("cpu").bordered.copy_interior_kernel(*src_border, *dst_border)(dst, src)


def relu_padded(z: Any, out: Any, out_border: tuple[int, int]) -> None:
    """out's interior (N, F, OH, OW) at out_border = relu(z), z plain (a strided block's
    conv output; ``F.relu``'s values: a NaN passes, -0.0 becomes +0.0)."""
    backend("cpu").bordered.relu_into_border_kernel(*out_border, z.shape[3])(out, z)


def strided_conv2d_relu_padded(x_padded: Any, w: Any, b: Any, z: Any, out: Any, out_border: tuple[int, int],
                               stride: tuple[int, int]) -> None:
    """A strided block without batch norm or pool: relu(conv2d of the padded input + b)
    into out's interior at out_border. Where the backend's strided forward gathers the
    taps (``conv.GATHERED``: a first layer of few channels), its kernel writes the ReLU
    there itself; any other writes the plain conv output z (N, F, OH, OW) first, then
    :func:`relu_padded`."""
    cpu = backend("cpu")
    filters, channels, kernel_h, kernel_w = w.shape
    batch, _, out_height, out_width = z.shape
    variant, _ = cpu.conv.choose_forward(filters, kernel_h, kernel_w, *stride, 1, 1, 1, out_height, channels, batch,
                                         out_width)
    if variant == cpu.conv.GATHERED:
        cpu.conv_gathered.gathered_forward_kernel(kernel_h, kernel_w, *stride, 0, 0, out_height, out_width,
                                                  *out_border)(out, x_padded, w, b)
        return
    conv2d_padded(x_padded, w, b, z, stride)
    relu_padded(z, out, out_border)


def relu_pool_padded(z: Any, out: Any, out_border: tuple[int, int], *, pooled: Any = None,
                     pooled_border: tuple[int, int] = (0, 0), indices: Any = None) -> None:
    """A plain conv output z (N, F, OH, OW) (a strided conv's, the FFT's) on to the next
    block: relu(z) into out's interior at out_border (:func:`relu_padded`), or, with
    ``pooled``, its 2x2 / stride-2 max pool and argmax ``indices`` into pooled's interior
    at pooled_border by the batch norm blocks' kernel with scale 1 and shift 0 (``z * 1 +
    0`` is z exactly: relu(z) bit for bit); the ReLU output itself is not stored then."""
    if pooled is None:
        relu_padded(z, out, out_border)
        return
    filters = z.shape[1]
    batch_norm_relu_padded(z, np.ones(filters), np.zeros(filters), None, (0, 0), pooled=pooled,
                           pooled_border=pooled_border, indices=indices)


def relu_backward_padded(gz_padded: Any, gz_border: tuple[int, int], gy: Any, y: Any,
                         y_border: tuple[int, int] | None = None) -> None:
    """gz's interior = gy where y > 0, else 0; gy (N, C, OH, OW); y the same shape, or,
    with ``y_border``, a bordered buffer with that interior (a block's padded input:
    the previous block's ReLU output). gz may be gy itself (plain, in place)."""
    kernel = backend("cpu").bordered.relu_mask_bordered_kernel(*gz_border, *(y_border or (0, 0)))
    kernel(gz_padded, np.ascontiguousarray(gy), y if y_border is not None else np.ascontiguousarray(y))


# --------------------------------------------------------------------------- #
# Batch norm blocks: Conv2d -> BatchNorm2d -> ReLU (-> MaxPool2d)
# --------------------------------------------------------------------------- #

def conv2d_padded(x_padded: Any, w: Any, b: Any, out: Any, stride: tuple[int, int] = (1, 1)) -> None:
    """out (N, F, OH, OW), plain, = conv2d of a padded input + b: a batch norm block's
    conv output z, which the batch norm then reads twice, or a strided block's, which
    the normalise + ReLU kernels read. Strided, the backend's strided forward runs
    (``kernels/cpu/conv.py`` chooses, as for the functional conv2d) with padding 0:
    x_padded's border is the padding."""
    if stride != (1, 1):
        backend("cpu").conv.conv2d_forward(out, x_padded, w, b, *stride, 0, 0, 1, 1, 1)
        return
    rows = backend("cpu").conv_rows
    filters, _, kernel_h, kernel_w = w.shape
    kernel = rows.conv_rows_kernel(filters, kernel_h, kernel_w, rows.MODE_BIAS, x_padded.shape[2], x_padded.shape[3],
                                   itemsize=x_padded.itemsize, winograd=_by_winograd(x_padded, kernel_h, kernel_w))
    kernel(out, out, _dummy_indices(), out, x_padded, w, b)


def batch_norm_statistics(z: Any, running_mean: Any, running_var: Any, eps: float, momentum: float) -> tuple:
    """(mean, invstd), float64 (F,), of the batch z (N, F, OH, OW); running_mean and
    running_var (F,) updated in place with ``momentum`` when given (both None: none)."""
    channels = z.shape[1]
    mean, invstd = np.empty(channels, np.float64), np.empty(channels, np.float64)
    update = running_mean is not None
    backend("cpu").norm.batch_norm_stats_planes(mean, invstd, running_mean if update else mean,
                                                running_var if update else mean,
                                                z.reshape(z.shape[0], channels, -1), float(eps), float(momentum),
                                                update)
    return mean, invstd


def batch_norm_scale_shift(mean: Any, invstd: Any, weight: Any, bias: Any) -> tuple:
    """(scale, shift), float64 (F,): batch norm is ``z * scale + shift`` per channel,
    scale = weight * invstd and shift = bias - mean * scale (``batch_norm_forward``'s
    expressions, so the values match the layer's bit for bit)."""
    scale = invstd * weight
    return scale, bias - mean * scale


def batch_norm_relu_padded(z: Any, scale: Any, shift: Any, out: Any, out_border: tuple[int, int], *,
                           pooled: Any = None, pooled_border: tuple[int, int] = (0, 0), indices: Any = None) -> None:
    """relu(z * scale + shift) into out's interior (N, F, OH, OW) at out_border, or,
    with ``pooled``, its 2x2 / stride-2 max pool into pooled's interior at
    pooled_border and the argmax ``indices`` (N, F, OH // 2, OW // 2) instead."""
    norm = backend("cpu").norm
    if pooled is None:
        norm.batch_norm_relu_kernel(*out_border)(out, z, scale, shift)
    else:
        norm.batch_norm_relu_pool2x2_kernel(*pooled_border, z.shape[3])(pooled, indices, z, scale, shift)


def batch_norm_backward_padded(gconv: Any, gconv_border: tuple[int, int], gy: Any, z: Any, mean: Any, invstd: Any,
                               weight: Any, *, also: Any = None) -> tuple[Any, Any]:
    """The batch norm's training backward: writes the gradient of its input z (the conv
    output) into gconv's interior at gconv_border (and also's at (1, 1) when given);
    returns (gweight, gbias), (F,) in z's dtype.

    gy (N, F, OH, OW) is the gradient at the batch norm's output (through the ReLU
    mask); mean and invstd are the forward's batch statistics."""
    channels = z.shape[1]
    gweight, gbias = np.empty(channels, z.dtype), np.empty(channels, z.dtype)
    second = (1, 1) if also is not None else (-1, -1)
    kernel = backend("cpu").norm.batch_norm_backward_bordered_kernel(*gconv_border, *second)
    kernel(gconv, gconv if also is None else also, gweight, gbias, np.ascontiguousarray(gy), z, mean, invstd, weight)
    return gweight, gbias


def batch_norm_pool_backward_padded(gconv: Any, gconv_border: tuple[int, int], gp: Any, indices: Any, pooled: Any,
                                    pooled_border: tuple[int, int], z: Any, mean: Any, invstd: Any, weight: Any, *,
                                    also: Any = None) -> tuple[Any, Any]:
    """A pooled batch norm block's output gradient to its conv in one kernel: the 2x2
    pool's backward from ``indices`` (as :func:`max_pool2d_relu_backward_padded`, the
    ReLU mask from ``pooled`` > 0), then the batch norm's training backward (as
    :func:`batch_norm_backward_padded`) into gconv's interior (N, F, OH, OW) at
    gconv_border (and also's at (1, 1) when given); returns (gweight, gbias), (F,) in
    z's dtype.

    gp (N, F, OH // 2, OW // 2) is the pooled output's gradient, pooled the pooled
    output (bordered, interior at pooled_border), z the conv output; mean and invstd
    the forward's batch statistics."""
    channels = z.shape[1]
    gweight, gbias = np.empty(channels, z.dtype), np.empty(channels, z.dtype)
    second = (1, 1) if also is not None else (-1, -1)
    kernel = backend("cpu").norm.batch_norm_pool2x2_backward_bordered_kernel(*gconv_border, *pooled_border, *second)
    kernel(gconv, gconv if also is None else also, gweight, gbias, np.ascontiguousarray(gp), indices, pooled, z, mean,
           invstd, weight)
    return gweight, gbias


def fold_batch_norm(w: Any, b: Any, scale: Any, shift: Any) -> tuple[Any, Any]:
    """The conv weights with an eval-mode batch norm folded in: ``bn(conv(x, w) + b) =
    conv(x, w * scale) + b * scale + shift`` per filter; (w', b') in w's dtype."""
    folded_w = (w * scale[:, None, None, None]).astype(w.dtype)
    return np.ascontiguousarray(folded_w), (b * scale + shift).astype(w.dtype)
