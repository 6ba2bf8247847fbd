"""The fused path's convolution by the 2-D FFT (``numbacnn/kernels/cpu/conv_fft.py``, the
fourteenth session) on Tiny VGG's 5x5 and 7x7 layer shapes (batch 64, 10 -> 10 channels),
whether or not ``conv_tuning.fft_size_for`` picks it there, against the fused path's direct /
Winograd kernels.

    PYTHONPATH=. python benchmarks/probes/fft_conv.py

Prints, per layer, the largest error of the FFT forward and input gradient against the
float64 reference (relative to the largest value), and the ms of each part (the kernels'
spectra, the input spectra, the products, the inverse) and of the whole FFT forward
against ``bordered_ops.conv2d_relu_padded``.

Where it is used: with 10 channels the transforms cost about as much as the products
they save, so the rule takes it for the 28x28 7x7 layer only (the 7x7 step 7-9% faster in
one process); the 5x5 layers lose to 1-D Winograd, 14x14 maps need N = 32 for 17 values.
The transform is 6x faster than ``torch.fft.rfft2`` on the same planes (2 threads).
"""

import time

import numpy as np

import numbacnn.functional as F
from numbacnn.fused import bordered_ops as ops
from numbacnn.fused.buffers import bordered_empty, interior
from numbacnn.kernels.cpu import conv_fft, conv_tuning
from numbacnn.shapes import fft_size


def _ms(call, repeats=30):
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1e3


def main():
    rng = np.random.default_rng(0)
    batch, channels, filters = 64, 10, 10
    for kernel, size in ((7, 28), (5, 28), (7, 14), (5, 14)):
        pad = kernel // 2
        n, columns = fft_size(size, pad), fft_size(size, pad) // 2 + 1
        x = np.maximum(rng.standard_normal((batch, channels, size, size)), 0).astype(np.float32)
        w = (rng.standard_normal((filters, channels, kernel, kernel)) * 0.1).astype(np.float32)
        b = rng.standard_normal(filters).astype(np.float32)
        x_padded = bordered_empty(x.shape, (pad, pad), np.float32)
        interior(x_padded, (pad, pad), x.shape)[...] = x
        z = np.empty((batch, filters, size, size), np.float32)
        ops._fft_correlate(z, (0, 0), x_padded, (pad, pad), w, b, n)
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        want = F.conv2d(x64, w64, b.astype(np.float64), padding=pad)
        border = kernel - 1 - pad
        gz = rng.standard_normal(want.shape).astype(np.float32)
        gz_padded = bordered_empty(gz.shape, (border, border), np.float32)
        interior(gz_padded, (border, border), gz.shape)[...] = gz
        gx = np.empty_like(x)
        ops._fft_correlate(gx, (0, 0), x_padded, (pad, pad), w, None, n, gradient_of=(gz_padded, (border, border)))
        want_gx = F.conv2d_backward(gz.astype(np.float64), x64, w64, padding=pad)[0]
        error = np.abs(z - want).max() / np.abs(want).max()
        error_gx = np.abs(gx - want_gx).max() / np.abs(want_gx).max()
        tables = conv_fft.twiddles(n, np.float32)
        w_re, w_im = (a.copy() for a in ops._kernel_spectra(w, n, (pad, pad)))
        in_re, in_im = (np.empty((channels, n, columns, batch), np.float32) for _ in range(2))
        out_re, out_im = (np.empty((filters, n, columns, batch), np.float32) for _ in range(2))
        conv_fft.spectra(in_re, in_im, x_padded, pad, pad, size, size, *tables)
        conv_fft.products(out_re, out_im, in_re, in_im, w_re, w_im, False)
        parts = [_ms(lambda: ops._kernel_spectra(w, n, (pad, pad))),
                 _ms(lambda: conv_fft.spectra(in_re, in_im, x_padded, pad, pad, size, size, *tables)),
                 _ms(lambda: conv_fft.products(out_re, out_im, in_re, in_im, w_re, w_im, False)),
                 _ms(lambda: conv_fft.planes(z, 0, 0, z, 0, 0, z, 0, 0, out_re.copy(), out_im.copy(), b, *tables,
                                             False, False))]
        whole = _ms(lambda: ops._fft_correlate(z, (0, 0), x_padded, (pad, pad), w, b, n))
        y = bordered_empty(z.shape, (0, 0), np.float32)
        enabled, conv_tuning.FFT_ENABLED = conv_tuning.FFT_ENABLED, False
        direct = _ms(lambda: ops.conv2d_relu_padded(x_padded, w, b, y, (0, 0), padding=(pad, pad)))
        conv_tuning.FFT_ENABLED = enabled
        print(f"{kernel}x{kernel} on {size}x{size} (N = {n}): error {error:.1e} (grad-input {error_gx:.1e}); ms: "
              f"kernel spectra {parts[0]:.3f}, spectra {parts[1]:.3f}, products {parts[2]:.3f}, inverse "
              f"{parts[3]:.3f} (with a copy); FFT conv {whole:.3f} against the direct fused conv + ReLU {direct:.3f}")


if __name__ == "__main__":
    main()
