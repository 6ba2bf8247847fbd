"""One module-level switch or setting of numbacnn at two values, in whole training steps:
the two alternate in blocks in one process (Tiny VGG 1x28x28, batch 64, float32, Numba's
thread count), median and min ms per step of each.

    python benchmarks/probes/switch_ab.py --variant kernel-size-7 \\
        numbacnn.kernels.cpu.conv_tuning.FFT_ENABLED True False
    python benchmarks/probes/switch_ab.py --variant stride-2 \\
        numbacnn.kernels.cpu.conv.LANES_STRIDE1_WEIGHT_MAX_OUT_WIDTH 7 0
    python benchmarks/probes/switch_ab.py --variant stride-2 \\
        numbacnn.kernels.cpu.conv.LANES_BLOCK_MAX_OUT_WIDTH 7 0     # lanes blocks on and off

For a rule the code reads at every call (``conv_tuning.FFT_ENABLED``, a size limit; the
fused wing's cached rule, ``fused.fast_path``, is asked again at each switch): where
this machine's speed moves by 10-25% from one process to the next, alternating processes
cannot show a 5% change; one process can. (``kernel_ab.py`` does the same for a kernel
module's functions against an older commit's.)
"""

import argparse
import ast
import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from benchmarks.common import TinyVGGStep, alternate_in_steps  # noqa: E402
from benchmarks.compare_torch import VARIANTS as LABELLED, variant_name  # noqa: E402
from numbacnn.fused import fast_path  # noqa: E402

VARIANTS = {variant_name(label): options for label, options in LABELLED}  # name -> tiny_vgg options


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("setting", help="module.NAME, e.g. numbacnn.kernels.cpu.conv_tuning.FFT_ENABLED")
    parser.add_argument("values", nargs=2, help="the two values (Python literals), e.g. True False")
    parser.add_argument("--variant", default="plain", choices=sorted(VARIANTS), help="the variant (default plain)")
    parser.add_argument("--blocks", type=int, default=15, help="blocks per value (default 15)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per block (default 60)")
    args = parser.parse_args(argv)
    module_name, _, name = args.setting.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        parser.error(f"no module {module_name!r} (give module.NAME)")
    if not hasattr(module, name):
        parser.error(f"{module_name} has no {name!r}")
    try:
        values = [ast.literal_eval(value) for value in args.values]
    except (ValueError, SyntaxError):
        parser.error(f"the values must be Python literals, got {args.values}")
    original = getattr(module, name)
    versions = {f"{name}={value!r}": {name: value} for value in values}
    step = TinyVGGStep(64, "float32", in_channels=1, image_size=28, **VARIANTS[args.variant])
    try:
        times = alternate_in_steps(step, versions, {name: [module]}, args.blocks, args.steps, warm=20)
    finally:
        setattr(module, name, original)
        fast_path.cache_clear()
    print(f"{args.variant}, {args.setting}; load average {os.getloadavg()[0]:.2f}")
    medians = {}
    for version, spent in times.items():
        ordered = sorted(spent)
        medians[version] = ordered[len(ordered) // 2]
        print(f"  {version:>40}: median {medians[version]:.3f} ms, min {ordered[0]:.3f} ms per step")
    first, second = medians.values()
    print(f"  second / first: {second / first:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
