"""What one op costs inside a whole training step: the step with the op as it is,
against the step with the op skipped (its first result handed back again), alternating
in blocks in one process (Tiny VGG 1x28x28, batch 64, float32, Numba's thread count).

    python benchmarks/probes/op_cost.py --variant stride-2 \\
        numbacnn.fused.bordered_ops.strided_conv2d_backward numbacnn.kernels.cpu.conv.conv2d_backward_weight
    python benchmarks/probes/op_cost.py --variant stride-2 --shape 64 10 6 6 \
        numbacnn.fused.bordered_ops.conv2d_backward_padded      # the 4x4 layer's backward only

The difference is what the step would gain if the op were free: an upper bound on
what rewriting it can save. It is measured in the step, not alone, because a kernel
that is faster alone need not make the step faster (what it leaves in the caches, when
the threads wake: the ninth and tenth sessions' kernel_ab.py runs); and it needs no
timer around each call (the per-kernel table's timers add their own cost).

Skipped means: the op is replaced by a function that, for the same argument objects
(the buffers a step reuses), returns what the op returned the first time, without
running it; so what it writes is stale and the step trains on wrong values. Timing
only. An op whose arguments are new arrays every step runs every time (no saving
shows). Each name is ``module.function``; it is swapped on the module, and on the
backend package too where that re-exports it (``numbacnn.functional``'s calls).
"""

import argparse
import importlib
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from benchmarks.compare_torch import VARIANTS as LABELLED, variant_name  # noqa: E402

VARIANTS = {variant_name(label): options for label, options in LABELLED}  # name -> tiny_vgg options


def skipping(real, shape: tuple | None = None):
    """``real`` replaced by its first result per tuple of argument objects (with
    ``shape``: only the calls with an argument of that shape; the others run)."""
    results = {}

    def skipped(*args, **kwargs):
        if shape is not None and not any(getattr(a, "shape", None) == shape for a in args):
            return real(*args, **kwargs)
        key = tuple(id(a) for a in args) + tuple((k, id(v)) for k, v in sorted(kwargs.items()))
        if key not in results:
            results[key] = real(*args, **kwargs)
        return results[key]

    return skipped


def owners(module, name: str) -> list:
    """The module, and its package where the package holds the same function."""
    package = importlib.import_module(module.__name__.rsplit(".", 1)[0])
    return [module] + ([package] if getattr(package, name, None) is getattr(module, name) else [])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ops", nargs="+", help="module.function, each measured on its own")
    parser.add_argument("--variant", default="plain", choices=sorted(VARIANTS),
                        help="numbacnn train's variant to step (default plain)")
    parser.add_argument("--blocks", type=int, default=7, help="blocks per version (default 7)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per block (default 60)")
    parser.add_argument("--shape", type=int, nargs="+", default=None, metavar="SIZE",
                        help="skip only the calls with an argument of this shape (one layer of several that "
                             "call the op), e.g. --shape 64 10 16 16: a 14x14 3x3 layer's padded input")
    args = parser.parse_args(argv)
    targets = []
    for op in args.ops:
        module_name, _, name = op.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            parser.error(f"no module {module_name!r} for {op!r} (give module.function)")
        if not callable(getattr(module, name, None)):
            parser.error(f"no function {name!r} in {module_name} (give module.function)")
        targets.append((op, module, name))

    from benchmarks.common import TinyVGGStep

    step = TinyVGGStep(64, "float32", in_channels=1, image_size=28, **VARIANTS[args.variant])
    for _ in range(20):
        step.step()
    only = "" if args.shape is None else f", only the calls with an argument of shape {tuple(args.shape)}"
    print(f"{args.variant}: what each op costs in the step (skipped: its first result handed back{only})")
    for op, module, name in targets:
        real = getattr(module, name)
        versions = {"as it is": real, "skipped": skipping(real, None if args.shape is None else tuple(args.shape))}
        times: dict = {version: [] for version in versions}
        places = owners(module, name)
        try:
            for _ in range(args.blocks):
                for version, function in versions.items():
                    for place in places:
                        setattr(place, name, function)
                    for _ in range(3):
                        step.step()
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        step.step()
                    times[version].append((time.perf_counter() - start) / args.steps * 1e3)
        finally:
            for place in places:
                setattr(place, name, real)
        medians = {version: sorted(values)[len(values) // 2] for version, values in times.items()}
        saved = medians["as it is"] - medians["skipped"]
        print(f"  {op}: {medians['as it is']:.3f} -> {medians['skipped']:.3f} ms per step (median), "
              f"the op costs {saved:.3f} ms ({saved / medians['as it is']:.0%}); load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
