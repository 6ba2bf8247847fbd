"""The functional 5x5 and 7x7 convolutions (10 -> 10 filters, 28x28, same padding, float32) at
batch 1, 2, 4 and 8: forward and backward ms (min of 7 blocks), Winograd on and off
alternating in one process, at Numba's thread count.

    python benchmarks/probes/small_batch.py
"""

import time

import numpy as np


def main() -> None:
    import numbacnn.functional as F
    from numbacnn.kernels.cpu import conv_tuning

    rng = np.random.default_rng(0)
    for kernel in (5, 7):
        pad = kernel // 2
        w = rng.standard_normal((10, 10, kernel, kernel)).astype(np.float32)
        b = np.zeros(10, np.float32)
        for batch in (1, 2, 4, 8):
            x = rng.standard_normal((batch, 10, 28, 28)).astype(np.float32)
            gy = rng.standard_normal((batch, 10, 28, 28)).astype(np.float32)
            best = {}
            for on in (True, False):  # compile both first
                conv_tuning.WINOGRAD_ENABLED = on
                F.conv2d(x, w, b, padding=pad)
                F.conv2d_backward(gy, x, w, padding=pad)
                best[on, "forward"] = best[on, "backward"] = float("inf")
            for _ in range(7):
                for on in (True, False):
                    conv_tuning.WINOGRAD_ENABLED = on
                    for what, call, calls in (("forward", lambda: F.conv2d(x, w, b, padding=pad), 50),
                                              ("backward", lambda: F.conv2d_backward(gy, x, w, padding=pad), 20)):
                        start = time.perf_counter()
                        for _ in range(calls):
                            call()
                        best[on, what] = min(best[on, what], (time.perf_counter() - start) / calls * 1e3)
            conv_tuning.WINOGRAD_ENABLED = True
            print(f"{kernel}x{kernel} batch {batch}: Winograd forward {best[True, 'forward']:.3f} backward "
                  f"{best[True, 'backward']:.3f} | direct forward {best[False, 'forward']:.3f} backward "
                  f"{best[False, 'backward']:.3f} ms", flush=True)


if __name__ == "__main__":
    main()
