"""Zero-bordered buffers and the buffers of one fast block.

A *bordered buffer* is a C-contiguous (N, C, H + 2*border_h, W + 2*border_w) host
array whose border is zero and stays zero: it is zeroed once when allocated
(:func:`bordered_empty`) and every kernel writes interiors only. A conv with
padding p reads its input from a buffer bordered by p (no padding copy, the same
buffer for forward and grad-weight); its grad-input reads the output gradient from
a buffer bordered by K - 1 - p (see ``kernels/cpu/conv_rows.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numbacnn.device import backend
from numbacnn.fused.eligibility import FastPath


def bordered_empty(shape: tuple, border: tuple[int, int], dtype: Any) -> np.ndarray:
    """A zeroed (N, C, H + 2*border_h, W + 2*border_w) host buffer for an (N, C, H, W) interior."""
    n, c, h, w = shape
    return np.zeros((n, c, h + 2 * border[0], w + 2 * border[1]), dtype)


def interior(buffer: np.ndarray, border: tuple[int, int], shape: tuple) -> np.ndarray:
    """The (N, C, H, W) interior view of a bordered buffer."""
    top, left = border
    return buffer[:, :, top:top + shape[2], left:left + shape[3]]


class BlockBuffers:
    """The buffers of one fast block for one input shape, kept between steps so a
    training step allocates (and page-faults) nothing.

    Parameters
    ----------
    x_shape : (N, C, H, W)
    dtype : float32 or float64
    kernel_size : (KH, KW)
    fast : FastPath
        The block's sizes and padding (``eligibility.fast_path``).
    out_border : (top, left)
        The border the next block wants around this block's output (its padding), or
        (0, 0).
    pooled : bool
    training : bool
        Without training there is no backward: no gradient buffers.
    batch_norm : bool
        A batch norm between the conv and the ReLU (``z`` and ``gconv`` below).
    batch_stats : bool
        With batch norm: it normalises with this batch's statistics (training, or no
        running statistics), so the conv output ``z`` is kept; eval with running
        statistics folds them into the conv instead and keeps nothing more.

    Attributes
    ----------
    x_padded : bordered input (border ``pad``), used when no neighbour wrote into one
    y, y_view : the ReLU output, bordered by out_border (no pool only; with a pool the
        ReLU output is never stored: the backward needs only the pooled output, its
        mask, and the indices)
    pooled, pooled_view, indices : the pool's output (bordered by out_border) and its
        int64 argmax indices (with a pool)
    z : the conv output (N, F, OH, OW), plain, where it is stored: with batch norm and
        batch statistics (the batch norm's input, whose statistics and backward read
        it), and in a strided block (the strided kernels write a plain output, which
        the normalise + ReLU kernels then read, with scale 1 and shift 0 without batch
        norm; with neither batch norm nor pool, a ReLU kernel)
    gz, gz_view : the gradient at the ReLU's input, which the next block's backward
        writes into: without batch norm that is the conv output's gradient, bordered by
        K - 1 - p; with batch norm the batch norm output's, plain (border (0, 0)), and
        None with batch norm and a pool (one kernel goes from the pooled gradient to
        gconv)
    gz_by_1 : for 3x3 without padding (no batch norm), the same gradient bordered by
        1, so grad-weight runs over whole planes
    gconv, gconv_border, gconv_by_1 : the gradient of the conv output as the conv's
        backward reads it (bordered by K - 1 - p, and by 1 for 3x3 without padding;
        strided, plain: the strided kernels read plain arrays): gz, gz_border and gz_by_1
        themselves without batch norm; with batch norm, its backward writes them
    gx : a plain input gradient (to a pool or outside the chain)
    """

    def __init__(self, x_shape: tuple, dtype: Any, kernel_size: tuple[int, int], fast: FastPath,
                 out_border: tuple[int, int], pooled: bool, training: bool, batch_norm: bool = False,
                 batch_stats: bool = False) -> None:
        kernel_h, kernel_w = kernel_size
        pad = fast.pad
        self.pad = pad
        self.y_shape = fast.y_shape
        self.x_padded = bordered_empty(x_shape, pad, dtype)
        self.out_border = out_border
        self.y = self.y_view = self.pooled = self.pooled_view = self.indices = None
        if pooled:
            self.pooled_shape = fast.out_shape
            self.pooled = bordered_empty(self.pooled_shape, out_border, dtype)
            self.pooled_view = interior(self.pooled, out_border, self.pooled_shape)
            self.indices = np.empty(self.pooled_shape, np.int64)
        else:
            self.y = bordered_empty(self.y_shape, out_border, dtype)
            self.y_view = interior(self.y, out_border, self.y_shape)
        self.batch_norm = batch_norm
        self.stride = fast.stride
        strided = fast.stride != (1, 1)
        self.z = np.empty(self.y_shape, dtype) if (batch_norm and batch_stats) or strided else None
        self.gconv_border = (0, 0) if strided else (kernel_h - 1 - pad[0], kernel_w - 1 - pad[1])
        self.gz_border = (0, 0) if batch_norm else self.gconv_border
        self.gz = self.gz_view = self.gz_by_1 = self.gconv = self.gconv_by_1 = self.gx = None
        if not training:
            return
        self.gconv = bordered_empty(self.y_shape, self.gconv_border, dtype)
        if (kernel_h, kernel_w) == (3, 3) and pad == (0, 0) and not strided:
            self.gconv_by_1 = bordered_empty(self.y_shape, (1, 1), dtype)
        if batch_norm:  # the next block writes the batch norm output's gradient; its backward, gconv
            if not pooled:
                self.gz = self.gz_view = np.empty(self.y_shape, dtype)
        else:
            self.gz, self.gz_by_1 = self.gconv, self.gconv_by_1
            self.gz_view = interior(self.gz, self.gz_border, self.y_shape)
        self.gx = np.empty(x_shape, dtype)

    @property
    def output(self) -> tuple[np.ndarray, np.ndarray]:
        """(bordered buffer, its interior view) holding the block's output."""
        return (self.y, self.y_view) if self.pooled is None else (self.pooled, self.pooled_view)


