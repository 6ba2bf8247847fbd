"""First-call time of a fresh process: import numbacnn, build Tiny VGG and run one
training step (batch 32, float32), with an empty and with a warm Numba disk cache.

Each measurement is a new Python process whose ``NUMBA_CACHE_DIR`` points at a
temporary folder: empty -> every kernel compiles; filled by a previous process ->
kernels load from disk (what a user sees from the second run on).
"""

import os
import subprocess
import sys
import tempfile
import textwrap

FIRST_STEP = textwrap.dedent("""
    import time
    start = time.perf_counter()
    from benchmarks.common import TinyVGGStep
    TinyVGGStep(32, "float32").step()
    print(time.perf_counter() - start)
""")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def first_step_seconds(cache_dir: str) -> float:
    """Seconds from the start of a fresh process to the end of its first training step."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=REPO_ROOT)
    done = subprocess.run([sys.executable, "-c", FIRST_STEP], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True)
    return float(done.stdout.split()[-1])


class FirstCall:
    timeout = 900
    unit = "s"
    # each is one subprocess measurement; repeating them would take minutes
    number = 1
    repeat = 1

    def track_first_step_without_cache(self):
        with tempfile.TemporaryDirectory() as cache_dir:
            return first_step_seconds(cache_dir)

    track_first_step_without_cache.unit = "s"

    def track_first_step_with_warm_cache(self):
        with tempfile.TemporaryDirectory() as cache_dir:
            first_step_seconds(cache_dir)  # fills the cache
            return first_step_seconds(cache_dir)

    track_first_step_with_warm_cache.unit = "s"
