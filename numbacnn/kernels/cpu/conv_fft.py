"""Convolution by the 2-D discrete Fourier transform: far fewer multiply-adds for 5x5 and 7x7.

A stride-1 correlation of C input planes with F x C kernels of K x K taps costs
F * C * K * K multiply-adds per output pixel. Transformed, it costs a product per
frequency: with every plane zero-extended to N x N (N a power of two), the
correlation is a *circular* convolution, and the DFT turns that into an elementwise
product (the convolution theorem)::

    Y[f] = sum over c of  W[f, c] * X[c]          (complex, per frequency (v, u))

so the sum over input channels costs 4 real multiply-adds per frequency instead of
K * K per pixel. Tiny VGG's 28x28 10 -> 10 layer with 7x7 kernels: 544 frequencies
(real planes need only N // 2 + 1 of the N columns) against 784 pixels x 49 taps.
The transforms (C forward, F inverse per image, radix-2 FFTs: 5 * N * log2(N)
flops per line) cost less than the products they replace.

Why it is exact (up to rounding): ``y[i] = sum over k of x[i + k - p] * w[k]`` (one
axis; p the padding, x the unpadded plane) reads x at -p .. H + p - 1. Placed at
0 .. H - 1 of a length-N line of zeros, the circular index i + k - p mod N lands on
a zero wherever the padded input is zero as long as N >= H + p (:func:`numbacnn.shapes.fft_size`;
and N >= K, for the kernel's taps), so the circular convolution with the flipped, wrapped kernel
``w'[(p - k) mod N] = w[k]`` *is* the correlation. The input gradient is the
correlation of the output gradient with w', ``GX = GZ * conj(W')``, on the same N.

Images in the vector lanes: every array here keeps the batch last, (C, N, U, B)
with U = N // 2 + 1, so every butterfly and every product is a loop over B
contiguous values (4 float32 vectors of 512 bits at batch 64); no transform
shuffles within a vector. Rows (the first frequency axis) stay in bit-reversed
order between the forward and the inverse transform (a decimation-in-frequency FFT
leaves them so, a decimation-in-time one takes them so), since the products are
elementwise: no permutation pass. Two real rows share one complex FFT (one as the
real part, one as the imaginary part) and are separated by symmetry.

Rounding: float32 transforms of N = 32 lose about log2(N) roundings per value;
Tiny VGG's 7x7 forward is within 2e-7 of the largest output (float64 reference),
against 1e-6 for the direct sums. The weight gradient is *not* computed here: its
sum over the batch keeps float64 partial sums (``tests/test_float64_partial_sums.py``),
which transforms of float32 planes would not honour.

A NaN or Inf in an input plane reaches every output of its image that its channel's
spectrum feeds (the transforms mix a whole plane), never another image's; the direct
kernels keep it to the outputs whose window holds it.

Where it pays: with Tiny VGG's 10 channels the transforms cost about as much as the
products they save, so only the 28x28 7x7 layer gains (the whole 7x7 training step
7-9% faster, measured in one process alternating with the direct kernels); the 5x5
layers lose to 1-D Winograd F(4, 5) (the 5x5 step 1.4x slower with them) and 14x14
maps need N = 32 for 17 values. ``conv_tuning.fft_size_for`` is the rule;
``numbacnn info --kernels`` prints where it applies. ``fused/bordered_ops.py`` calls
these for the forward and the input gradient; the direct kernels of ``conv_rows.py``
stay the definition they are tested against (``tests/test_conv_fft.py``).
``benchmarks/probes/fft_conv.py`` times each part.
"""

from functools import lru_cache

import numpy as np
from numba import njit, prange

from numbacnn.kernels.common import FASTMATH

# No 'reassoc': the butterflies need no reordering to vectorise (their loops run over
# the images), and without it a kernel compiled in this process and one loaded from the
# disk cache round alike (see conv_tuning.forward_fastmath).
_FASTMATH = FASTMATH - {"reassoc"}