class LanesBuffers:
    """The buffers of one *lanes block* (``FastPath.lanes``: maps so small that the block
    runs with the images in the vector lanes, ``kernels/cpu/lanes_blocks.py``) for one
    input shape, kept between steps. Lanes arrays are (C, H, W, N); a bordered one holds
    its map at (top, left) inside zeros (zeroed once, here).

    Parameters
    ----------
    x_shape, dtype, kernel_size, fast, out_border, pooled, training
        As :class:`BlockBuffers`.
    out_lanes : bool
        The next block is a lanes block too: the output stays in the lanes, in ``out_t``
        bordered by out_border (the next block's padded input); otherwise it is also
        written, NCHW, into ``y`` / ``pooled`` bordered by out_border.

    Attributes
    ----------
    x_t : the lanes input, bordered by ``pad``, used when the previous block is not a
        lanes block (else its ``out_t`` is this block's input)
    z_t : the conv output (F, OH, OW, N)
    out_t : the ReLU (+ pool) output in the lanes, bordered by out_border when
        ``out_lanes``, else plain
    which : with a pool, where each window's maximum is (``lanes_blocks.relu_pool_into_border``)
    has_pool : the block has a pool
    y, y_view, pooled, pooled_view : the NCHW output (without ``out_lanes``), as
        :class:`BlockBuffers`'
    gy_t : the output gradient brought into the lanes from an NCHW neighbour
    gz_t, gz_border : the conv output's gradient bordered as the LANES grad-input reads
        it (``conv_lanes.dout_border``, rows below to cover every input row); the LANES
        grad-weight reads its interior, the bias gradient all of it (zeros around)
    dx_t : the input gradient in the lanes (C, H, W, N); gx its NCHW copy, for an NCHW
        previous block
    """

    def __init__(self, x_shape: tuple, dtype: Any, kernel_size: tuple[int, int], fast: FastPath,
                 out_border: tuple[int, int], out_lanes: bool, pooled: bool, training: bool) -> None:
        batch, channels, height, width = x_shape
        filters, out_height, out_width = fast.y_shape[1:]
        kernel_h, kernel_w = kernel_size
        self.pad, self.stride, self.y_shape, self.out_shape = fast.pad, fast.stride, fast.y_shape, fast.out_shape
        self.out_border, self.out_lanes, self.has_pool = out_border, out_lanes, pooled
        pad_h, pad_w = fast.pad
        self.x_t = np.zeros((channels, height + 2 * pad_h, width + 2 * pad_w, batch), dtype)
        self.z_t = np.empty((filters, out_height, out_width, batch), dtype)
        out_filters, out_h, out_w = fast.out_shape[1:]
        border = out_border if out_lanes else (0, 0)
        self.out_t = np.zeros((out_filters, out_h + 2 * border[0], out_w + 2 * border[1], batch), dtype)
        self.out_t_border = border
        self.which = np.empty((out_filters, out_h, out_w, batch), np.int8) if pooled else None
        self.y = self.y_view = self.pooled = self.pooled_view = None
        if not out_lanes:
            if pooled:
                self.pooled = bordered_empty(fast.out_shape, out_border, dtype)
                self.pooled_view = interior(self.pooled, out_border, fast.out_shape)
            else:
                self.y = bordered_empty(fast.y_shape, out_border, dtype)
                self.y_view = interior(self.y, out_border, fast.y_shape)
        self.gy_t = self.gz_t = self.dx_t = self.gx = None
        self.gz_border = (0, 0)
        if not training:
            return
        lanes = backend("cpu").conv_lanes
        border_h, border_w = lanes.dout_border(kernel_h, fast.stride[0]), lanes.dout_border(kernel_w, fast.stride[1])
        rows = max(out_height, (pad_h + height - 1) // fast.stride[0] + 1)
        cols = max(out_width, (pad_w + width - 1) // fast.stride[1] + 1)
        self.gy_t = np.empty((out_filters, out_h, out_w, batch), dtype)
        self.gz_t = np.zeros((filters, border_h + rows, border_w + cols, batch), dtype)
        self.gz_border = (border_h, border_w)
        self.dx_t = np.empty((channels, height, width, batch), dtype)
        self.gx = np.empty(x_shape, dtype)

    @property
    def output(self) -> tuple[Any, Any]:
        """(bordered NCHW buffer, its interior view) holding the block's output, or
        (None, None) when it stays in the lanes for the next block."""
        if self.out_lanes:
            return None, None
        return (self.y, self.y_view) if self.pooled is None else (self.pooled, self.pooled_view)
