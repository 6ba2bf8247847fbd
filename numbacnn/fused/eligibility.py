"""Whether a fused group takes the CPU fast path: one function decides.

A group is described by values (:class:`ConvBlock`), not by layer objects, so the
rule can be asked about any input shape without running anything: the chain asks
it for every block before allocating (its output border is the next block's
padding), and ``numbacnn info --kernels`` asks it to say why a block runs where it
does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from numbacnn.device import backend
from numbacnn.shapes import conv_output_size, pool_output_size


@dataclass(frozen=True)
class PoolSpec:
    """A MaxPool2d's hyperparameters (all pairs normalised, as the layer holds them)."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool


@dataclass(frozen=True)
class NormSpec:
    """A BatchNorm2d's fixed settings (its momentum and statistics change per step and
    are passed with the parameters)."""

    eps: float
    affine: bool
    track_running_stats: bool


@dataclass(frozen=True)
class ConvBlock:
    """``Conv2d (-> BatchNorm2d) -> ReLU (-> MaxPool2d)`` as values: what the group computes.

    ``weight_shape`` is (F, C // groups, KH, KW); ``padding`` a pair or "same" /
    "valid" as the layer holds it; ``pool`` None for a group without a pool;
    ``norm`` None for a group without batch norm.
    """

    weight_shape: tuple[int, int, int, int]
    stride: tuple[int, int]
    padding: Any
    dilation: tuple[int, int]
    groups: int
    pool: PoolSpec | None = None
    norm: NormSpec | None = None


@dataclass(frozen=True)
class FastPath:
    """How a block runs on the fast path for one input shape (every size from shapes.py).

    ``pad`` (pad_h, pad_w) is the conv's padding, the border its input buffer
    needs; ``y_shape`` the ReLU output (N, F, OH, OW); ``out_shape`` the group's
    output (the pooled shape with a pool, else ``y_shape``); ``stride`` the conv's
    (a strided block runs the backend's strided kernels on the bordered buffers);
    ``lanes``: a lanes block, whose forward and backward run with the images in the
    vector lanes (``conv.lanes_block_applies``: small maps, a large batch, no batch
    norm)."""

    pad: tuple[int, int]
    y_shape: tuple[int, int, int, int]
    out_shape: tuple[int, int, int, int]
    stride: tuple[int, int] = (1, 1)
    lanes: bool = False


# asked for every block of every step: the answer depends on these values and on the
# backend's tuning limits (conv.LANES_BLOCK_MAX_OUT_WIDTH, ...), read once per argument
# tuple: a limit changed at run time counts after fast_path.cache_clear()
@lru_cache(maxsize=1024)
def fast_path(block: ConvBlock, x_shape: tuple, x_dtype: Any, weight_dtype: Any, bias_dtype: Any | None,
              device: str, frozen_norm: bool = False) -> FastPath | str:
    """The block's :class:`FastPath` for an input of this shape, dtype and device, or
    the reason (a phrase) why it runs the composed ops of ``functional/fused.py``.

    ``frozen_norm``: the conv trains under a batch norm in eval mode (its running
    statistics, as in fine-tuning). That block runs composed: the fast path folds
    running statistics into the conv and keeps no z, which the batch norm's backward
    needs.

    The fast path needs: the CPU; a non-empty (N, C, H, W) input of the weight's
    dtype (float32 or float64, bias alike); numeric padding smaller than the kernel;
    at least two output rows; the register-blocked kernels' conditions
    (``conv_tuning.fast_path_applies``: stride 1, dilation 1, groups 1, >= 4 filters),
    or, strided, a fast strided forward (``conv.choose_forward``: ``GATHERED``, ``LANES``
    or ``PHASES``); and a pool, if any, of 2x2 windows with stride 2, no padding or
    dilation, whole windows only. A batch norm between the conv and the ReLU asks
    nothing more (its kernels take any (N, C, H, W)). A block without batch norm on
    small maps at a large batch is a lanes block (``conv.lanes_block_applies``).
    """
    tuning = backend("cpu").conv_tuning if device == "cpu" else None
    if tuning is None:
        return f"device {device} (the fast path is CPU only)"
    if frozen_norm:
        return "a training conv under a batch norm on its running statistics"
    if len(x_shape) != 4 or x_shape[0] == 0:
        return "not a non-empty (N, C, H, W) input"
    x_dtype, weight_dtype = np.dtype(x_dtype), np.dtype(weight_dtype)
    if x_dtype != weight_dtype or x_dtype not in (np.float32, np.float64):
        return f"input dtype {x_dtype} with {weight_dtype} weights"
    if bias_dtype is not None and np.dtype(bias_dtype) != x_dtype:
        return f"bias dtype {np.dtype(bias_dtype)}"
    if isinstance(block.padding, str):
        return f"padding={block.padding!r}"
    filters, channels, kernel_h, kernel_w = block.weight_shape
    (stride_h, stride_w), (dilation_h, dilation_w) = block.stride, block.dilation
    pad_h, pad_w = int(block.padding[0]), int(block.padding[1])
    if x_shape[1] != channels * block.groups:
        return f"{x_shape[1]} input channels for a {channels}-channel weight"
    out_h = conv_output_size(x_shape[2], kernel_h, stride_h, pad_h, dilation=dilation_h)
    out_w = conv_output_size(x_shape[3], kernel_w, stride_w, pad_w, dilation=dilation_w)
    if (stride_h, stride_w) != (1, 1):
        conv = backend("cpu").conv
        variant, why = conv.choose_forward(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w,
                                           block.groups, out_h, channels, int(x_shape[0]), out_w)
        if variant not in (conv.GATHERED, conv.LANES, conv.PHASES):
            return why
    elif not tuning.fast_path_applies(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w,
                                      block.groups):
        return backend("cpu").conv.choose_forward(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h,
                                                  dilation_w, block.groups, 2)[1]
    if pad_h >= kernel_h or pad_w >= kernel_w:
        return "padding as large as the kernel"
    if out_h < 2 or out_w < 1:
        return f"a {out_h}x{out_w} output (the row kernels need two rows)"
    y_shape = (int(x_shape[0]), filters, out_h, out_w)
    stride = (stride_h, stride_w)
    lanes = block.norm is None and backend("cpu").conv.lanes_block_applies(int(x_shape[0]), out_w)
    pool = block.pool
    if pool is None:
        return FastPath((pad_h, pad_w), y_shape, y_shape, stride, lanes)
    if not (pool.kernel_size == (2, 2) and pool.stride == (2, 2) and pool.padding == (0, 0)
            and pool.dilation == (1, 1)):
        return "a pool other than 2x2 with stride 2"
    if out_h < 2 or out_w < 2 or (pool.ceil_mode and (out_h % 2 or out_w % 2)):
        return "a partial pool window (ceil_mode with an odd size)"
    pooled = (y_shape[0], filters, pool_output_size(out_h, 2, 2, 0, 1, pool.ceil_mode),
              pool_output_size(out_w, 2, 2, 0, 1, pool.ceil_mode))
    return FastPath((pad_h, pad_w), y_shape, pooled, stride, lanes)
