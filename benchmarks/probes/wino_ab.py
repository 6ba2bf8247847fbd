"""The k5 and k7 Tiny VGG training steps (1x28x28, batch 64, float32, Numba's thread count)
with 1-D Winograd on or off: min and median ms of 7 blocks of 20 steps.

    python benchmarks/probes/wino_ab.py off; python benchmarks/probes/wino_ab.py on   # alternate, twice
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    from numbacnn.kernels.cpu import conv_tuning

    conv_tuning.WINOGRAD_ENABLED = sys.argv[1] == "on"
    from common import TinyVGGStep

    for kernel, padding in ((5, 2), (7, 3)):
        step = TinyVGGStep(64, "float32", in_channels=1, image_size=28, padding=padding, kernel_size=kernel)
        for _ in range(5):
            step.step()
        blocks = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(20):
                step.step()
            blocks.append((time.perf_counter() - start) / 20 * 1e3)
        blocks.sort()
        print(f"winograd {sys.argv[1]} k{kernel}: min {blocks[0]:.2f} median {blocks[3]:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
