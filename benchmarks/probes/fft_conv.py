"""Convolution by the 2-D FFT, tried in the fourteenth session for the 5x5 / 7x7 layers and
not kept (RESULTS.md, fourteenth session): the forward and the input gradient of a stride-1
conv by N x N radix-2 FFTs with the images in the vector lanes, against the fused path's
direct / Winograd kernels, on Tiny VGG's layer shapes (batch 64, 10 -> 10 channels).

    PYTHONPATH=. python benchmarks/probes/fft_conv.py

Prints, per layer, the largest error of the FFT forward and input gradient against the
float64 reference (relative to the largest value), and the ms of each part (the kernels'
spectra, the input spectra, the products, the inverse) and of the whole FFT forward
against ``bordered_ops.conv2d_relu_padded``.

How it works (the derivation is the convolution theorem): with every plane zero-extended
to N x N, N a power of two with N >= H + pad (``N = fft_size``), the correlation with
padding ``pad`` is a circular convolution with the flipped kernel wrapped to
``w'[(pad - k) mod N] = w[k]``, so ``Y[f] = sum over c of W'[f, c] X[c]`` per frequency,
4 real multiply-adds per frequency instead of K * K per pixel; the input gradient is
``GX[c] = sum over f of conj(W'[f, c]) GZ[f]`` on the same N. Arrays keep the batch last,
(C, N, N // 2 + 1, B), so every butterfly and product is a loop over B contiguous values;
rows stay in bit-reversed order between the forward transform (decimation in frequency)
and the inverse (decimation in time); two real rows share one complex FFT.

Why it was not kept: with 10 channels the transforms cost as much as the products they
save. On the 28x28 7x7 layer the FFT forward was 2.9 ms against the direct kernel's
2.8-4.1 (the machine's speed moved), and in whole 7x7 steps its grad-input was slower than
the Winograd one; on 14x14 maps it lost 1.4-1.8x. It was 6x faster than
``torch.fft.rfft2`` on the same planes, so the transform itself is not the weak part. Its
rounding was better (2e-7 of the largest output against 1.4e-6). A weight gradient by FFT
would not keep the float64 partial sums across images that tests/test_float64_partial_sums.py
asks of every grad-weight.
"""

import time
from functools import lru_cache

import numpy as np
from numba import njit, prange

from numbacnn.kernels.common import FASTMATH

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


@njit(parallel=True, fastmath=_FASTMATH)
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


@njit(parallel=True, fastmath=_FASTMATH)
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


@njit(parallel=True, fastmath=_FASTMATH)
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

def fft_size(in_size, pad):
    """The smallest power of two N >= in_size + pad."""
    return 1 << max(in_size + pad - 1, 0).bit_length()


