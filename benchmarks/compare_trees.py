"""Two numbacnn checkouts side by side: the Tiny VGG training step of each, timed in
alternating blocks, so a change's speed is measured against the commit before it on
the same machine at the same moment.

    git worktree add /tmp/before <old-commit>
    NUMBA_NUM_THREADS=2 python benchmarks/compare_trees.py /tmp/before .

Each tree runs in its own persistent worker process (two versions of one package
cannot share a process); the parent asks them in turn for blocks of steps (before,
after, before, ...) so that other processes' noise hits both alike, and prints the
median over blocks of the mean step time for each shape, the ratio after / before,
and the load average before and after. Shapes: the main job (1x28x28, batch 64,
padding 1) and CNN Explainer's (3x64x64, batch 32, padding 0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from benchmarks.common import TinyVGGStep
steps = {}
for line in sys.stdin:
    name, channels, size, padding, batch, count = line.split()
    key = (name, int(channels), int(size), int(padding), int(batch))
    if key not in steps:
        steps[key] = TinyVGGStep(int(batch), in_channels=int(channels), image_size=int(size), padding=int(padding))
        for _ in range(3):
            steps[key].step()  # compile or load from the cache, warm the buffers
    step = steps[key]
    start = time.perf_counter()
    for _ in range(int(count)):
        step.step()
    print(json.dumps((time.perf_counter() - start) / int(count)), flush=True)
"""

SHAPES = [("main job 1x28x28 b64 p1", 1, 28, 1, 64), ("3x64x64 b32 p0", 3, 64, 0, 32)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="the older checkout (a folder with numbacnn/ and benchmarks/)")
    parser.add_argument("after", help="the newer checkout")
    parser.add_argument("--blocks", type=int, default=9, help="alternating blocks per tree (default 9)")
    parser.add_argument("--steps", type=int, default=20, help="steps per block (default 20)")
    args = parser.parse_args(argv)
    workers = {}
    for label in ("before", "after"):
        tree = os.path.abspath(getattr(args, label))
        env = dict(os.environ, PYTHONPATH=tree)
        workers[label] = subprocess.Popen([sys.executable, "-c", WORKER, tree], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, env=env, cwd=tree)
    print(f"load average before: {os.getloadavg()}; NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'unset')}")
    for name, channels, size, padding, batch in SHAPES:
        times: dict[str, list[float]] = {"before": [], "after": []}
        for block in range(args.blocks):
            order = ("before", "after") if block % 2 == 0 else ("after", "before")
            for label in order:
                worker = workers[label]
                worker.stdin.write(f"{name.split()[0]} {channels} {size} {padding} {batch} {args.steps}\n")
                worker.stdin.flush()
                times[label].append(json.loads(worker.stdout.readline()))
        medians = {label: sorted(values)[len(values) // 2] for label, values in times.items()}
        print(f"{name}: before {medians['before'] * 1e3:.3f} ms, after {medians['after'] * 1e3:.3f} ms, "
              f"after/before {medians['after'] / medians['before']:.3f}")
    print(f"load average after: {os.getloadavg()}")
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
