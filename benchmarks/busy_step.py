"""What one busy process does to the main job's training step (issue 18, "Under load").

Runs benchmarks/common.py's ``TinyVGGStep(64, in_channels=1, image_size=28, padding=1)``
(Fashion-MNIST's Tiny VGG, batch 64, float32) in alternating blocks: in every block,
each thread setting ("2" = ``numba.set_num_threads(2)``, "1", and "auto" = the
training loop's ``ThreadGovernor``) is timed idle and with a ``yes > /dev/null``
child running. Prints the median and the mean ms per step of each (setting, load)
pair over the blocks (the mean is what an epoch costs, the governor's probes
included), busy/idle ratios, the ratio to 1 thread, and the 1-minute load average
beside every block, because on a shared machine "idle" only means "no child of ours".

    python benchmarks/busy_step.py                    # this process's threading layer
    python benchmarks/busy_step.py --matrix           # each layer / spin setting in its own process
    NUMBA_NUM_THREADS=2 python benchmarks/busy_step.py --blocks 5 --steps 200
    python benchmarks/busy_step.py --regions          # one tiny parallel region: the barrier's cost

``--matrix`` reruns this script under NUMBA_THREADING_LAYER=omp / workqueue (and tbb
when importable) and GOMP_SPINCOUNT values, since those are read once, when Numba
starts its thread pool. ``--regions`` times one tiny parallel region instead of the
step: its median is the fork/join cost, its mean and tail the barrier waits for a
descheduled thread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `numbacnn` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numbacnn  # noqa: E402,F401  (sets GOMP_SPINCOUNT before Numba loads libgomp)
import numba  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import TinyVGGStep  # noqa: E402
from numbacnn.train.threads import ThreadGovernor  # noqa: E402

SETTINGS = ("2", "1", "auto")
LOADS = ("idle", "busy")


def _load_average() -> float:
    return os.getloadavg()[0]


class _Busy:
    """A ``yes > /dev/null`` child for the duration of a ``with`` block (one core taken)."""

    def __enter__(self) -> "_Busy":
        self.child = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL)
        time.sleep(0.3)  # let the scheduler place it
        return self

    def __exit__(self, *exc) -> None:
        self.child.kill()
        self.child.wait()


def time_block(step: TinyVGGStep, governor: ThreadGovernor, steps: int) -> list[float]:
    """Seconds of each of ``steps`` training steps run under ``governor``.

    The "auto" governor is one object for the whole measurement, as in ``fit``,
    where one governor lasts all epochs: its probes and its reaction to the load
    changing between blocks are inside these times.
    """
    times = []
    with governor as on_step:
        for _ in range(steps):
            on_step()
            start = time.perf_counter()
            step.step()
            times.append(time.perf_counter() - start)
    return times


@numba.njit(parallel=True, cache=True)
def _small_region(out):
    """One parallel region with one tiny chunk per thread: its time is the fork and the barrier."""
    for t in numba.prange(out.shape[0]):
        acc = 0.0
        for i in range(200):
            acc += (t + i) * 1e-3
        out[t] = acc


def regions(blocks: int, calls: int = 2000) -> None:
    """Microseconds per empty-ish parallel region, idle and busy, at each thread count:
    what each of the step's parallel regions pays at its barrier."""
    out = np.zeros(numba.config.NUMBA_NUM_THREADS)
    _small_region(out)
    full = numba.get_num_threads()
    for block in range(blocks):
        row = []
        for load in LOADS:
            with _Busy() if load == "busy" else contextlib.nullcontext():
                for count in sorted({full, 1}, reverse=True):
                    numba.set_num_threads(count)
                    times = []
                    for _ in range(calls):
                        start = time.perf_counter()
                        _small_region(out)
                        times.append(time.perf_counter() - start)
                    us = 1e6 * np.array(times)
                    row.append(f"{count} threads {load}: median {np.median(us):.1f} mean {us.mean():.1f} "
                               f"p99 {np.percentile(us, 99):.0f} max {us.max():.0f} us, "
                               f"{np.mean(us > 100):.1%} over 100 us")
                numba.set_num_threads(full)
        print(f"block {block + 1}/{blocks} (load {_load_average():.1f}):\n  " + "\n  ".join(row), flush=True)


