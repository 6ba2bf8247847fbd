"""Strided convolutions as stride-1 ones over the input's phases (polyphase, or
space-to-depth), images packed side by side: how ``conv.py``'s ``PHASES`` variant lays
out its arrays so that the stride-1 fast kernels (``conv_rows.conv_rows_kernel``,
``conv_weight_grad.weight_gradient_kernel``) compute a strided convolution at close to
its own multiply-add count. ``conv.py`` says when it runs and what it is tested
against; the definition is ``conv.conv2d_forward_general``.

The phases (one axis; the other is the same, independently)
-----------------------------------------------------------
With ``xp`` the input zero-padded by ``pad`` (``xp[r] = x[r - pad]``, zero outside x),
a stride-s correlation with a K-tap kernel is::

    out[o] = sum over k < K of w[k] * xp[o * s + k]

Write each tap as ``k = i * s + a``, phase ``a = k mod s``, ``i = k // s``::

    out[o] = sum over a < s, i < KP of w[i * s + a] * xp[(o + i) * s + a]
           = sum over a of (stride-1 correlation of phase_a with w_a)[o]

    phase_a[r] = xp[r * s + a]       every s-th padded input element, from a
    w_a[i]     = w[i * s + a]        every s-th tap, from a; zero where i * s + a >= K
    KP         = ceil(K / s)         taps of each phase kernel

So a stride-s convolution of C channels is a stride-1 convolution, without padding,
of s * s * C channels (phase (a, b) of channel c is channel ``(a * SW + b) * C + c``)
with KP x KP kernels: KP * KP * s * s multiply-adds per channel and output instead of
K * K; for stride 2, 16 / 9 = 1.78x for 3x3, 1.44x for 5x5, 1.31x for 7x7, 1x for 2x2,
against 4x for computing the stride-1 output everywhere and keeping every second
row and column (the ``STRIDED`` variant this replaced). An (OH, OW) output reads phase
rows 0 .. OH + KP - 2 (PH rows) and columns 0 .. OW + KPW - 2 (PW columns); those past
the padded input are zero.

Backward, the same rearrangement:

- grad-weight: the stride-1 grad-weight of the phase convolution, ``dw_a[i]``, is
  ``dw[i * s + a]`` (:func:`merge_phase_weights`; the zero taps past K are dropped);
- grad-input: the stride-1 grad-input of the phase convolution (dout padded by
  KP - 1, correlated with the flipped phase kernels) is d loss / d ``phase_a[r]``
  = d loss / d ``xp[r * s + a]``. Each input element is exactly one phase element,
  so ``dx[h] = dphase_a[r]`` with ``h + pad = r * s + a`` (:func:`merge_phases_kernel`), and
  zero for an input element past the phases (a last row no output reads).

The zero taps past K are multiplied like the others, and 0 * NaN is NaN: a NaN or Inf
in the input reaches every output that reads it, as in the definition, and may reach
an output next to those (the one whose zero tap falls on it), never another image.

Images side by side
-------------------
The strided layers of a small network have small outputs (Tiny VGG on 28x28, stride
2: 14x14 and 4x4), and the row kernels vectorise along a row: a 4-wide row fills a
quarter of a 16-float vector. So the phases of ``G`` = :func:`images_per_row` images
are packed side by side in one row, each image in a slot PW columns wide::

    packed[g, k, i, j * PW + q] = phases of image g * G + j, channel k, at (i, q)

(N images make ceil(N / G) packed ones; slots past the last image are zero.) A
stride-1 correlation of the packed rows computes every image's outputs at once:
output column ``j * PW + q``, q < OW, reads only columns ``j * PW + q + t``, t < KPW,
inside slot j. The other KPW - 1 output columns of each slot read into the next slot
and are dropped (:func:`unpack_images_kernel`). For grad-input the output gradient
is packed the same way with zeros in those columns and a border of KP - 1
(:func:`pack_images_kernel`), so the correlation reads zeros across each slot's edge.
``G`` depends on the slot width only, never on N: the row kernels compile their shapes
in, so a new batch size does not compile a new kernel.

The same packing with stride 1 (no phases: each image's padded planes side by side)
runs the fused groups' stride-1 convolutions on small maps: ``conv_small_maps.py``.

Grad-weight is not packed (``phase_layout(..., packed=False)``: G = 1): the fast
grad-weight sums each row in the data's type before its float64 partial sums, and a
packed float32 row would add several images' rows in float32
(tests/test_float64_partial_sums.py's cancelling gradients caught it). Packed, Tiny
VGG's two stride-2 grad-weights ran 1.5x and 2.3x faster (one thread, measured).

Shapes: x (N, C, H, W); w (F, C, KH, KW); out (N, F, OH, OW); KPH = ceil(KH / SH);
PH = OH + KPH - 1, PW = OW + KPW - 1; packed phases (ceil(N / G), SH * SW * C, PH,
G * PW); phase weights (F, SH * SW * C, KPH, KPW).
"""

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from numbacnn.kernels.cpu.conv_tuning import BUILT_KERNELS

