"""What one op costs inside a whole training step: the step with the op as it is,
against the step with the op skipped (its first result handed back again), alternating
in blocks in one process (Tiny VGG 1x28x28, batch 64, float32, Numba's thread count).

    python benchmarks/probes/op_cost.py --variant stride-2 numbacnn.fused.bordered_ops.strided_conv2d_backward
    python benchmarks/probes/op_cost.py --variant stride-2 --by-signature \\
        numbacnn.kernels.cpu.conv.conv2d_backward_weight    # given a new output array each call
    python benchmarks/probes/op_cost.py --variant stride-2 --shape 64x10x6x6@2 \\
        numbacnn.fused.bordered_ops.conv2d_backward_padded      # the 4x4 layer's backward only

The difference is what the step would gain if the op were free: an upper bound on
what rewriting it can save. Each version's blocks spread by about +-0.05-0.1 ms on
this project's 2-core machine (printed under each line): a cost smaller than that is
noise. It is measured in the step, not alone, because a kernel
that is faster alone need not make the step faster (what it leaves in the caches, when
the threads wake: the ninth and tenth sessions' kernel_ab.py runs); and it needs no
timer around each call (the per-kernel table's timers add their own cost).

Skipped means: the op is replaced by a function that, for the same argument objects
(the buffers a step reuses), returns what the op returned the first time, without
running it; so what it writes is stale (or never written, for an output allocated
anew each call) and the step trains on wrong values. Timing only. The arguments are
kept with each result, so an op called with new arrays every step runs every time and
its cache grows by a call's arguments each step; the line printed counts the calls
skipped and run. Each name is ``module.function``; it is swapped on the module, and on
the backend package too where that re-exports it (``numbacnn.functional``'s calls). A
caller that bound the function itself (``from module import function``, or a jitted
caller) keeps the original: nothing is skipped, and the line says so. With
``--by-signature`` calls are matched by their arguments' shapes and values instead (an
op given new arrays each step is skipped too; what it would write into them is never
written, so later ops read whatever the allocation held).
"""

import argparse
import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from benchmarks.common import TinyVGGStep, alternate_in_steps, places_of  # noqa: E402
from benchmarks.compare_torch import VARIANTS as LABELLED, variant_name  # noqa: E402

VARIANTS = {variant_name(label): options for label, options in LABELLED}  # name -> tiny_vgg options


def _signature(value):
    """An argument as a cache key by its kind: an array's shape and dtype, a tuple's
    items, a number or string itself, anything else by identity."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return ("array", tuple(value.shape), str(value.dtype))
    if isinstance(value, tuple):
        return tuple(_signature(item) for item in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return id(value)


def _has_shape(args: tuple, shape: tuple, position: int | None) -> bool:
    """Whether the argument at ``position`` (None: any) has this shape."""
    chosen = args if position is None else args[position:position + 1]
    return any(tuple(getattr(a, "shape", ())) == shape for a in chosen)


def skipping(real, shape: tuple | None = None, by_signature: bool = False):
    """``real`` replaced by its first result per tuple of argument objects.

    ``shape`` (a shape, and an argument's position or None for any): only the calls
    with such an argument are skipped, the others run. ``by_signature``: results kept
    per tuple of the arguments' shapes and values instead (ops given new arrays each
    step). ``skipped.calls`` counts [skipped, run] calls."""
    results = {}

    def skipped(*args, **kwargs):
        if shape is not None and not _has_shape(args, *shape):
            skipped.calls[1] += 1
            return real(*args, **kwargs)
        if by_signature:
            key = tuple(_signature(a) for a in args) + tuple((k, _signature(v)) for k, v in sorted(kwargs.items()))
        else:
            key = tuple(id(a) for a in args) + tuple((k, id(v)) for k, v in sorted(kwargs.items()))
        if key in results:
            skipped.calls[0] += 1
            return results[key][1]
        skipped.calls[1] += 1
        # the arguments are kept with the result: an id is an object's only while it lives
        results[key] = ((args, kwargs), real(*args, **kwargs))
        return results[key][1]

    skipped.calls = [0, 0]
    return skipped


def _shape(text: str) -> tuple:
    """"64x10x16x16" -> ((64, 10, 16, 16), None); "64x10x16x16@2" -> (..., 2): the
    shape, and the position of the argument that must have it (None: any argument)."""
    sizes, _, position = text.partition("@")
    try:
        return tuple(int(size) for size in sizes.lower().split("x")), int(position) if position else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is sizes joined by x, and optionally @ and an argument's "
                                         f"position, e.g. 64x10x16x16 or 64x10x30x30@2, got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ops", nargs="+", help="module.function, each measured on its own")
    parser.add_argument("--variant", default="plain", choices=sorted(VARIANTS),
                        help="numbacnn train's variant to step (default plain)")
    parser.add_argument("--blocks", type=int, default=7, help="blocks per version (default 7)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per block (default 60)")
    parser.add_argument("--shape", type=_shape, default=None, metavar="NxCxHxW",
                        help="skip only the calls with an argument of this shape (one layer of several that "
                             "call the op), e.g. --shape 64x10x16x16: a 14x14 3x3 layer's padded input; "
                             "SHAPE@I: the positional argument I, from 0 (conv2d_backward_padded's x_padded is @2)")
    parser.add_argument("--by-signature", action="store_true",
                        help="skip by the arguments' shapes and values, not their identity (an op called with new "
                             "arrays each step); outputs the caller allocates anew are then never written")
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

    only = ""
    if args.shape is not None:
        where = "an argument" if args.shape[1] is None else f"argument {args.shape[1]}"
        only = f", only the calls with {where} of shape {args.shape[0]}"
    print(f"{args.variant}: what each op costs in the step (skipped: its first result handed back{only})")
    for op, module, name in targets:
        # a fresh network per op: the skipped blocks leave wrong weights behind
        step = TinyVGGStep(64, "float32", in_channels=1, image_size=28, **VARIANTS[args.variant])
        for _ in range(20):
            step.step()
        real = getattr(module, name)
        skipped = skipping(real, args.shape, args.by_signature)
        versions = {"as it is": real, "skipped": skipped}
        places = {name: places_of(module, name)}
        try:
            times = alternate_in_steps(step, {label: {name: f} for label, f in versions.items()}, places,
                                       args.blocks, args.steps)
        finally:
            for place in places[name]:
                setattr(place, name, real)
        medians = {version: sorted(values)[len(values) // 2] for version, values in times.items()}
        spread = ", ".join(f"{version} {min(values):.3f}-{max(values):.3f}" for version, values in times.items())
        saved = medians["as it is"] - medians["skipped"]
        print(f"  {op}: {medians['as it is']:.3f} -> {medians['skipped']:.3f} ms per step (median), "
              f"the op costs {saved:.3f} ms ({saved / medians['as it is']:.0%}); load {os.getloadavg()[0]:.2f}; "
              f"calls skipped {skipped.calls[0]}, run {skipped.calls[1]}")
        print(f"    blocks' range, ms: {spread} (a cost within it is noise)")
        if not skipped.calls[0]:
            print(f"    (never skipped: the step does not call {op} through {module.__name__}, or calls it "
                  "with new arguments every time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
