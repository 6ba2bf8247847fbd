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
