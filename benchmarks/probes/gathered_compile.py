"""Compile seconds of ``conv_gathered.gathered_forward_kernel`` for a strided layer of 8
filters: each argument N,C,H,W,K,SH,SW,DTYPE (padding K // 2). Use a fresh cache folder, or
the kernels load instead of compiling:

    NUMBA_CACHE_DIR=$(mktemp -d) python benchmarks/probes/gathered_compile.py \\
        2,3,12,20,3,1,2,float64 2,3,12,16,3,1,2,float64 64,1,28,28,3,2,2,float32
"""

import sys
import time

import numpy as np


def main() -> None:
    from numbacnn.kernels.cpu import conv_gathered

    rng = np.random.default_rng(0)
    for spec in sys.argv[1:]:
        *sizes, dtype = spec.split(",")
        batch, channels, height, width, kernel, stride_h, stride_w = map(int, sizes)
        pad = kernel // 2
        out_h = (height + 2 * pad - kernel) // stride_h + 1
        out_w = (width + 2 * pad - kernel) // stride_w + 1
        x = rng.standard_normal((batch, channels, height, width)).astype(dtype)
        w = rng.standard_normal((8, channels, kernel, kernel)).astype(dtype)
        out = np.empty((batch, 8, out_h, out_w), dtype)
        start = time.perf_counter()
        conv_gathered.gathered_forward_kernel(kernel, kernel, stride_h, stride_w, pad, pad, out_h, out_w)(
            out, x, w, np.zeros(8, dtype))
        print(f"{spec}: output {out_h}x{out_w}, compiled in {time.perf_counter() - start:.2f} s", flush=True)


if __name__ == "__main__":
    main()