@lru_cache(maxsize=None)
def twiddles(n: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cos, sin, bit_reversed): ``exp(-2 pi i k / n) = cos[k] + i sin[k]`` for k < n // 2,
    in ``dtype`` (computed in float64), and the int64 bit reversal of 0 .. n - 1 (where a
    decimation-in-frequency FFT leaves frequency k)."""
    k = np.arange(n // 2)
    angle = -2.0 * np.pi * k / n
    bits = n.bit_length() - 1
    reversed_index = np.array([int(format(i, f"0{bits}b")[::-1], 2) if bits else 0 for i in range(n)], np.int64)
    return np.cos(angle).astype(dtype), np.sin(angle).astype(dtype), reversed_index


@njit(inline="always", fastmath=_FASTMATH)
def _fft_in_place(re, im, cos, sin):
    """Forward FFT (decimation in frequency) down axis 0 of re, im (n, L), every column
    at once: natural order in, frequencies in bit-reversed order out (unscaled,
    ``exp(-2 pi i jk / n)``)."""
    n, lanes = re.shape
    half, stride = n // 2, 1
    while half >= 1:
        for start in range(0, n, 2 * half):
            for k in range(half):
                c, s = cos[k * stride], sin[k * stride]
                a_re, a_im = re[start + k], im[start + k]
                b_re, b_im = re[start + k + half], im[start + k + half]
                for lane in range(lanes):
                    d_re = a_re[lane] - b_re[lane]
                    d_im = a_im[lane] - b_im[lane]
                    a_re[lane] += b_re[lane]
                    a_im[lane] += b_im[lane]
                    b_re[lane] = d_re * c - d_im * s
                    b_im[lane] = d_re * s + d_im * c
        half //= 2
        stride *= 2


@njit(inline="always", fastmath=_FASTMATH)
def _inverse_fft_in_place(re, im, cos, sin):
    """Inverse FFT (decimation in time) down axis 0 of re, im (n, L): frequencies in
    bit-reversed order in, natural order out (unscaled, ``exp(+2 pi i jk / n)``)."""
    n, lanes = re.shape
    half, stride = 1, n // 2
    while half < n:
        for start in range(0, n, 2 * half):
            for k in range(half):
                c, s = cos[k * stride], -sin[k * stride]  # the conjugate twiddle
                a_re, a_im = re[start + k], im[start + k]
                b_re, b_im = re[start + k + half], im[start + k + half]
                for lane in range(lanes):
                    t_re = b_re[lane] * c - b_im[lane] * s
                    t_im = b_re[lane] * s + b_im[lane] * c
                    b_re[lane] = a_re[lane] - t_re
                    b_im[lane] = a_im[lane] - t_im
                    a_re[lane] += t_re
                    a_im[lane] += t_im
        half *= 2
        stride //= 2


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def spectra(out_re, out_im, x, top, left, height, width, cos, sin, bit_reversed):
    """The 2-D DFT of each zero-extended plane, images in the lanes.

    Parameters
    ----------
    out_re, out_im : (C, N, U, B), U = N // 2 + 1
        Written: frequency (v, u) of image b's plane c at [c, v', u, b], v' the bit
        reversal of v (rows stay so until :func:`planes`); u natural.
    x : (B, C, *, *)
        The planes are x[:, :, top:top + height, left:left + width] (a bordered
        buffer's interior), placed at the top left of N x N zeros.
    cos, sin, bit_reversed : :func:`twiddles` (N, x.dtype)
    """
    batch, channels = x.shape[0], x.shape[1]
    n, columns = out_re.shape[1], out_re.shape[2]
    zero = x.dtype.type(0)
    half = x.dtype.type(0.5)
    for c in prange(channels):
        line_re = np.empty((n, batch), x.dtype)  # two rows of the plane along x's width
        line_im = np.empty((n, batch), x.dtype)
        for row in range(0, n, 2):
            if row >= height:  # zero rows: zero spectra
                for u in range(columns):
                    for b in range(batch):
                        out_re[c, row, u, b] = zero
                        out_im[c, row, u, b] = zero
                        out_re[c, row + 1, u, b] = zero
                        out_im[c, row + 1, u, b] = zero
                continue
            # rows `row` and `row + 1` as the real and imaginary parts of one line
            for col in range(n):
                for b in range(batch):
                    line_re[col, b] = zero
                    line_im[col, b] = zero
            for b in range(batch):
                for col in range(width):
                    line_re[col, b] = x[b, c, top + row, left + col]
                if row + 1 < height:
                    for col in range(width):
                        line_im[col, b] = x[b, c, top + row + 1, left + col]
            _fft_in_place(line_re, line_im, cos, sin)
            # Z = X1 + i X2 with X1, X2 the spectra of real lines, so X1[u] = (Z[u] + conj Z[n - u]) / 2
            # and X2[u] = (Z[u] - conj Z[n - u]) / 2i; Z[u] lies at bit_reversed[u]
            for u in range(columns):
                at, mirror = bit_reversed[u], bit_reversed[(n - u) % n]
                for b in range(batch):
                    z_re, z_im = line_re[at, b], line_im[at, b]
                    m_re, m_im = line_re[mirror, b], line_im[mirror, b]
                    out_re[c, row, u, b] = (z_re + m_re) * half
                    out_im[c, row, u, b] = (z_im - m_im) * half
                    out_re[c, row + 1, u, b] = (z_im + m_im) * half
                    out_im[c, row + 1, u, b] = (m_re - z_re) * half
        # then down the columns, all (u, b) at once
        _fft_in_place(out_re[c].reshape(n, columns * batch), out_im[c].reshape(n, columns * batch), cos, sin)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def products(out_re, out_im, x_re, x_im, w_re, w_im, conjugate_transposed):
    """Per frequency and image, the sum over input planes of kernel spectrum x plane spectrum.

    Parameters
    ----------
    out_re, out_im : (F_out, N, U, B), written
    x_re, x_im : (C_in, N, U, B)
        Spectra (:func:`spectra`).
    w_re, w_im : (C, N, U, F)
        The wrapped kernels' spectra (:func:`spectra` of the weights, filters in the
        lanes).
    conjugate_transposed : bool
        False (forward): ``out[f] = sum over c of W[f, c] X[c]`` (C_in = C, F_out = F).
        True (input gradient): ``out[c] = sum over f of conj(W[f, c]) X[f]``
        (C_in = F, F_out = C).
    """
    planes_out, n, columns, batch = out_re.shape
    planes_in = x_re.shape[0]
    zero = out_re.dtype.type(0)
    for task in prange(planes_out * n):
        o, v = task // n, task % n
        for u in range(columns):
            acc_re, acc_im = out_re[o, v, u], out_im[o, v, u]
            for b in range(batch):
                acc_re[b] = zero
                acc_im[b] = zero
            for i in range(planes_in):
                if conjugate_transposed:  # W[f = i, c = o], conjugated
                    a, s = w_re[o, v, u, i], -w_im[o, v, u, i]
                else:  # W[f = o, c = i]
                    a, s = w_re[i, v, u, o], w_im[i, v, u, o]
                p_re, p_im = x_re[i, v, u], x_im[i, v, u]
                for b in range(batch):
                    acc_re[b] += a * p_re[b] - s * p_im[b]
                    acc_im[b] += a * p_im[b] + s * p_re[b]


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def planes(out, top, left, also, also_top, also_left, mask, mask_top, mask_left, spectra_re, spectra_im, bias,
           cos, sin, bit_reversed, store_twice, masked):
    """The inverse 2-D DFT of each spectrum, cropped, into (bordered) planes.

    Parameters
    ----------
    out : (B, P, *, *)
        Written: out[:, :, top:top + OH, left:left + OW] = the top left OH x OW of each
        real plane (scaled by 1 / N**2) + bias[p], and, ``masked``, zero where
        ``mask[:, :, mask_top + i, mask_left + j] <= 0`` (a ReLU output: the gradient
        of that ReLU's input). OH, OW are out's interior: out.shape[2] - 2 * top and
        out.shape[3] - 2 * left.
    also, also_top, also_left : written the same when ``store_twice``
    spectra_re, spectra_im : (P, N, U, B), rows in bit-reversed order (:func:`products`);
        overwritten (the rows' inverse is done in place).
    bias : (P,)
    """
    batch, count = out.shape[0], out.shape[1]
    out_h, out_w = out.shape[2] - 2 * top, out.shape[3] - 2 * left
    n, columns = spectra_re.shape[1], spectra_re.shape[2]
    scale = out.dtype.type(1.0 / (n * n))
    zero = out.dtype.type(0)
    for p in prange(count):
        # down the columns first (rows back to natural order), all (u, b) at once
        _inverse_fft_in_place(spectra_re[p].reshape(n, columns * batch), spectra_im[p].reshape(n, columns * batch),
                              cos, sin)
        line_re = np.empty((n, batch), out.dtype)
        line_im = np.empty((n, batch), out.dtype)
        for row in range(0, out_h, 2):
            # the spectra of rows `row` (Y1) and `row + 1` (Y2) as one line Z = Y1 + i Y2, whose
            # inverse has row `row` as real part and `row + 1` as imaginary part; each row's
            # spectrum is Hermitian: Y[n - u] = conj Y[u]; Z[u] goes to bit_reversed[u]
            for u in range(n):
                at = bit_reversed[u]
                source = u if u < columns else n - u
                y1_re, y1_im = spectra_re[p, row, source], spectra_im[p, row, source]
                y2_re, y2_im = spectra_re[p, row + 1, source], spectra_im[p, row + 1, source]
                if u < columns:
                    for b in range(batch):
                        line_re[at, b] = y1_re[b] - y2_im[b]
                        line_im[at, b] = y1_im[b] + y2_re[b]
                else:
                    for b in range(batch):
                        line_re[at, b] = y1_re[b] + y2_im[b]
                        line_im[at, b] = y2_re[b] - y1_im[b]
            _inverse_fft_in_place(line_re, line_im, cos, sin)
            pair = 2 if row + 1 < out_h else 1
            for r in range(pair):
                line = line_re if r == 0 else line_im
                for b in range(batch):
                    for col in range(out_w):
                        value = line[col, b] * scale + bias[p]
                        if masked and not mask[b, p, mask_top + row + r, mask_left + col] > zero:
                            value = zero
                        out[b, p, top + row + r, left + col] = value
                        if store_twice:
                            also[b, p, also_top + row + r, also_left + col] = value