def measure(blocks: int, steps: int) -> dict:
    full = numba.get_num_threads()
    step = TinyVGGStep(64, in_channels=1, image_size=28, padding=1)
    for _ in range(20):  # compile and warm up
        step.step()
    settings = [s for s in SETTINGS if s == "auto" or int(s) <= full]
    governors = {s: ThreadGovernor(s if s == "auto" else int(s)) for s in settings}
    samples: dict[tuple[str, str], list[float]] = {(s, load): [] for s in settings for load in LOADS}
    loads: dict[str, list[float]] = {load: [] for load in LOADS}
    for block in range(blocks):
        for load in LOADS:
            order = settings[block % len(settings):] + settings[:block % len(settings)]  # rotated: drift cancels
            with _Busy() if load == "busy" else contextlib.nullcontext():
                for s in order:
                    samples[s, load].extend(time_block(step, governors[s], steps))
            loads[load].append(_load_average())
        print(f"block {block + 1}/{blocks}: " + "  ".join(
            f"{s}/{load} {1e3 * statistics.mean(samples[s, load][-steps:]):.2f}" for load in LOADS for s in settings)
            + f" ms  (load {loads['idle'][-1]:.1f} / {loads['busy'][-1]:.1f})", flush=True)
    median = {f"{s}/{load}": 1e3 * statistics.median(v) for (s, load), v in samples.items()}
    mean = {f"{s}/{load}": 1e3 * statistics.mean(v) for (s, load), v in samples.items()}
    return {"layer": numba.threading_layer(), "threads": full,
            "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "ms": median, "mean_ms": mean, "auto_decisions": len(governors["auto"].decisions),
            "auto_steps_at": governors["auto"].steps_at,
            "auto_chosen": [d["chosen"] for d in governors["auto"].decisions],
            "load_idle": [min(loads["idle"]), max(loads["idle"])], "load_busy": [min(loads["busy"]), max(loads["busy"])]}


def report(result: dict) -> None:
    print(f"layer {result['layer']}, {result['threads']} threads, GOMP_SPINCOUNT={result['GOMP_SPINCOUNT']}, "
          f"OMP_WAIT_POLICY={result['OMP_WAIT_POLICY']}; load average idle {result['load_idle'][0]:.1f}-"
          f"{result['load_idle'][1]:.1f}, busy {result['load_busy'][0]:.1f}-{result['load_busy'][1]:.1f}")
    for label, ms in (("median", result["ms"]), ("mean", result["mean_ms"])):
        print(f"{label:>8} {'idle ms':>8} {'busy ms':>8} {'busy/idle':>9} {'busy / 1-thread busy':>21}")
        for s in SETTINGS:
            if f"{s}/idle" not in ms:
                continue
            idle, busy = ms[f"{s}/idle"], ms[f"{s}/busy"]
            print(f"{s:>8} {idle:8.2f} {busy:8.2f} {busy / idle:9.2f} {busy / ms['1/busy']:21.2f}")
    print(f"auto: {result['auto_decisions']} probe rounds, steps at each count {result['auto_steps_at']}, "
          f"chosen after each round {''.join(map(str, result['auto_chosen']))}")


def matrix(blocks: int, steps: int) -> None:
    # OMP_WAIT_POLICY=passive is not tried: libgomp lets GOMP_SPINCOUNT, which `import numbacnn`
    # sets to 10000 when unset, override it; GOMP_SPINCOUNT=0 is what passive would mean
    variants = [{"NUMBA_THREADING_LAYER": "omp"},
                {"NUMBA_THREADING_LAYER": "omp", "GOMP_SPINCOUNT": "0"},
                {"NUMBA_THREADING_LAYER": "omp", "GOMP_SPINCOUNT": "1000"},
                {"NUMBA_THREADING_LAYER": "omp", "GOMP_SPINCOUNT": "300000"},
                {"NUMBA_THREADING_LAYER": "workqueue"}]
    try:
        import tbb  # noqa: F401
        variants.append({"NUMBA_THREADING_LAYER": "tbb"})
    except ImportError:
        pass
    results = []
    for env in variants:
        print(f"--- {env}", flush=True)
        run = subprocess.run([sys.executable, os.path.abspath(__file__), "--blocks", str(blocks), "--steps", str(steps),
                              "--json"], env={**os.environ, **env}, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"failed: {run.stderr.strip().splitlines()[-1:]}")
            continue
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        report(results[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks (default 3)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per setting per block (default 100)")
    parser.add_argument("--matrix", action="store_true", help="every threading layer / spin setting, one process each")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line (for --matrix)")
    parser.add_argument("--regions", action="store_true",
                        help="time one tiny parallel region instead of the step (the barrier's cost)")
    args = parser.parse_args()
    if args.regions:
        regions(args.blocks)
        return
    if args.matrix:
        matrix(args.blocks, args.steps)
        return
    result = measure(args.blocks, args.steps)
    if args.json:
        print(json.dumps(result))
    else:
        report(result)


if __name__ == "__main__":
    main()
