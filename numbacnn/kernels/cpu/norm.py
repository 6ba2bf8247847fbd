"""Batch normalisation on the CPU: the readable kernels, then the fused wing's variants.

The definition (``numbacnn.functional.batch_norm`` and ``BatchNorm2d`` run these) views
x as (N, C, L), one channel per parallel iteration, and sums in float64 in the order
of the loops, for both dtypes:

- :func:`batch_norm_stats`: each channel's mean and 1 / sqrt(var + eps), and the
  running statistics' update;
- :func:`batch_norm_forward`: y = (x - mean) * invstd * weight + bias;
- :func:`batch_norm_backward`: the weight, bias and input gradients.

Fast variants (the fused wing's ``Conv2d -> BatchNorm2d -> ReLU (-> MaxPool2d)`` blocks,
``numbacnn/fused``; CPU only)
------------------------------------------------------------------------------------
=====================================  ==================================  ====================================
variant                                runs when                           tested against
=====================================  ==================================  ====================================
:func:`batch_norm_stats_planes`        a fused block's batch statistics    :func:`batch_norm_stats` and float64
                                       (training)                          (tests/test_fusion_batch_norm.py)
:func:`batch_norm_relu_kernel`         normalise + ReLU into the next      ``relu(batch_norm(z))``, the same
                                       block's bordered input (no pool)    file
:func:`batch_norm_relu_pool2x2_kernel` normalise + ReLU + 2x2 max pool     ``max_pool2d(relu(batch_norm(z)))``
                                       with argmax indices                 with indices, bit for bit
:func:`batch_norm_backward_bordered_   the backward, written into the      :func:`batch_norm_backward` and
kernel`                                conv's bordered output gradient     finite differences
:func:`batch_norm_pool2x2_backward_    the pool's backward (ReLU mask)     the pool backward kernel, then the
bordered_kernel`                       and the batch norm's, in one        one above; the float64 chain
=====================================  ==================================  ====================================

Where the fast variants differ from the definition:

- Sums. Each (image, channel) plane is summed in float64 in a vectorised order
  ('reassoc'), then the planes in image order. The statistics take each plane's sum
  of squared deviations from its own mean and combine them exactly (the two-pass
  variance's identity, :func:`batch_norm_stats_planes`); the pooled backward sums
  only the windows' maxima, where gy is not zero.
- The forward's per-element arithmetic is the definition's, expression for
  expression, and each value is rounded to the array's dtype before the ReLU and the
  pool compare it, as the layers do; so with the same statistics the forward
  outputs and pool indices are bit for bit the layers'.
- The backward's per-element pass, ``scale * gy + slope * (z - centre) + offset``
  (:func:`_backward_coefficients`), runs in the arrays' dtype (float32 vectors hold
  twice the lanes): a rounding of the gradient that the tests bound against float64,
  also with a mean far from zero.
(Scalar float64 sums, as the definition's, cost 2.2 ms of a 13 ms Tiny VGG step on
one thread; the planes' vectorised sums a fraction of that.)
"""

from functools import lru_cache

import numpy as np
from numba import literally, njit, prange

from numbacnn.kernels.common import FASTMATH, is_new_max
from numbacnn.kernels.cpu.bordered import store_plane
from numbacnn.kernels.cpu.conv_rows import POOL_WINDOWS_CHUNK  # the fused conv's pool: whole float32 vectors
from numbacnn.kernels.cpu.conv_tuning import BUILT_KERNELS


# --------------------------------------------------------------------------- #
# The definition
# --------------------------------------------------------------------------- #

