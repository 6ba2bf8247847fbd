"""Each of numbacnn train's Tiny VGG variants (1x28x28, batch 64, float32, Numba's thread
count) compiled for 512-bit vectors (numbacnn's default on an AVX-512 CPU) and for LLVM's
own choice for the CPU (256-bit on Intel models tuned "prefer-256-bit"), in alternating
fresh processes: min of 5 blocks of ~0.3 s per process, ms per step.

    python benchmarks/probes/vector_width.py              # 4 rounds, every variant
    python benchmarks/probes/vector_width.py --rounds 2 --variant stride-2

The 256-bit arm sets NUMBA_CPU_FEATURES to the host's features as LLVM reports them (a
user's setting wins over numbacnn's, numbacnn/_environment.py); the 512-bit arm runs
without any of the variables that would. Each arm's kernels are
compiled once (the features are part of Numba's disk-cache key); that first process is
not timed.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from benchmarks.compare_torch import VARIANTS as LABELLED, variant_name  # noqa: E402
from numbacnn._environment import CPU_CODE_VARIABLES  # noqa: E402

VARIANTS = {variant_name(label): options for label, options in LABELLED}  # name -> tiny_vgg options


def one_process(variant: str) -> None:
    """Runs in the child: prints the min over 5 blocks of ms per step."""
    from benchmarks.common import TinyVGGStep

    step = TinyVGGStep(64, "float32", in_channels=1, image_size=28, **VARIANTS[variant])
    for _ in range(10):
        step.step()
    blocks = []
    for _ in range(5):
        start, steps = time.perf_counter(), 0
        while time.perf_counter() - start < 0.3:
            step.step()
            steps += 1
        blocks.append((time.perf_counter() - start) / steps * 1e3)
    print(f"{min(blocks):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--variant", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        one_process(options.child)
        return
    import llvmlite.binding as llvm

    host_features = llvm.get_host_cpu_features()
    if not host_features.get("avx512f"):
        parser.error("this CPU has no AVX-512: both arms would compile the same code")
    base = {k: v for k, v in os.environ.items() if k not in CPU_CODE_VARIABLES}  # numbacnn decides in the children
    arms = {"512-bit": base, "LLVM's choice": dict(base, NUMBA_CPU_FEATURES=host_features.flatten())}
    env_path = dict(PYTHONPATH=ROOT)
    for variant in options.variant:
        times = {arm: [] for arm in arms}
        for round_ in range(options.rounds + 1):  # round 0 compiles
            for arm, env in arms.items():
                child = subprocess.run([sys.executable, __file__, "--child", variant], env=dict(env, **env_path),
                                       capture_output=True, text=True)
                if child.returncode:
                    sys.exit(f"vector_width.py: error: the {arm} process for {variant} failed:\n{child.stderr}")
                if round_:
                    times[arm].append(float(child.stdout))
        print(f"{variant}: " + "; ".join(f"{arm} {' '.join(f'{t:.2f}' for t in ts)} (median "
                                          f"{statistics.median(ts):.2f})" for arm, ts in times.items())
              + f"; load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
