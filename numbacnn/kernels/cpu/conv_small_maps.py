"""Stride-1 convolutions on small maps with the images side by side: the fused wing's
conv + ReLU (+ 2x2 pool) and grad-input (x ReLU mask) when the output rows fill a
quarter of a vector or less (``numbacnn/fused/bordered_ops.py`` runs them; the composed
ops of ``functional/fused.py`` are the definition, tests/test_small_maps.py compares).

Why
---
``conv_rows.conv_rows_kernel`` computes each output row in whole vectors: a 4-wide row
(Tiny VGG's stride-2 variant, conv4 on 4x4 maps) fills a quarter of a 16-float vector,
so three quarters of its multiply-adds are thrown away (about 10 GFLOP/s against 50-65
on 14x14 maps in a per-op profile of the stride-2 step). ``conv_phases.py`` packs the
phases of a strided convolution side by side for that reason; this is the same packing
with stride 1: the padded planes of G = ``conv_phases.images_per_row(slot width)``
images sit side by side in one row::

    packed[g, c, r, j * SW + q] = x_padded[g * G + j, c, r, q]      SW = x_padded's width

A stride-1 correlation of the packed rows computes every image's outputs at once:
output column ``j * SW + q``, q < OW = SW - KW + 1, reads only slot j; the other KW - 1
columns of each slot read across its edge and are dropped when the outputs are copied
out (:func:`unpack_relu_pool_kernel`, :func:`unpack_masked_kernel`), which also do what
the row kernel's fused store did (the pool with its argmax, the mask, the borders).

Tiny VGG's conv4 (64 x 10 x 4 x 4 outputs, 10 channels, one thread, measured): forward
with the pool 0.23 ms as rows, 0.073 side by side (pack 0.014, correlation 0.044, the
rest copying out); grad-input with the mask 0.165 against 0.070 (:func:`packs_images`).

Shapes: x_padded (N, C, H, SW); packed (ceil(N / G), C, H, G * SW); packed output
(ceil(N / G), F, H - KH + 1, G * SW - KW + 1).
"""

from functools import lru_cache

import numpy as np
from numba import njit, prange

from numbacnn.kernels.common import is_new_max
from numbacnn.kernels.cpu import conv_phases
from numbacnn.kernels.cpu.conv_tuning import BUILT_KERNELS, VECTOR_BYTES


def packs_images(out_width: int, out_height: int, batch: int, itemsize: int) -> bool:
    """True when a stride-1 convolution on bordered buffers runs with the images side by
    side: its output rows fill at most a quarter of a vector (float32: 4 columns,
    float64: 2), there are two images or more to pack, and two output rows or more (the
    row kernel computes two at a time).

    Measured (float32, batch 64, 10 -> 10 channels, 3x3 padding 1, one thread; forward
    with the pool, grad-input with the mask), rows against side by side: 4x4 maps 0.23
    against 0.073 and 0.165 against 0.070 ms; 6x6 0.147 against 0.134 and 0.149
    against 0.118; 8x8 (half a vector) 0.195 against 0.217 and 0.189 against 0.215:
    past a quarter of a vector the copies cost what the packed rows save."""
    return 4 * out_width <= VECTOR_BYTES // itemsize and batch >= 2 and out_height >= 2