@njit(parallel=True, cache=True)
def batch_norm_stats(mean, invstd, running_mean, running_var, x, eps, momentum, training, update):
    """Per channel: the statistics the forward normalises with, into mean and invstd
    (float64, (C,)). Training: the batch's mean and 1/sqrt(biased var + eps), and,
    when ``update``, running = (1 - momentum) * running + momentum * batch with the
    unbiased variance (PyTorch's rule). Eval: from the running statistics."""
    n_, c_, l_ = x.shape
    count = n_ * l_
    for c in prange(c_):
        if not training:
            mean[c] = running_mean[c]
            invstd[c] = 1.0 / (running_var[c] + eps) ** 0.5
            continue
        total = 0.0
        for n in range(n_):
            for i in range(l_):
                total += x[n, c, i]
        m = total / count
        squares = 0.0  # two passes: no cancellation from E[x^2] - E[x]^2
        for n in range(n_):
            for i in range(l_):
                d = x[n, c, i] - m
                squares += d * d
        _store_statistics(mean, invstd, running_mean, running_var, c, m, squares, count, eps, momentum, update)


@njit(inline="always")
def _store_statistics(mean, invstd, running_mean, running_var, c, m, squares, count, eps, momentum, update):
    """Channel c's mean, invstd and (``update``) running statistics from its mean m and
    sum of squared deviations (count values)."""
    mean[c] = m
    invstd[c] = 1.0 / (squares / count + eps) ** 0.5
    if update:
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * m
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * squares / (count - 1)


@njit(parallel=True, cache=True)
def batch_norm_forward(y, x, mean, invstd, weight, bias):
    """y = (x - mean) * invstd * weight + bias per channel; y, x (N, C, L)."""
    n_, c_, l_ = x.shape
    for c in prange(c_):
        scale = invstd[c] * weight[c]
        shift = bias[c] - mean[c] * scale
        for n in range(n_):
            for i in range(l_):
                y[n, c, i] = x[n, c, i] * scale + shift


@njit(parallel=True, cache=True)
def batch_norm_backward(gx, gweight, gbias, gy, x, mean, invstd, weight, training):
    """gweight = sum(gy * xhat), gbias = sum(gy); gx = weight * invstd * (gy - (sum(gy)
    + xhat * sum(gy * xhat)) / count) in training (the batch statistics depend on x),
    weight * invstd * gy in eval."""
    n_, c_, l_ = x.shape
    count = n_ * l_
    for c in prange(c_):
        sum_gy = 0.0
        sum_gy_xhat = 0.0
        for n in range(n_):
            for i in range(l_):
                g = gy[n, c, i]
                sum_gy += g
                sum_gy_xhat += g * (x[n, c, i] - mean[c]) * invstd[c]
        gweight[c] = sum_gy_xhat
        gbias[c] = sum_gy
        scale = weight[c] * invstd[c]
        for n in range(n_):
            for i in range(l_):
                g = gy[n, c, i]
                if training:
                    xhat = (x[n, c, i] - mean[c]) * invstd[c]
                    g = g - (sum_gy + xhat * sum_gy_xhat) / count
                gx[n, c, i] = scale * g


# --------------------------------------------------------------------------- #
# Fast variants for the fused wing (see the table above)
# --------------------------------------------------------------------------- #

@njit(parallel=True, cache=True, fastmath=FASTMATH)
def batch_norm_stats_planes(mean, invstd, running_mean, running_var, z, eps, momentum, update):
    """:func:`batch_norm_stats` in training mode; z (N, C, L).

    Parallel over (image, channel) planes, image by image, as the convolution that
    wrote z: each thread reads the planes it wrote, from its own cache, where a
    thread per channel read every image and half of them from the other core's
    (64x10x28x28 in a training step: 0.065 ms against 0.083, measured). Each plane's
    sum and sum of squared deviations from its own mean are taken in float64 (two
    passes over a plane that stays in L1, in whatever order LLVM vectorises,
    'reassoc'); then per channel, planes in image order, the mean and the sum of
    squared deviations from it, ``sum(squares_p + L * (mean_p - mean) ** 2)`` (the
    exact identity of the two-pass variance, no cancellation)."""
    n_, c_, l_ = z.shape
    count = n_ * l_
    plane_sums = np.empty((n_, c_), np.float64)
    plane_squares = np.empty((n_, c_), np.float64)
    for plane in prange(n_ * c_):
        n = plane // c_
        c = plane % c_
        plane_total = 0.0
        for i in range(l_):
            plane_total += z[n, c, i]
        plane_mean = plane_total / l_
        plane_deviations = 0.0
        for i in range(l_):
            deviation = z[n, c, i] - plane_mean
            plane_deviations += deviation * deviation
        plane_sums[n, c] = plane_total
        plane_squares[n, c] = plane_deviations
    for c in range(c_):
        total = 0.0
        for n in range(n_):
            total += plane_sums[n, c]
        m = total / count
        squares = 0.0
        for n in range(n_):
            d = plane_sums[n, c] / l_ - m
            squares += plane_squares[n, c] + l_ * d * d
        _store_statistics(mean, invstd, running_mean, running_var, c, m, squares, count, eps, momentum, update)


