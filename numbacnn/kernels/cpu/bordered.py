"""Kernels that move data into, out of and between zero-bordered buffers (see
``conv_rows.py`` for why the fast path keeps its activations and gradients in them):
the padded copy of an input, the ReLU mask and the 2x2 pool's backward written
straight into a bordered gradient, interior copies. Borders are compile-time
constants of each kernel (a run-time offset stops LLVM vectorising).
"""

from functools import lru_cache

import numpy as np
from numba import njit, prange

from numbacnn.kernels.common import FASTMATH
from numbacnn.kernels.cpu.conv_tuning import BUILT_KERNELS


@njit(parallel=True, cache=True)
def pad_images(padded, src, pad_top, pad_left):
    """padded (N, C, H + pad_top + pad_bottom, W + pad_left + pad_right) = src (N, C, H, W)
    with zeros around it (a copy the fast kernels read instead of testing every tap)."""
    batch, channels, padded_height, padded_width = padded.shape
    in_height, in_width = src.shape[2], src.shape[3]
    for plane in prange(batch * channels):
        n = plane // channels
        c = plane % channels
        for row in range(padded_height):
            src_row = row - pad_top
            if src_row < 0 or src_row >= in_height:
                for col in range(padded_width):
                    padded[n, c, row, col] = 0
                continue
            for col in range(pad_left):
                padded[n, c, row, col] = 0
            for col in range(in_width):
                padded[n, c, row, pad_left + col] = src[n, c, src_row, col]
            for col in range(pad_left + in_width, padded_width):
                padded[n, c, row, col] = 0


@njit(inline="always")
def store_plane(dst, n, c, top, left, plane, height, width):
    """dst[n, c]'s interior at (top, left), (height, width), = plane, the same values
    flat in row-major order (a plane built in a local buffer, in L1). Inlined into
    kernels whose offsets are compile-time constants, so the row loop vectorises.
    Numba's disk cache knows only the calling kernel's file: after editing this
    function, remove the ``__pycache__`` of ``norm.py``'s kernels too."""
    for h in range(height):
        for w in range(width):
            dst[n, c, top + h, left + w] = plane[h * width + w]


@lru_cache(maxsize=None)
def max_pool2x2_relu_backward_kernel(gz_top, gz_left, pooled_top, pooled_left, second_top=-1, second_left=-1):
    """The 2x2 / stride-2 pool's backward from saved indices, times the ReLU mask.

    ``pool_relu_backward(gz, gp, indices, pooled)``, the borders compiled in::

        gz       bordered (N, C, OH + 2*gz_top, OW + 2*gz_left): interior written
        gp       (N, C, PH, PW)  gradient of the pooled output
        indices  (N, C, PH, PW)  int64 flat ``row * OW + col`` of each window's maximum
        pooled   bordered (N, C, ...): the pooled output, interior at (pooled_top, pooled_left)
        second   with second_top >= 0: a second bordered destination, interior at
                 (second_top, second_left), written with the same values as gz's

    The ReLU mask is needed only where the gradient lands, at the window's maximum
    y[index], and that is the pooled value itself: ``y[index] > 0`` exactly when
    ``pooled > 0`` (NaN: both False). So y is not read. Each plane's gradient is built
    in a local zeroed plane (it stays in L1: each window's gradient stored at its
    flat index, no division), then copied row by row into gz (and second). Storing
    straight into gz's zeroed rows compiled, at 512 bits, to slow vector scatters:
    alone, 64x10x28x28 0.097 ms now against 0.185, 14x14 0.028 against 0.078 (2
    threads, measured); in whole training steps the two versions took the same time.
    Parallel over (image, channel) planes.
    """

    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def pool_relu_backward(gz, gp, indices, pooled, second):
        batch, channels, pool_height, pool_width = gp.shape
        out_height = gz.shape[2] - 2 * gz_top
        out_width = gz.shape[3] - 2 * gz_left
        size = out_height * out_width
        for plane in prange(batch * channels):
            n = plane // channels
            c = plane % channels
            plane_gradient = np.zeros(size, gz.dtype)
            for ph in range(pool_height):
                for pw in range(pool_width):
                    if pooled[n, c, pooled_top + ph, pooled_left + pw] > 0:
                        plane_gradient[indices[n, c, ph, pw]] = gp[n, c, ph, pw]
            store_plane(gz, n, c, gz_top, gz_left, plane_gradient, out_height, out_width)
            if second_top >= 0:
                store_plane(second, n, c, second_top, second_left, plane_gradient, out_height, out_width)

    BUILT_KERNELS.append(pool_relu_backward)
    return pool_relu_backward