# Packed rows hold about this many columns: 8 float32 vectors, enough that a row's
# per-channel set-up is a small part of it (Tiny VGG's 4x4 outputs: 25 images of
# 5-column slots per row), few enough that a batch of 64 rarely leaves a packed row
# mostly empty.
PACKED_ROW_COLUMNS = 128


def phase_kernel_size(kernel: int, stride: int) -> int:
    """KP = ceil(K / s): taps of each phase's kernel along one axis."""
    return -(-kernel // stride)


def images_per_row(slot_width: int) -> int:
    """G: images packed side by side in one row of slots ``slot_width`` columns wide."""
    return max(1, PACKED_ROW_COLUMNS // slot_width)


class PhaseLayout(NamedTuple):
    """The packed layout of one strided convolution (sizes as in the module docstring)."""

    split_h: int       # KPH: rows of each phase kernel
    split_w: int       # KPW: columns of each phase kernel
    phase_height: int  # PH = OH + KPH - 1: phase rows the output reads
    slot_width: int    # PW = OW + KPW - 1: phase columns the output reads, one image's slot
    group: int         # G: images side by side in a packed row
    packed_batch: int  # ceil(N / G): packed images
    phases: int        # SH * SW: phases of each input channel

    @property
    def packed_width(self) -> int:
        """G * PW: columns of a packed phase row."""
        return self.group * self.slot_width


def phase_layout(batch: int, out_height: int, out_width: int, kernel_h: int, kernel_w: int, stride_h: int,
                 stride_w: int, packed: bool = True) -> PhaseLayout:
    """The :class:`PhaseLayout` of a strided convolution with an (N, F, OH, OW) output
    (``packed=False``: one image a row, G = 1)."""
    split_h, split_w = phase_kernel_size(kernel_h, stride_h), phase_kernel_size(kernel_w, stride_w)
    slot_width = out_width + split_w - 1
    group = images_per_row(slot_width) if packed else 1
    return PhaseLayout(split_h, split_w, out_height + split_h - 1, slot_width, group, -(-batch // group),
                       stride_h * stride_w)


# The copy kernels below are built per layer: slot width, images per row, strides and
# padding compiled in, like the row kernels' shapes. With run-time values, an index such
# as ``q * stride_w + b - pad_w`` might be negative as far as Numba knows, so every index
# got a wrap-around test, and the short copies (a phase row of an image: 7 or 2 columns
# in Tiny VGG) ran through loops of run-time length: with the slot width and group
# only compiled in, packing Tiny VGG's stride-2 inputs took 0.060 (28x28, C = 1) and
# 0.055 ms (7x7, C = 10); with strides and padding too, 0.028 and 0.028 (one thread,
# measured). An earlier version with every size at run time copied packed 14x14 outputs
# 2.1x slower, 4x4 ones 3.1x.

def _phase_columns(in_width: int, slot_width: int, stride_w: int, pad_w: int, b: int) -> tuple[int, int, int]:
    """(first_q, count, first_col): the phase columns q = first_q .. first_q + count - 1
    of column phase ``b`` whose input column ``q * SW + b - pad_w`` lies inside x (the
    others are padding), and the first of those input columns."""
    first_q = max(0, (pad_w - b + stride_w - 1) // stride_w)
    end_q = min(slot_width, (in_width - 1 + pad_w - b) // stride_w + 1)
    return first_q, max(0, end_q - first_q), first_q * stride_w + b - pad_w


_phase_columns_jit = njit(inline="always")(_phase_columns)


@lru_cache(maxsize=None)
def pack_phases_kernel(slot_width: int, group: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int):
    """``pack_phases(packed, x)``::

        packed[g, (a * SW + b) * C + c, i, j * PW + q] = x[g * G + j, c, i * SH + a - pad_h, q * SW + b - pad_w]

    (PW = ``slot_width``, G = ``group``), zero where that is outside x (the padding)
    or the image is past the last. Every element written once; parallel over (packed
    image, channel): each task writes its phase rows, one image's slot at a time (the
    columns inside x copied, the padding's zeroed), then the empty slots."""

    @njit(parallel=True, cache=True)
    def pack_phases(packed, x):
        batch, channels, in_height, in_width = x.shape
        packed_batch, _, phase_height, packed_width = packed.shape
        for task in prange(packed_batch * channels):
            g = task // channels
            c = task % channels
            images = min(group, batch - g * group)
            for a in range(stride_h):
                for b in range(stride_w):
                    k = (a * stride_w + b) * channels + c
                    first_q, count, first_col = _phase_columns_jit(in_width, slot_width, stride_w, pad_w, b)
                    for i in range(phase_height):
                        row = packed[g, k, i]
                        ih = i * stride_h + a - pad_h
                        filled = 0  # columns of row written from x
                        if 0 <= ih < in_height:
                            filled = images * slot_width
                            for j in range(images):
                                src = x[g * group + j, c, ih]
                                start = j * slot_width
                                for q in range(first_q):
                                    row[start + q] = 0
                                for q in range(count):
                                    row[start + first_q + q] = src[first_col + q * stride_w]
                                for q in range(first_q + count, slot_width):
                                    row[start + q] = 0
                        for col in range(filled, packed_width):
                            row[col] = 0

    BUILT_KERNELS.append(pack_phases)
    return pack_phases


@lru_cache(maxsize=None)
def merge_phases_kernel(slot_width: int, group: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int):
    """``merge_phases(dx, dphases)``, the inverse of :func:`pack_phases_kernel`'s copy::

        dx[n, c, h, w] = dphases[g, (a * SW + b) * C + c, i, j * PW + q]
        for n = g * G + j, h + pad_h = i * SH + a, w + pad_w = q * SW + b

    and zero where (i, q) lies past the phases (an input element no output reads).
    Every element written; parallel over (packed image, channel): each task zeroes its
    dx planes, then copies each image's slot of each phase row back."""

    @njit(parallel=True, cache=True)
    def merge_phases(dx, dphases):
        batch, channels, in_height, in_width = dx.shape
        packed_batch, phase_height = dphases.shape[0], dphases.shape[2]
        for task in prange(packed_batch * channels):
            g = task // channels
            c = task % channels
            images = min(group, batch - g * group)
            for j in range(images):
                for h in range(in_height):
                    for w in range(in_width):
                        dx[g * group + j, c, h, w] = 0
            for a in range(stride_h):
                for b in range(stride_w):
                    k = (a * stride_w + b) * channels + c
                    first_q, count, first_col = _phase_columns_jit(in_width, slot_width, stride_w, pad_w, b)
                    for i in range(phase_height):
                        h = i * stride_h + a - pad_h
                        if 0 <= h < in_height:
                            row = dphases[g, k, i]
                            for j in range(images):
                                dst = dx[g * group + j, c, h]
                                start = j * slot_width + first_q
                                for q in range(count):
                                    dst[first_col + q * stride_w] = row[start + q]

    BUILT_KERNELS.append(merge_phases)
    return merge_phases


@lru_cache(maxsize=None)
def pack_images_kernel(top: int, left: int, slot_width: int, group: int, width: int):
    """``pack_images(packed, src)``: src (N, C, H, ``width``) side by side::

        packed[g, c, top + i, left + j * slot_width + q] = src[g * G + j, c, i, q]

    and every other element zero (the border, each slot's columns past ``width``, the
    slots past the last image). Parallel over (packed image, channel)."""

    @njit(parallel=True, cache=True)
    def pack_images(packed, src):
        batch, channels, height = src.shape[0], src.shape[1], src.shape[2]
        packed_batch, _, packed_height, packed_width = packed.shape
        for task in prange(packed_batch * channels):
            g = task // channels
            c = task % channels
            for row in range(packed_height):
                for col in range(packed_width):
                    packed[g, c, row, col] = 0
            for j in range(min(group, batch - g * group)):
                for i in range(height):
                    for q in range(width):
                        packed[g, c, top + i, left + j * slot_width + q] = src[g * group + j, c, i, q]

    BUILT_KERNELS.append(pack_images)
    return pack_images


@lru_cache(maxsize=None)
def unpack_images_kernel(slot_width: int, group: int, width: int):
    """``unpack_images(dst, packed)``: each image's slot of a packed output, its columns
    past ``width`` dropped::

        dst[g * G + j, c, i, q] = packed[g, c, i, j * slot_width + q]     q < width

    Every element of dst (N, C, H, ``width``) written; parallel over (packed image,
    channel)."""

    @njit(parallel=True, cache=True)
    def unpack_images(dst, packed):
        batch, height = dst.shape[0], dst.shape[2]
        packed_batch, channels = packed.shape[0], packed.shape[1]
        for task in prange(packed_batch * channels):
            g = task // channels
            c = task % channels
            for j in range(min(group, batch - g * group)):
                for i in range(height):
                    for q in range(width):
                        dst[g * group + j, c, i, q] = packed[g, c, i, j * slot_width + q]

    BUILT_KERNELS.append(unpack_images)
    return unpack_images


def phase_weights(w: np.ndarray, stride_h: int, stride_w: int) -> np.ndarray:
    """(F, SH * SW * C, KPH, KPW): w (F, C, KH, KW) split by tap phase,
    ``[f, (a * SW + b) * C + c, i, j] = w[f, c, i * SH + a, j * SW + b]``, zero past the
    kernel."""
    filters, channels, kernel_h, kernel_w = w.shape
    split_h, split_w = phase_kernel_size(kernel_h, stride_h), phase_kernel_size(kernel_w, stride_w)
    split = np.zeros((filters, stride_h, stride_w, channels, split_h, split_w), w.dtype)
    for a in range(stride_h):
        for b in range(stride_w):
            taps = w[:, :, a::stride_h, b::stride_w]  # (F, C, <= KPH, <= KPW)
            split[:, a, b, :, :taps.shape[2], :taps.shape[3]] = taps
    return split.reshape(filters, stride_h * stride_w * channels, split_h, split_w)


def merge_phase_weights(dw: np.ndarray, dsplit: np.ndarray, stride_h: int, stride_w: int) -> None:
    """dw (F, C, KH, KW) = the taps of dsplit (F, SH * SW * C, KPH, KPW) put back where
    :func:`phase_weights` took them (its zero taps past the kernel dropped)."""
    filters, channels = dw.shape[0], dw.shape[1]
    split = dsplit.reshape(filters, stride_h, stride_w, channels, dsplit.shape[2], dsplit.shape[3])
    for a in range(stride_h):
        for b in range(stride_w):
            taps = dw[:, :, a::stride_h, b::stride_w]
            taps[...] = split[:, a, b, :, :taps.shape[2], :taps.shape[3]]
