"""One kernel module's functions as they are now against an older commit's, in whole
training steps: the two versions alternate in blocks in one process (Tiny VGG 1x28x28,
batch 64, float32, Numba's thread count), median and min ms per step of each.

    python benchmarks/probes/kernel_ab.py 2ba1272 numbacnn/kernels/cpu/norm.py batch_norm_stats_planes
    python benchmarks/probes/kernel_ab.py 2ba1272 numbacnn/kernels/cpu/bordered.py \\
        max_pool2x2_relu_backward_kernel --variant plain

A kernel that is faster alone need not make the step faster (what it leaves in the
caches, when the threads wake): this is how the ninth session decided what to keep
(RESULTS.md). The old file is read with ``git show COMMIT:PATH`` and loaded as a module
of its own; each named function (a kernel, or a factory of kernels) is swapped on the
current module, which the fused wing reaches through ``backend("cpu")`` at every call,
and on the backend package where it re-exports it (``numbacnn.functional``'s calls).
The names must have the same signature in both versions.
"""

import argparse
import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from benchmarks.common import TinyVGGStep, alternate_in_steps, places_of  # noqa: E402
from benchmarks.compare_torch import VARIANTS as LABELLED, variant_name  # noqa: E402

VARIANTS = {variant_name(label): options for label, options in LABELLED}  # name -> tiny_vgg options


def old_module(commit: str, path: str, folder: str):
    """The file at ``commit`` loaded as a module of its own (its imports are today's)."""
    shown = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:{path}"], capture_output=True, text=True)
    if shown.returncode:
        raise SystemExit(f"kernel_ab.py: error: no {path} at commit {commit!r}, {ROOT} "
                         f"(git says: {shown.stderr.strip().splitlines()[-1] if shown.stderr.strip() else '?'})")
    source = shown.stdout
    file = os.path.join(folder, "old_" + os.path.basename(path))
    with open(file, "w") as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("old_" + os.path.basename(path)[:-3], file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commit", help="the older commit, e.g. 2ba1272")
    parser.add_argument("path", help="the kernel module's file, e.g. numbacnn/kernels/cpu/norm.py")
    parser.add_argument("names", nargs="+", help="the functions to swap")
    parser.add_argument("--variant", default="batch-norm", choices=sorted(VARIANTS),
                        help="numbacnn train's variant to step (default batch-norm)")
    parser.add_argument("--blocks", type=int, default=9, help="blocks per version (default 9)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per block (default 60)")
    args = parser.parse_args(argv)

    current = importlib.import_module(args.path[:-3].replace("/", "."))
    missing = [name for name in args.names if not callable(getattr(current, name, None))]
    if missing:
        parser.error(f"no function {', '.join(missing)} in {args.path} (name the module's kernels or factories)")
    # the backend package re-exports the interface's kernels (numbacnn.functional calls
    # them there): swap a name there too where it is the current module's function
    places = {name: places_of(current, name) for name in args.names}
    with tempfile.TemporaryDirectory() as folder:
        old = old_module(args.commit, args.path, folder)
        missing = [name for name in args.names if not callable(getattr(old, name, None))]
        if missing:
            parser.error(f"no function {', '.join(missing)} in {args.path} at {args.commit} (the names must be in "
                         "both versions)")
        versions = {"now": {name: getattr(current, name) for name in args.names},
                    args.commit: {name: getattr(old, name) for name in args.names}}
        step = TinyVGGStep(64, "float32", in_channels=1, image_size=28, **VARIANTS[args.variant])
        times = alternate_in_steps(step, versions, places, args.blocks, args.steps, warm=20)
    print(f"{args.variant}, {', '.join(args.names)} ({args.path}); load average {os.getloadavg()[0]:.2f}")
    for version, values in times.items():
        ordered = sorted(values)
        print(f"  {version:>10}: median {ordered[len(ordered) // 2]:.3f} ms, min {ordered[0]:.3f} ms per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