def packed_shape(x_shape: tuple, slot_width: int) -> tuple:
    """(ceil(N / G), C, H, G * SW): the packed array of x_shape (N, C, H, SW)."""
    group = conv_phases.images_per_row(slot_width)
    batch, channels, height = x_shape[0], x_shape[1], x_shape[2]
    return (-(-batch // group), channels, height, group * slot_width)


def pack_planes(packed: np.ndarray, x_padded: np.ndarray) -> None:
    """packed[g, c, r, j * SW + q] = x_padded[g * G + j, c, r, q] (the whole padded
    planes, border included; empty slots zero): ``conv_phases.pack_images_kernel``."""
    slot_width = x_padded.shape[3]
    group = conv_phases.images_per_row(slot_width)
    conv_phases.pack_images_kernel(0, 0, slot_width, group, slot_width)(packed, x_padded)


@lru_cache(maxsize=None)
def unpack_relu_pool_kernel(slot_width: int, group: int, out_width: int, out_top: int, out_left: int,
                            pool_top: int, pool_left: int, pooled: bool, store_out: bool):
    """``unpack(out, pooled, indices, packed)``: packed (ceil(N / G), F, OH, >= G * SW - KW
    + 1) holds the ReLU output of image g * G + j at columns j * SW + q, q < OW::

        out[n, f, out_top + i, out_left + q] = packed[g, f, i, j * SW + q]     (store_out)
        pooled[n, f, pool_top + i, pool_left + p] = max of the 2x2 window (2i, 2p)
        indices[n, f, i, p] = the maximum's flat ``row * OW + col``            (pooled)

    The first maximum in row-major order wins, NaN wins (``is_new_max``), as
    max_pool2d and ``conv_rows``' pooled store. Unused arguments may be any arrays of
    the right type. Parallel over (packed image, filter)."""

    @njit(parallel=True, cache=True)
    def unpack(out, pooled_out, indices, packed):
        batch = indices.shape[0] if pooled else out.shape[0]
        packed_batch, filters, out_height = packed.shape[0], packed.shape[1], packed.shape[2]
        for task in prange(packed_batch * filters):
            g = task // filters
            f = task % filters
            for j in range(min(group, batch - g * group)):
                n = g * group + j
                plane = packed[g, f]
                start = j * slot_width
                if store_out:
                    for i in range(out_height):
                        for q in range(out_width):
                            out[n, f, out_top + i, out_left + q] = plane[i, start + q]
                if pooled:
                    for i in range(out_height // 2):
                        for p in range(out_width // 2):
                            row, col = 2 * i, 2 * p
                            best = plane[row, start + col]
                            where = row * out_width + col
                            for dr, dc in ((0, 1), (1, 0), (1, 1)):
                                value = plane[row + dr, start + col + dc]
                                if is_new_max(value, best):
                                    best = value
                                    where = (row + dr) * out_width + col + dc
                            pooled_out[n, f, pool_top + i, pool_left + p] = best
                            indices[n, f, i, p] = where

    BUILT_KERNELS.append(unpack)
    return unpack


@lru_cache(maxsize=None)
def unpack_masked_kernel(slot_width: int, group: int, out_width: int, out_top: int, out_left: int,
                         also_top: int, also_left: int, mask_top: int, mask_left: int, masked: bool,
                         store_twice: bool):
    """``unpack(out, also, mask, packed)``: each image's slot of a packed grad-input,
    through the previous ReLU's mask when ``masked``::

        value = packed[g, c, i, j * SW + q]   (q < OW; zero where mask[n, c, mask_top + i, mask_left + q] <= 0)
        out[n, c, out_top + i, out_left + q] = value
        also[n, c, also_top + i, also_left + q] = value                   (store_twice)

    Every interior element of out (N, C, OH, OW) written. Parallel over (packed image,
    channel)."""

    @njit(parallel=True, cache=True)
    def unpack(out, also, mask, packed):
        batch = out.shape[0]
        packed_batch, channels, out_height = packed.shape[0], packed.shape[1], packed.shape[2]
        zero = packed.dtype.type(0)
        for task in prange(packed_batch * channels):
            g = task // channels
            c = task % channels
            for j in range(min(group, batch - g * group)):
                n = g * group + j
                start = j * slot_width
                for i in range(out_height):
                    for q in range(out_width):
                        value = packed[g, c, i, start + q]
                        if masked:
                            value = value if mask[n, c, mask_top + i, mask_left + q] > 0 else zero
                        out[n, c, out_top + i, out_left + q] = value
                        if store_twice:
                            also[n, c, also_top + i, also_left + q] = value

    BUILT_KERNELS.append(unpack)
    return unpack