@lru_cache(maxsize=None)
def batch_norm_relu_kernel(out_top, out_left):
    """``normalise_relu(out, z, scale, shift)``: out's interior at (out_top, out_left)
    (N, C, H, W) = relu(z * scale[c] + shift[c]), z (N, C, H, W); scale = weight *
    invstd and shift = bias - mean * scale in float64 (:func:`batch_norm_forward`'s
    expression). Parallel over (image, channel) planes. Offsets compiled in, as in
    ``bordered.py``."""
    @njit(parallel=True, cache=True)
    def normalise_relu(out, z, scale, shift):
        batch, channels, height, width = z.shape
        zero = out.dtype.type(0)
        for plane in prange(batch * channels):
            n = plane // channels
            c = plane % channels
            row = np.empty(width, out.dtype)  # rounded to the dtype first, as batch_norm's output
            for h in range(height):
                for w in range(width):
                    row[w] = z[n, c, h, w] * scale[c] + shift[c]
                for w in range(width):
                    value = row[w]
                    out[n, c, out_top + h, out_left + w] = value if not value <= 0 else zero  # NaN passes

    BUILT_KERNELS.append(normalise_relu)
    return normalise_relu


@njit(cache=True, inline="never")
def _pool_row_pair(best_row, where_row, rows, top_left, width, windows):
    """The 2x2 windows over two ReLU'd rows: ``best_row[pw]`` the maximum of
    rows[0 or 1, 2 * pw or 2 * pw + 1], the first in row-major order (NaN wins,
    ``is_new_max``), ``where_row[pw]`` its flat index ``top_left + r * width + col``.

    rows (2, 2 * windows), ``windows`` a multiple of ``conv_rows.POOL_WINDOWS_CHUNK`` compiled in
    (``literally``): the loop runs over whole vectors with a constant trip count, with
    no remainder run one window at a time (the columns past the image are zeros, their
    windows dropped by the caller); with a run-time count it ran 0.5 ms slower per
    64x10x28x28 (one thread, measured). A separate function, as
    ``conv_rows._pool_task_rows``: LLVM vectorises the selects here."""
    literally(windows)
    for pw in range(windows):
        best = rows[0, 2 * pw]
        where = top_left + 2 * pw
        value = rows[0, 2 * pw + 1]
        take = is_new_max(value, best)
        best = value if take else best
        where = top_left + 2 * pw + 1 if take else where
        value = rows[1, 2 * pw]
        take = is_new_max(value, best)
        best = value if take else best
        where = top_left + width + 2 * pw if take else where
        value = rows[1, 2 * pw + 1]
        take = is_new_max(value, best)
        best = value if take else best
        where = top_left + width + 2 * pw + 1 if take else where
        best_row[pw] = best
        where_row[pw] = where


