"""Kernels that must fail tests/test_cuda_compile.py's check (imported by its compiler
process only, never by the library)."""

import math

from numba import cuda


@cuda.jit
def untypeable_kernel(out, x):
    # a string cannot be added to a float: NVVM never sees this, typing fails
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = x[i] + "one"


@cuda.jit
def register_hungry_kernel(out, x):
    # 24 live float64 accumulators (48+ registers) and their transcendental updates:
    # far more than the 64 registers per thread a 1024-thread block may use
    i = cuda.grid(1)
    if i < out.shape[0]:
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = x[i]
        b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = x[i] * 2.0
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = x[i] * 3.0
        for k in range(x.shape[0]):
            v = x[k]
            a0 = math.sin(a0 + v); a1 = math.cos(a1 * v); a2 = math.exp(a2 - v); a3 = math.log(a3 + v * v + 1.0)
            a4 = math.sin(a4 * b0); a5 = math.cos(a5 + b1); a6 = math.exp(a6 * b2 * 1e-3); a7 = math.tanh(a7 + b3)
            b0 = math.sin(b0 + a1); b1 = math.cos(b1 * a2); b2 = math.exp(b2 * 1e-3 - a3); b3 = math.atan(b3 + a4)
            b4 = math.sin(b4 + c0); b5 = math.cos(b5 * c1); b6 = math.exp(b6 * 1e-3 + c2); b7 = math.tanh(b7 - c3)
            c0 = math.sin(c0 + a5); c1 = math.cos(c1 * a6); c2 = math.exp(c2 * 1e-3 - a7); c3 = math.atan(c3 + b4)
            c4 = math.sin(c4 + b5); c5 = math.cos(c5 * b6); c6 = math.exp(c6 * 1e-3 + b7); c7 = math.tanh(c7 - c4)
        out[i] = (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + b0 + b1 + b2 + b3 + b4 + b5 + b6 + b7
                  + c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7)
