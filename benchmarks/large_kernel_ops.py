"""Per-op times and GFLOP/s of Tiny VGG's 5x5 / 7x7 layers on the fused kernels, each op
separately (forward + ReLU (+ pool), grad-weight + grad-bias, grad-input x ReLU mask), the
kernels called as ``numbacnn/fused/bordered_ops.py`` calls them; float32, batch 64, 10
filters, padding k // 2; median of alternating blocks, load average printed.

    NUMBA_NUM_THREADS=1 python benchmarks/large_kernel_ops.py 5 7

To compare two checkouts, run it in each in turn (PYTHONPATH=<checkout>), twice.
GFLOP/s count the convolution's 2 * N * F * C * KH * KW * OH * OW only.
"""
import os
import sys
import time

import numpy as np

from numbacnn.kernels.cpu import conv_rows as rows
from numbacnn.kernels.cpu import conv_tuning
from numbacnn.kernels.cpu import conv_weight_grad as weight_grad


def layer_ops(kernel, batch=64, filters=10):
    """[(name, function, flops)] for conv_1_1 (C = 1, 28x28), conv_1_2 (28x28, + pool)
    and conv_2_1 (14x14) with a ``kernel`` x ``kernel`` kernel."""
    pad = kernel // 2
    rng = np.random.default_rng(0)
    no_indices = np.zeros(1, np.int64)
    ops = []
    for channels, size, mode in ((1, 28, rows.MODE_RELU), (10, 28, rows.MODE_RELU_POOL), (10, 14, rows.MODE_RELU)):
        padded = size + 2 * pad
        x = np.zeros((batch, channels, padded, padded), np.float32)
        x[:, :, pad:pad + size, pad:pad + size] = rng.standard_normal((batch, channels, size, size))
        w = (rng.standard_normal((filters, channels, kernel, kernel)) * 0.1).astype(np.float32)
        b = np.zeros(filters, np.float32)
        flops = 2 * batch * filters * channels * kernel * kernel * size * size
        if mode == rows.MODE_RELU_POOL:
            pooled = np.zeros((batch, filters, size // 2 + 2 * pad, size // 2 + 2 * pad), np.float32)
            indices = np.zeros((batch, filters, size // 2, size // 2), np.int64)
            forward = rows.conv_rows_kernel(filters, kernel, kernel, mode, padded, padded, pad, pad, pad, pad,
                                            store_out=False)
            ops.append((f"forward {channels}->{filters} {size}x{size} + ReLU + pool",
                        lambda f=forward, p=pooled, i=indices, x=x, w=w, b=b: f(p, p, i, p, x, w, b), flops))
        else:
            y = np.zeros((batch, filters, padded, padded), np.float32)
            forward = rows.conv_rows_kernel(filters, kernel, kernel, mode, padded, padded, pad, pad)
            ops.append((f"forward {channels}->{filters} {size}x{size} + ReLU",
                        lambda f=forward, y=y, x=x, w=w, b=b: f(y, y, no_indices, y, x, w, b), flops))
        gz = np.zeros((batch, filters, padded, padded), np.float32)
        gz[:, :, pad:pad + size, pad:pad + size] = rng.standard_normal((batch, filters, size, size))
        chunks = min(conv_tuning.GRAD_WEIGHT_CHUNKS, batch)
        partial_w = np.empty((chunks, filters, channels, kernel, kernel))
        partial_b = np.empty((chunks, filters))
        border = kernel - 1 - pad
        gradient = weight_grad.weight_gradient_kernel(filters, kernel, kernel, border, border, with_bias=True)
        ops.append((f"grad-weight {channels}->{filters} {size}x{size}",
                    lambda g=gradient, pw=partial_w, pb=partial_b, gz=gz, x=x: g(pw, pb, gz, x), flops))
        if channels >= conv_tuning.MIN_FILTERS:
            flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
            no_bias = np.zeros(channels, np.float32)
            gx = np.zeros((batch, channels, padded, padded), np.float32)
            grad_input = rows.conv_rows_kernel(channels, kernel, kernel, rows.MODE_MASK, padded, padded, pad, pad,
                                               0, 0, pad, pad)
            ops.append((f"grad-input {filters}->{channels} {size}x{size} x mask",
                        lambda g=grad_input, gx=gx, gz=gz, w=flipped, b=no_bias, mask=x:
                        g(gx, gx, no_indices, mask, gz, w, b), flops))
    return ops


def median_seconds(ops, blocks=7, block_seconds=0.15):
    """{name: median seconds per call} over ``blocks`` alternating blocks of each op."""
    for _, function, _ in ops:
        function()
        function()
    times = {name: [] for name, _, _ in ops}
    for _ in range(blocks):
        for name, function, _ in ops:
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < block_seconds:
                function()
                calls += 1
            times[name].append((time.perf_counter() - start) / calls)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv):
    for kernel in [int(a) for a in argv] or [5, 7]:
        ops = layer_ops(kernel)
        seconds = median_seconds(ops)
        print(f"k{kernel}, threads {os.environ.get('NUMBA_NUM_THREADS', 'default')}, load {os.getloadavg()}")
        for name, _, flops in ops:
            print(f"  {name:42s} {seconds[name] * 1e3:7.3f} ms  {flops / seconds[name] / 1e9:6.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