def kernel_spectra(w, n, pad):
    """(C, N, U, F) spectra of w (F, C, K, K) flipped and wrapped by ``pad``."""
    filters, channels, kernel_h, kernel_w = w.shape
    wrapped = np.zeros((filters, channels, n, n), w.dtype)
    wrapped[:, :, :kernel_h, :kernel_w] = w[:, :, ::-1, ::-1]
    wrapped = np.roll(wrapped, (pad - kernel_h + 1, pad - kernel_w + 1), axis=(2, 3))
    out_re = np.empty((channels, n, n // 2 + 1, filters), w.dtype)
    out_im = np.empty_like(out_re)
    spectra(out_re, out_im, wrapped, 0, 0, n, n, *twiddles(n, w.dtype))
    return out_re, out_im


def fft_conv(x_padded, pad, w, b, out, gradient_of=None, mask=None):
    """out (plain) = conv2d(interior of x_padded) + b, or, with ``gradient_of`` = (gz_padded,
    border), the input gradient (times mask > 0 when given)."""
    filters, channels = w.shape[:2]
    height = x_padded.shape[2] - 2 * pad
    n = fft_size(height, pad)
    tables = twiddles(n, w.dtype)
    w_re, w_im = kernel_spectra(w, n, pad)
    if gradient_of is None:
        source, top, planes_in, planes_out, bias = x_padded, pad, channels, filters, b
    else:
        (source, top), planes_in, planes_out = gradient_of, filters, channels
        bias = np.zeros(channels, w.dtype)
    size = source.shape[2] - 2 * top
    batch, columns = x_padded.shape[0], n // 2 + 1
    in_re = np.empty((planes_in, n, columns, batch), w.dtype)
    in_im = np.empty_like(in_re)
    out_re = np.empty((planes_out, n, columns, batch), w.dtype)
    out_im = np.empty_like(out_re)
    spectra(in_re, in_im, source, top, top, size, size, *tables)
    products(out_re, out_im, in_re, in_im, w_re, w_im, gradient_of is not None)
    planes(out, 0, 0, out, 0, 0, mask if mask is not None else out, pad, pad, out_re, out_im, bias, *tables,
           False, mask is not None)
    return n, (w_re, w_im, in_re, in_im, out_re, out_im, tables, source, top, size)


def _ms(call, repeats=30):
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1e3


def main():
    import numbacnn.functional as F
    from numbacnn.fused import bordered_ops as ops
    from numbacnn.fused.buffers import bordered_empty, interior

    rng = np.random.default_rng(0)
    batch, channels, filters = 64, 10, 10
    for kernel, size in ((7, 28), (5, 28), (7, 14), (5, 14)):
        pad = kernel // 2
        x = np.maximum(rng.standard_normal((batch, channels, size, size)), 0).astype(np.float32)
        w = (rng.standard_normal((filters, channels, kernel, kernel)) * 0.1).astype(np.float32)
        b = rng.standard_normal(filters).astype(np.float32)
        x_padded = bordered_empty(x.shape, (pad, pad), np.float32)
        interior(x_padded, (pad, pad), x.shape)[...] = x
        z = np.empty((batch, filters, size, size), np.float32)
        n, (w_re, w_im, in_re, in_im, out_re, out_im, tables, source, top, height) = fft_conv(x_padded, pad, w, b, z)
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        want = F.conv2d(x64, w64, b.astype(np.float64), padding=pad)
        gz = rng.standard_normal(want.shape).astype(np.float32)
        border = kernel - 1 - pad
        gz_padded = bordered_empty(gz.shape, (border, border), np.float32)
        interior(gz_padded, (border, border), gz.shape)[...] = gz
        gx = np.empty_like(x)
        fft_conv(x_padded, pad, w, b, gx, gradient_of=(gz_padded, border))
        want_gx = F.conv2d_backward(gz.astype(np.float64), x64, w64, padding=pad)[0]
        error = np.abs(z - want).max() / np.abs(want).max()
        error_gx = np.abs(gx - want_gx).max() / np.abs(want_gx).max()
        parts = [_ms(lambda: kernel_spectra(w, n, pad)),
                 _ms(lambda: spectra(in_re, in_im, source, top, top, height, height, *tables)),
                 _ms(lambda: products(out_re, out_im, in_re, in_im, w_re, w_im, False)),
                 _ms(lambda: planes(z, 0, 0, z, 0, 0, z, 0, 0, out_re.copy(), out_im.copy(), b, *tables, False,
                                    False))]
        whole = _ms(lambda: fft_conv(x_padded, pad, w, b, z))
        y = bordered_empty(z.shape, (0, 0), np.float32)
        direct = _ms(lambda: ops.conv2d_relu_padded(x_padded, w, b, y, (0, 0)))
        print(f"{kernel}x{kernel} on {size}x{size} (N = {n}): error {error:.1e} (grad-input {error_gx:.1e}); ms: "
              f"kernel spectra {parts[0]:.3f}, spectra {parts[1]:.3f}, products {parts[2]:.3f}, inverse "
              f"{parts[3]:.3f} (with a copy); FFT forward {whole:.3f} against the fused forward + ReLU {direct:.3f}")


if __name__ == "__main__":
    main()
