"""Minor page faults (``getrusage().ru_minflt``) and time per Tiny VGG training step,
fused or unfused, in a fresh process (no other library has moved glibc's mmap
threshold first), for the two shapes of issue 10.

    NUMBA_NUM_THREADS=2 python benchmarks/page_faults.py [REPO_ROOT] [fused|unfused]

REPO_ROOT (default: this checkout) lets the same script measure an older tree
exported with ``git archive``; a tree without ``numbacnn.nn.fusion`` runs unfused.
Not a timed test: the figure is a count over 20 warm steps.
"""

from __future__ import annotations

import os
import resource
import sys
import time

root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
mode = sys.argv[2] if len(sys.argv) > 2 else "fused"
sys.path.insert(0, root)

from benchmarks.common import TinyVGGStep  # noqa: E402

try:
    from numbacnn.nn import fusion  # noqa: E402

    fusion.set_enabled(mode == "fused")
except ImportError:  # a tree from before the fusion: always unfused
    mode = "unfused (no fusion in this tree)"

STEPS = 20
print(f"tree {root}, {mode}, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
for label, channels, size, batch, padding in [("main job 1x28x28 b64 p1", 1, 28, 64, 1),
                                              ("3x64x64 b32 p0", 3, 64, 32, 0)]:
    step = TinyVGGStep(batch, "float32", in_channels=channels, image_size=size, padding=padding)
    for _ in range(3):  # JIT, first allocations
        step.step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(STEPS):
        step.step()
    seconds = (time.perf_counter() - start) / STEPS
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / STEPS
    print(f"{label}: {faults:.1f} minor page faults per step, {seconds * 1e3:.1f} ms per step")
