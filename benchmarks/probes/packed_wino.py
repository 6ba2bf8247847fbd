"""Tiny VGG's 14x14 10 -> 10 7x7 layer (padding 3, batch 64, float32) forward: the direct rows
kernel on (64, 10, 20, 20) against the Winograd rows kernel on two images side by side,
(32, 10, 20, 40) -> 14 x 34 outputs (the 6 columns between the images wasted). Min of 7
blocks of 50 calls, alternating, at Numba's thread count.

    python benchmarks/probes/packed_wino.py; NUMBA_NUM_THREADS=1 python benchmarks/probes/packed_wino.py
"""

import time

import numpy as np


def main() -> None:
    import numba

    from numbacnn.kernels.cpu import conv_rows, conv_tuning

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 10, 20, 20)).astype(np.float32)
    packed = np.ascontiguousarray(np.concatenate([x[0::2], x[1::2]], axis=3))  # (32, 10, 20, 40)
    w = (rng.standard_normal((10, 10, 7, 7)) / 7).astype(np.float32)
    b = np.zeros(10, np.float32)
    no_indices = np.empty((1, 1, 1, 1), np.int64)
    out, packed_out = np.empty((64, 10, 14, 14), np.float32), np.empty((32, 10, 14, 34), np.float32)
    assert conv_tuning.winograd_outputs(7, 7, 14, 34, 4, 10) == 2  # F(2, 7) on the packed rows
    direct = conv_rows.conv_rows_kernel(10, 7, 7, conv_rows.MODE_BIAS, 20, 20, itemsize=4)
    winograd = conv_rows.conv_rows_kernel(10, 7, 7, conv_rows.MODE_BIAS, 20, 40, itemsize=4, winograd=True)
    calls = {"direct": lambda: direct(out, out, no_indices, out, x, w, b),
             "packed Winograd": lambda: winograd(packed_out, packed_out, no_indices, packed_out, packed, w, b)}
    for call in calls.values():
        call()
    difference = max(np.abs(packed_out[..., :14] - out[0::2]).max(), np.abs(packed_out[..., 20:] - out[1::2]).max())
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(7):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(50):
                call()
            best[name] = min(best[name], (time.perf_counter() - start) / 50 * 1e3)
    print(f"{numba.get_num_threads()} threads: " + ", ".join(f"{k} {v:.3f} ms" for k, v in best.items())
          + f" (largest difference {difference:.1e})", flush=True)


if __name__ == "__main__":
    main()