@lru_cache(maxsize=None)
def relu_mask_bordered_kernel(gz_top, gz_left, y_top=0, y_left=0):
    """``relu_mask(gz, gy, y)``: gz's interior (at gz_top, gz_left, compiled in) = gy
    where y > 0, else 0; gy (N, C, OH, OW), y its ReLU output: plain, or a bordered
    buffer with its interior at (y_top, y_left). gz may be gy itself (plain, in place)."""

    @njit(parallel=True, cache=True)
    def relu_mask(gz, gy, y):
        batch, channels, out_height, out_width = gy.shape
        zero = gz.dtype.type(0)
        for plane in prange(batch * channels):
            n = plane // channels
            c = plane % channels
            for oh in range(out_height):
                for ow in range(out_width):
                    gz[n, c, gz_top + oh, gz_left + ow] = (gy[n, c, oh, ow] if y[n, c, y_top + oh, y_left + ow] > 0
                                                           else zero)

    BUILT_KERNELS.append(relu_mask)
    return relu_mask


@lru_cache(maxsize=None)
def copy_into_border_kernel(top, left):
    """``copy(padded, x)``: padded's interior at (top, left), compiled in, = x (N, C, H, W);
    the border is left as it is (zero)."""

    @njit(parallel=True, cache=True)
    def copy(padded, x):
        batch, channels, height, width = x.shape
        for plane in prange(batch * channels):
            n = plane // channels
            c = plane % channels
            for row in range(height):
                for col in range(width):
                    padded[n, c, top + row, left + col] = x[n, c, row, col]

    BUILT_KERNELS.append(copy)
    return copy


@lru_cache(maxsize=None)
def copy_interior_kernel(src_top, src_left, dst_top, dst_left):
    """``copy(dst, src)``: dst's interior = src's interior, two bordered buffers around
    the same (N, C, H, W) (H, W from dst's shape and its border); borders compiled in."""

    @njit(parallel=True, cache=True)
    def copy(dst, src):
        batch, channels = dst.shape[0], dst.shape[1]
        height = dst.shape[2] - 2 * dst_top
        width = dst.shape[3] - 2 * dst_left
        for plane in prange(batch * channels):
            n = plane // channels
            c = plane % channels
            for row in range(height):
                for col in range(width):
                    dst[n, c, dst_top + row, dst_left + col] = src[n, c, src_top + row, src_left + col]

    BUILT_KERNELS.append(copy)
    return copy


@lru_cache(maxsize=None)
def relu_into_border_kernel(top, left, width):
    """``relu(out, z)``: out's interior at (top, left) = relu(z), z (N, C, H, W) with W =
    ``width``; a NaN passes (``not z <= 0``), -0.0 becomes +0.0, as ``F.relu``. A strided
    block's ReLU without batch norm or pool, straight into the next block's padded input.

    The row width is compiled in as well as the border: Tiny VGG's strided layers have
    14- and 4-column rows, shorter than one 16-float vector, and with a run-time width
    every element went through the loop's scalar remainder (64 x 10 x 14 x 14: 73 us
    against 23, 2 threads, measured). Parallel over images."""

    @njit(parallel=True, cache=True)
    def relu(out, z):
        batch, channels, height = z.shape[0], z.shape[1], z.shape[2]
        zero = out.dtype.type(0)
        for n in prange(batch):
            for c in range(channels):
                for row in range(height):
                    for col in range(width):
                        value = z[n, c, row, col]
                        out[n, c, top + row, left + col] = value if not value <= 0 else zero

    BUILT_KERNELS.append(relu)
    return relu
