"""The ops of a lanes block (``FastPath.lanes``): a fused block on small maps whose
forward and backward run with the images in the vector lanes, on the
:class:`~numbacnn.fused.buffers.LanesBuffers` kept between steps.

Each op is a thin call of a backend kernel: the convolutions are ``conv_lanes.py``'s
LANES kernels (any stride: a stride-1 block is their stride (1, 1)); the pool and its
backward ``lanes_blocks.py``'s; the ReLU, its backward and the gradient copy the NCHW
blocks' (``bordered.py``) on the lanes viewed as rows (:func:`_rows`); the bias gradient
``conv.conv2d_backward_bias``. Maps in the lanes are (C, H, W, N); a bordered one holds
its map at (top, left) inside zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numbacnn.device import backend


def to_lanes(dst: Any, src: Any, pad: tuple[int, int]) -> None:
    """dst (C, H + 2 * pad_h, W + 2 * pad_w, N) = src (N, C, H, W) in the lanes, zero-padded
    (``conv_lanes.images_last``; dst may be larger than the padded map: zeros)."""
    backend("cpu").conv_lanes.images_last(dst, src, *pad)


def from_lanes(dst: Any, src: Any) -> None:
    """dst (N, C, H, W), which may be a bordered buffer's interior view, = src (C, >= H,
    >= W, N) from its corner (``conv_lanes.images_first``)."""
    backend("cpu").conv_lanes.images_first(dst, src, 0, 0)


def conv(z_t: Any, x_t: Any, w: Any, b: Any, stride: tuple[int, int]) -> None:
    """z_t (F, OH, OW, N) = b + the stride correlation of the padded x_t (C, HP, WP, N)
    with w (F, C, KH, KW)."""
    filters, _, kernel_h, kernel_w = w.shape
    backend("cpu").conv_lanes.forward_lanes_kernel(filters, kernel_h, kernel_w, *stride)(z_t, x_t, w, b)


def _rows(a: Any) -> Any:
    """A map in the lanes (F, H, W, N) as the NCHW array (F, 1, H, W * N) it also is: F
    one-channel images whose rows hold W x N values (a view)."""
    return a.reshape(a.shape[0], 1, a.shape[1], -1)


def relu_pool(out_t: Any, which: Any, z_t: Any, border: tuple[int, int]) -> None:
    """relu(z_t) into out_t's interior at border, or, with ``which`` (not None), its
    2x2 / stride-2 max pool and where each window's maximum is.

    The ReLU alone is the NCHW blocks' kernel (``bordered.relu_into_border_kernel``): a
    map in the lanes (F, H, W, N) is an NCHW array of F images of one channel whose rows
    hold W * N values (:func:`_rows`), and a border (top, left) is (top, left * N) there."""
    cpu = backend("cpu")
    if which is None:
        _, _, width, batch = z_t.shape
        cpu.bordered.relu_into_border_kernel(border[0], border[1] * batch, width * batch)(_rows(out_t), _rows(z_t))
    else:
        cpu.lanes_blocks.relu_pool_into_border(out_t, which, z_t, *border)


def output_gradient(gz_t: Any, gy_t: Any, z_t: Any, which: Any, gz_border: tuple[int, int], *,
                    masked: bool = False) -> None:
    """A lanes block's conv output gradient (F, OH, OW, N), into gz_t's interior at
    gz_border, from its output gradient gy_t (lanes): through the pool and the ReLU mask
    (with ``which``, the pool's record), through the ReLU mask alone (z_t > 0), or as it
    is where the next block already applied the mask (``masked``). Also what the block
    after a lanes block without pool does for it: its ReLU's backward.

    The ReLU's mask and the copy are the NCHW blocks' kernels on the lanes viewed as rows
    (:func:`_rows`; a border (top, left) is (top, left * N) there); the mask reads z_t,
    the conv output, where the NCHW kernel reads the ReLU's output: relu(z) > 0 exactly
    where z > 0."""
    cpu = backend("cpu")
    top, left = gz_border
    _, height, width, batch = z_t.shape
    if which is not None:
        cpu.lanes_blocks.pool_relu_backward_into_border(gz_t, gy_t, which, top, left, height, width)
    elif masked:
        cpu.bordered.copy_into_border_kernel(top, left * batch)(_rows(gz_t), _rows(gy_t))
    else:
        cpu.bordered.relu_mask_bordered_kernel(top, left * batch)(_rows(gz_t), _rows(gy_t), _rows(z_t))


def weight_bias_gradient(gz_t: Any, gz_border: tuple[int, int], x_t: Any, w: Any,
                         stride: tuple[int, int]) -> tuple[Any, Any]:
    """(gw, gb), new arrays in w's dtype: the LANES grad-weight (row sums per image in the
    data's type, float64 across rows and images) and the bias gradient (float64) of the
    conv output's gradient, held in gz_t's interior at gz_border (the grad-input's
    bordered buffer, zero outside its interior), against its padded input x_t."""
    filters, _, kernel_h, kernel_w = w.shape
    cpu = backend("cpu")
    gw, gb = np.empty(w.shape, w.dtype), np.empty(filters, w.dtype)
    out_width = (x_t.shape[2] - kernel_w) // stride[1] + 1
    cpu.conv_lanes.weight_gradient_lanes_kernel(kernel_h, kernel_w, *stride, out_width, *gz_border)(gw, gz_t, x_t)
    # the conv's bias kernel sums over (N, ., OH, OW): here (1, F, rows * cols, N), rows of
    # N images, the border's zeros included (they add nothing)
    cpu.conv.conv2d_backward_bias(gb, gz_t.reshape(1, filters, -1, gz_t.shape[3]))
    return gw, gb


def input_gradient(dx_t: Any, gz_t: Any, w: Any, stride: tuple[int, int], pad: tuple[int, int]) -> None:
    """dx_t (C, H, W, N), every element written, = the input gradient for the conv output's
    gradient held in gz_t, bordered as the LANES grad-input reads it
    (``conv_lanes.grad_input_lanes_kernel``, the kernel split by phase)."""
    lanes = backend("cpu").conv_lanes
    filters, _, kernel_h, kernel_w = w.shape
    lanes.grad_input_lanes_kernel(filters, kernel_h, kernel_w, *stride)(dx_t, gz_t, lanes.phase_split(w, *stride), *pad)