@lru_cache(maxsize=None)
def batch_norm_relu_pool2x2_kernel(pool_top, pool_left, width):
    """``normalise_relu_pool(pooled, indices, z, scale, shift)``: the 2x2 / stride-2 max
    pool of relu(z * scale[c] + shift[c]) (as :func:`batch_norm_relu_kernel`) into
    pooled's interior at (pool_top, pool_left), (N, C, H // 2, W // 2), and indices
    (same shape, int64) the flat ``row * W + col`` of each window's first maximum in
    row-major order (NaN wins, ``is_new_max``), as ``max_pool2d(..., return_indices=True)``.
    The normalised values are never stored: the backward needs only z, the pooled
    values (the ReLU mask where gradient lands) and the indices.

    Each row pair is normalised into a local (2, 2 * windows) buffer, ``windows`` the
    pooled width rounded up to ``conv_rows.POOL_WINDOWS_CHUNK``, and pooled by
    :func:`_pool_row_pair`. z's width W is compiled in only for that window count: the
    normalising loops run to z.shape[3], a run-time value on purpose. With W compiled
    in, LLVM unrolled them into scalar code, and the kernel took 1.03 ms against 0.3
    now (64x10x28x28, one thread, measured). Parallel over (image, channel) planes."""
    windows = (width // 2 + POOL_WINDOWS_CHUNK - 1) // POOL_WINDOWS_CHUNK * POOL_WINDOWS_CHUNK

    @njit(parallel=True, cache=True)
    def normalise_relu_pool(pooled, indices, z, scale, shift):
        batch, channels, height, z_width = z.shape  # z_width == width, read at run time (docstring)
        pooled_width = z_width // 2
        zero = pooled.dtype.type(0)
        for plane in prange(batch * channels):
            n = plane // channels
            c = plane % channels
            rows = np.zeros((2, 2 * windows), pooled.dtype)  # a window row pair, normalised and rounded to the dtype
            best_row = np.empty(windows, pooled.dtype)
            where_row = np.empty(windows, np.int64)
            channel_scale, channel_shift = scale[c], shift[c]
            for ph in range(height // 2):
                for r in range(2):
                    for w in range(z_width):
                        rows[r, w] = z[n, c, 2 * ph + r, w] * channel_scale + channel_shift
                    for w in range(z_width):
                        value = rows[r, w]
                        rows[r, w] = value if not value <= 0 else zero  # NaN passes, as relu
                _pool_row_pair(best_row, where_row, rows, 2 * ph * z_width, z_width, windows)
                for pw in range(pooled_width):
                    pooled[n, c, pool_top + ph, pool_left + pw] = best_row[pw]
                    indices[n, c, ph, pw] = where_row[pw]

    BUILT_KERNELS.append(normalise_relu_pool)
    return normalise_relu_pool


@njit(cache=True)
def _backward_coefficients(gweight, gbias, plane_g, plane_g_centred, mean, invstd, weight, plane_size):
    """The batch norm backward's per-channel numbers from its per-plane sums.

    plane_g, plane_g_centred (N, C) float64: each (image, channel) plane's sum of gy
    and of gy * (z - mean). Writes gweight = sum(gy * xhat) and gbias = sum(gy), (C,),
    summing the planes in image order; returns (scale, slope, centre, offset), (C,) in
    the arrays' dtype (gweight's), with which the input gradient is

        scale * gy + slope * (z - centre) + offset

    the definition's ``scale * (gy - (sum_gy + xhat * sum_gy_xhat) / count)``, xhat =
    (z - mean) * invstd, expanded: slope = -scale * invstd * sum_gy_xhat / count. centre
    is the mean rounded to the dtype and offset (taken in float64) carries the rest,
    ``-scale * sum_gy / count - slope * (mean - centre)``. Centring z before the
    multiply keeps the float32 pass accurate when the mean is large against the spread:
    ``slope * z + offset`` with the mean folded into offset cancelled two numbers of
    size |slope * mean| (relative error 1.6e-4 at mean / std = 50, 1.8e-3 at 500,
    against about 1e-5 centred; tests/test_fusion_batch_norm.py)."""
    batch, channels = plane_g.shape
    count = batch * plane_size
    scale, slope, centre, offset = (np.empty_like(gweight), np.empty_like(gweight), np.empty_like(gweight),
                                    np.empty_like(gweight))
    for c in range(channels):
        sum_gy = 0.0
        sum_gy_centred = 0.0
        for n in range(batch):
            sum_gy += plane_g[n, c]
            sum_gy_centred += plane_g_centred[n, c]
        sum_gy_xhat = sum_gy_centred * invstd[c]
        gweight[c] = sum_gy_xhat
        gbias[c] = sum_gy
        channel_scale = weight[c] * invstd[c]
        channel_slope = -channel_scale * invstd[c] * sum_gy_xhat / count
        scale[c] = channel_scale
        slope[c] = channel_slope
        centre[c] = mean[c]  # rounded to the dtype
        offset[c] = -channel_scale * sum_gy / count - channel_slope * (mean[c] - centre[c])
    return scale, slope, centre, offset


@lru_cache(maxsize=None)
def batch_norm_backward_bordered_kernel(g_top, g_left, also_top=-1, also_left=-1):
    """``backward(gz, also, gweight, gbias, gy, z, mean, invstd, weight)``: the training
    backward of :func:`batch_norm_backward` with its input gradient written into gz's
    interior at (g_top, g_left) (the conv's bordered output gradient) and, when
    ``also_top >= 0``, into also's interior at (also_top, also_left) too.

    gy, z (N, C, H, W) plain: the gradient at the batch norm's output (already through
    the ReLU mask) and its input (the conv output); mean, invstd (C,) float64 from the
    forward; weight (C,); gweight, gbias (C,) written.

    The two sums (of gy and of gy * (z - mean)) are taken per (image, channel) plane,
    in parallel over planes image by image (each thread reads the images the
    convolution before it wrote, from its own cache), in a vectorised order
    (float64); then per channel, planes in image order (:func:`_backward_coefficients`),
    the definition's ``scale * (gy - (sum_gy + xhat * sum_gy_xhat) / count)``, with
    scale = weight * invstd and xhat = (z - mean) * invstd, becomes the affine function
    of gy and z it is, ``scale * gy + slope * (z - centre) + offset`` (no division per
    element), applied plane by plane in the arrays' dtype.

    Both passes run along each plane as one flat run of H * W values (the gradient
    into a local plane, then copied into the bordered rows): along rows of 14 the
    loops ran scalar. 64x10x14x14: 0.037 ms against 0.081 row by row; 28x28: 0.19
    against 0.22, and 0.15 with the per-element pass in float32 rather than float64
    (2 threads, one process, measured)."""
    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def backward(gz, also, gweight, gbias, gy, z, mean, invstd, weight):
        batch, channels, height, width = z.shape
        size = height * width
        gy_planes = gy.reshape(batch, channels, size)
        z_planes = z.reshape(batch, channels, size)
        plane_g = np.empty((batch, channels), np.float64)
        plane_g_centred = np.empty((batch, channels), np.float64)
        for plane in prange(batch * channels):
            n = plane // channels
            c = plane % channels
            m = mean[c]
            total = 0.0
            centred = 0.0
            for i in range(size):
                g = gy_planes[n, c, i]
                total += g
                centred += g * (z_planes[n, c, i] - m)
            plane_g[n, c] = total
            plane_g_centred[n, c] = centred
        scale, slope, centre, offset = _backward_coefficients(gweight, gbias, plane_g, plane_g_centred, mean,
                                                              invstd, weight, size)
        for plane in prange(batch * channels):
            n = plane // channels
            c = plane % channels
            channel_scale, channel_slope, channel_centre, channel_offset = scale[c], slope[c], centre[c], offset[c]
            plane_gz = np.empty(size, gz.dtype)
            for i in range(size):
                plane_gz[i] = (channel_scale * gy_planes[n, c, i] + channel_slope * (z_planes[n, c, i] - channel_centre)
                               + channel_offset)
            store_plane(gz, n, c, g_top, g_left, plane_gz, height, width)
            if also_top >= 0:
                store_plane(also, n, c, also_top, also_left, plane_gz, height, width)

    BUILT_KERNELS.append(backward)
    return backward


@lru_cache(maxsize=None)
def batch_norm_pool2x2_backward_bordered_kernel(g_top, g_left, pooled_top, pooled_left, also_top=-1, also_left=-1):
    """``backward(gz, also, gweight, gbias, gp, indices, pooled, z, mean, invstd, weight)``:
    the 2x2 / stride-2 max pool's backward, the ReLU mask and the batch norm's training
    backward in one kernel, for a ``Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d`` block.

    The values of ``bordered.max_pool2x2_relu_backward_kernel`` into a plain gy, then
    :func:`batch_norm_backward_bordered_kernel`, up to rounding, without ever storing
    gy: after the pool, gy is zero but at each window's maximum, where it is the
    pooled gradient if the pooled value is > 0 (the ReLU mask, as the pool
    backward's). So

    - the two sums (of gy and of gy * (z - mean)) run over the windows, a quarter of
      the plane, reading z only at each window's maximum;
    - gz = ``slope * (z - centre) + offset`` everywhere (gy = 0 there: the
      ``scale * gy`` term is zero), plus ``scale * gy`` at the windows' maxima
      (:func:`_backward_coefficients`).

    gz: the conv's bordered output gradient, interior (N, C, H, W) at (g_top, g_left),
    written; ``also_top >= 0``: also's interior at (also_top, also_left) gets the same
    values. gp (N, C, H // 2, W // 2) the pooled output's gradient; indices (same
    shape, int64) the flat ``row * W + col`` of each window's maximum; pooled the
    pooled output, bordered, interior at (pooled_top, pooled_left); z (N, C, H, W) the
    conv output; mean, invstd (C,) float64 from the forward; weight (C,); gweight,
    gbias (C,) written.

    Deterministic: each (image, channel) plane's two sums run in one thread in a fixed
    (vectorised) order, float64, then each channel adds its planes in image order
    (:func:`_backward_coefficients`), whatever the thread count. Parallel over planes.
    Replaces two kernels and gy's round trip through memory: 0.20 ms against 0.40 for
    the two at 64x10x28x28 (2 threads, one process, measured when the two were the
    0.185 ms pool backward and the 0.22 ms batch norm backward; both are faster now).
    """
    @njit(parallel=True, cache=True, fastmath=FASTMATH)
    def backward(gz, also, gweight, gbias, gp, indices, pooled, z, mean, invstd, weight):
        batch, channels, height, width = z.shape
        pool_height, pool_width = gp.shape[2], gp.shape[3]
        planes = batch * channels
        z_planes = z.reshape(batch, channels, height * width)  # the indices are flat in a plane
        plane_g = np.empty((batch, channels), np.float64)
        plane_g_centred = np.empty((batch, channels), np.float64)
        zero = gz.dtype.type(0)
        for plane in prange(planes):
            n = plane // channels
            c = plane % channels
            m = mean[c]
            total = 0.0
            centred = 0.0
            for ph in range(pool_height):
                for pw in range(pool_width):
                    # the ReLU mask as a select, not a branch: the loop vectorises (2x faster, measured)
                    g = gp[n, c, ph, pw] if pooled[n, c, pooled_top + ph, pooled_left + pw] > 0 else zero
                    total += g
                    centred += g * (z_planes[n, c, indices[n, c, ph, pw]] - m)
            plane_g[n, c] = total
            plane_g_centred[n, c] = centred
        scale, slope, centre, offset = _backward_coefficients(gweight, gbias, plane_g, plane_g_centred, mean,
                                                              invstd, weight, height * width)
        for plane in prange(planes):
            n = plane // channels
            c = plane % channels
            channel_scale, channel_slope, channel_centre, channel_offset = scale[c], slope[c], centre[c], offset[c]
            # scale * gy, zero but at the windows' maxima, into a local plane (L1), then
            # the rest in one vectorised pass: fixing the maxima up in gz afterwards took
            # 4x as long (measured)
            plane_gz = np.zeros(height * width, gz.dtype)
            for ph in range(pool_height):
                for pw in range(pool_width):
                    if pooled[n, c, pooled_top + ph, pooled_left + pw] > 0:
                        plane_gz[indices[n, c, ph, pw]] = channel_scale * gp[n, c, ph, pw]
            for i in range(height * width):
                plane_gz[i] += channel_slope * (z_planes[n, c, i] - channel_centre) + channel_offset
            store_plane(gz, n, c, g_top, g_left, plane_gz, height, width)
            if also_top >= 0:
                store_plane(also, n, c, also_top, also_left, plane_gz, height, width)

    BUILT_KERNELS.append(backward)
    return backward
