"""The stride-2 Tiny VGG's strided backwards (batch 64, float32, Numba's thread count): the
kernels ``kernels/cpu/conv.py`` chooses (PHASES grad-input, LANES grad-weight) against the
general (definition) kernels, ms per call (min of 7 blocks of 100, alternating).

    python benchmarks/probes/strided_bwd.py; NUMBA_NUM_THREADS=1 python benchmarks/probes/strided_bwd.py
"""

import time

import numpy as np


def main() -> None:
    import numba

    from numbacnn.kernels.cpu import conv

    rng = np.random.default_rng(0)
    layers = {"conv_2_1 (10 -> 10, 7x7 -> 4x4)": ((64, 10, 7, 7), (10, 10, 3, 3), (64, 10, 4, 4), True),
              "conv_1_1 (1 -> 10, 28x28 -> 14x14)": ((64, 1, 28, 28), (10, 1, 3, 3), (64, 10, 14, 14), False)}
    hyper = (2, 2, 1, 1, 1, 1, 1)  # stride, padding, dilation, groups
    for name, (x_shape, w_shape, y_shape, grad_input) in layers.items():
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        dout = rng.standard_normal(y_shape).astype(np.float32)
        dx, dw = np.empty_like(x), np.empty_like(w)
        calls = {"chosen grad-weight": lambda: conv.conv2d_backward_weight(dw, dout, x, *hyper),
                 "general grad-weight": lambda: conv.conv2d_backward_weight_general(dw, dout, x, *hyper)}
        if grad_input:  # the first layer computes no grad-input
            calls["chosen grad-input"] = lambda: conv.conv2d_backward_input(dx, dout, w, *hyper)
            calls["general grad-input"] = lambda: conv.conv2d_backward_input_general(dx, dout, w, *hyper)
        best = dict.fromkeys(calls, float("inf"))
        for call in calls.values():
            call()
        for _ in range(7):
            for what, call in calls.items():
                start = time.perf_counter()
                for _ in range(100):
                    call()
                best[what] = min(best[what], (time.perf_counter() - start) / 100)
        print(f"{name}, {numba.get_num_threads()} threads: "
              + ", ".join(f"{what} {seconds * 1e3:.3f} ms" for what, seconds in best.items()), flush=True)


if __name__ == "__main__":
    main()
