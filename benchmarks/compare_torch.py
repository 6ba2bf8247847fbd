"""numbacnn vs PyTorch (CPU) side by side, in one process, with the same thread count.

    python benchmarks/compare_torch.py                 # whole Tiny VGG steps + per-kernel table (~1-2 min)
    python benchmarks/compare_torch.py --busy          # the same with one competing `yes > /dev/null`
    python benchmarks/compare_torch.py --no-compile    # without torch.compile (no compiler warm-up)
    python benchmarks/compare_torch.py --ops conv pool layers model --batches 32   # the per-op table
    python benchmarks/compare_torch.py --first-call    # also cold-start times
    python benchmarks/compare_torch.py --variants [--busy] [--no-compile]  # numbacnn train's variants (issue 18)
    python benchmarks/compare_torch.py --variant-kernels    # per-kernel table of each variant's step
    python benchmarks/compare_torch.py --variant-kernels --variant stride-2   # one variant's

Default run: a whole training step (forward, loss, backward, SGD update) of
numbacnn's ``tiny_vgg`` + ``SGD`` (the fused Sequential path, the default) against
the same network in PyTorch three ways: NCHW (the default layout), ``channels_last``
(oneDNN's faster path) and ``torch.compile`` (default mode, Inductor). Two shapes:
the main job (1x28x28, batch 64, padding 1) and CNN Explainer's (3x64x64, batch 32,
padding 0). All run in this process on the same number of threads (numba's, 2 on
the development machine), in alternating blocks of steps (numbacnn, NCHW,
channels_last, compiled, numbacnn, ...) so that other processes' noise hits all
alike; each figure is the median over blocks of the mean step time. Every ratio is
numbacnn / PyTorch's best of the three (< 1: numbacnn faster).

Then a per-kernel table: each kernel a numbacnn training step calls, timed inside
real steps, with GFLOP/s and the percentage of this machine's float32 roof, measured
here as NumPy's float32 matmul (OpenBLAS sgemm) on the same number of threads.
``os.getloadavg()`` is printed before and after: on a shared machine quote ratios
from one run, not absolute times.

``--ops`` gives the older per-op table (each kernel against PyTorch's NCHW op).

Needs PyTorch's CPU build: ``pip install torch==2.13.0`` (never a bare
``pip install torch``, which pulls gigabytes of CUDA packages). torch.compile needs
a C++ compiler (g++).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numba  # noqa: E402

import numbacnn  # noqa: E402
import numbacnn.functional as F  # noqa: E402
from benchmarks.common import (CLASSES, CONV_SHAPES, FILTERS, IN_CHANNELS, KERNEL,  # noqa: E402
                               LINEAR_FEATURES, POOL, POOL_SHAPES, TinyVGGStep, conv_forward_flops,
                               conv_inputs, pool_inputs, tiny_vgg_conv_layers, tiny_vgg_step_flops,
                               training_step_flops)


def median_times(functions, min_time: float, min_runs: int = 5, max_runs: int = 200, warmup: int = 2):
    """Median seconds per call of each function, calling them in turn."""
    for fn in functions:
        for _ in range(warmup):
            fn()
    samples = [[] for _ in functions]
    start = time.perf_counter()
    runs = 0
    while runs < min_runs or (time.perf_counter() - start < min_time * len(functions) and runs < max_runs):
        for fn, times in zip(functions, samples):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        runs += 1
    return [float(np.median(times)) for times in samples]


# --------------------------------------------------------------------------- #
# the cases: (op name, numbacnn callable, torch callable, work, unit)
# --------------------------------------------------------------------------- #


def conv_cases(torch, batch, dtype):
    tf = torch.nn.functional
    for name in CONV_SHAPES:
        x, w, b, gy = conv_inputs(name, batch, dtype)
        tx, tw, tb, tgy = (torch.from_numpy(a) for a in (x, w, b, gy))
        flops = conv_forward_flops(name, batch)
        yield (f"{name} forward", lambda x=x, w=w, b=b: F.conv2d(x, w, b),
               lambda tx=tx, tw=tw, tb=tb: tf.conv2d(tx, tw, tb), flops, "GFLOP/s")
        # the first layer needs no input gradient in training; the others do
        input_grad = name != "conv_1_1"
        label = f"{name} backward" + ("" if input_grad else " (gw, gb)")

        def torch_backward(tx=tx, tw=tw, tgy=tgy, input_grad=input_grad):
            return torch.ops.aten.convolution_backward(
                tgy, tx, tw, [tw.shape[0]], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                [input_grad, True, True])

        yield (label, lambda gy=gy, x=x, w=w, g=input_grad: F.conv2d_backward(gy, x, w, input_grad=g),
               torch_backward, flops * (2 if input_grad else 1), "GFLOP/s")


def pool_cases(torch, batch, dtype):
    for name in POOL_SHAPES:
        x, gy = pool_inputs(name, batch, dtype)
        tx, tgy = torch.from_numpy(x), torch.from_numpy(gy)
        _, indices = torch.ops.aten.max_pool2d_with_indices(tx, [POOL, POOL], [POOL, POOL])
        forward_bytes = x.nbytes + gy.nbytes
        yield (f"{name} forward", lambda x=x: F.max_pool2d(x, POOL),
               lambda tx=tx: torch.ops.aten.max_pool2d_with_indices(tx, [POOL, POOL], [POOL, POOL]),
               forward_bytes, "GB/s")
        yield (f"{name} backward", lambda gy=gy, x=x: F.max_pool2d_backward(gy, x, POOL),
               lambda tgy=tgy, tx=tx, indices=indices: torch.ops.aten.max_pool2d_with_indices_backward(
                   tgy, tx, [POOL, POOL], [POOL, POOL], [0, 0], [1, 1], False, indices),
               2 * x.nbytes + gy.nbytes, "GB/s")


def layer_cases(torch, batch, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, FILTERS, 62, 62)).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    tx, tgy = torch.from_numpy(x), torch.from_numpy(gy)
    yield ("relu forward (10x62x62)", lambda: F.relu(x), lambda: torch.relu(tx), 2 * x.nbytes, "GB/s")
    yield ("relu backward", lambda: F.relu_backward(gy, x), lambda: torch.ops.aten.threshold_backward(tgy, tx, 0),
           3 * x.nbytes, "GB/s")
    xl = rng.standard_normal((batch, LINEAR_FEATURES)).astype(dtype)
    wl = rng.standard_normal((CLASSES, LINEAR_FEATURES)).astype(dtype)
    bl = rng.standard_normal(CLASSES).astype(dtype)
    gl = rng.standard_normal((batch, CLASSES)).astype(dtype)
    txl, twl, tbl, tgl = (torch.from_numpy(a) for a in (xl, wl, bl, gl))
    flops = 2 * batch * LINEAR_FEATURES * CLASSES
    yield ("linear forward (1690->10)", lambda: F.linear(xl, wl, bl),
           lambda: torch.nn.functional.linear(txl, twl, tbl), flops, "GFLOP/s")
    yield ("linear backward", lambda: F.linear_backward(gl, xl, wl),
           lambda: (tgl @ twl, tgl.T @ txl, tgl.sum(0)), 2 * flops, "GFLOP/s")


def torch_tiny_vgg(torch, dtype):
    nn = torch.nn

    def conv(cin):
        return nn.Conv2d(cin, FILTERS, KERNEL)

    model = nn.Sequential(
        conv(IN_CHANNELS), nn.ReLU(), conv(FILTERS), nn.ReLU(), nn.MaxPool2d(POOL),
        conv(FILTERS), nn.ReLU(), conv(FILTERS), nn.ReLU(), nn.MaxPool2d(POOL),
        nn.Flatten(), nn.Linear(LINEAR_FEATURES, CLASSES))
    return model.to(getattr(torch, dtype))


def model_cases(torch, batch, dtype):
    ours = TinyVGGStep(batch, dtype)
    model = torch_tiny_vgg(torch, dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    tx = torch.from_numpy(ours.x)
    labels = torch.from_numpy(ours.labels)

    def torch_step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tx), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    def torch_infer():
        with torch.no_grad():
            return model(tx)

    step_flops = training_step_flops(batch)
    inference_flops = sum(conv_forward_flops(name, batch) for name in CONV_SHAPES) \
        + 2 * batch * LINEAR_FEATURES * CLASSES
    yield ("Tiny VGG training step", ours.step, torch_step, step_flops, "GFLOP/s")
    yield ("Tiny VGG inference", ours.infer, torch_infer, inference_flops, "GFLOP/s")


GROUPS = {"conv": conv_cases, "pool": pool_cases, "layers": layer_cases, "model": model_cases}


# --------------------------------------------------------------------------- #
# whole training steps: numbacnn vs PyTorch NCHW, channels_last, torch.compile
# --------------------------------------------------------------------------- #

# (label, in_channels, image size, batch, padding)
STEP_SHAPES = [
    ("main job: 1x28x28, batch 64, padding 1", 1, 28, 64, 1),
    ("CNN Explainer: 3x64x64, batch 32, padding 0", 3, 64, 32, 0),
]
TORCH_VARIANTS = ("NCHW", "channels_last", "compile")


def torch_tiny_vgg_like(torch, ours: TinyVGGStep, padding: int):
    """PyTorch's Tiny VGG with numbacnn's initial weights (same layers, same order)."""
    nn = torch.nn
    in_channels, size = ours.x.shape[1], ours.x.shape[2]
    final = tiny_vgg_conv_layers(in_channels, size, padding)[-1][3]

    def conv(cin):
        return nn.Conv2d(cin, FILTERS, KERNEL, padding=padding)

    model = nn.Sequential(
        conv(in_channels), nn.ReLU(), conv(FILTERS), nn.ReLU(), nn.MaxPool2d(POOL),
        conv(FILTERS), nn.ReLU(), conv(FILTERS), nn.ReLU(), nn.MaxPool2d(POOL),
        nn.Flatten(), nn.Linear(FILTERS * final * final, CLASSES)).to(getattr(torch, str(ours.x.dtype)))
    theirs, mine = list(model.parameters()), ours.model.parameters()
    if [tuple(p.shape) for p in theirs] != [tuple(p.data.shape) for p in mine]:
        raise AssertionError("compare_torch: the PyTorch Tiny VGG's parameters do not match numbacnn's")
    with torch.no_grad():
        for t, p in zip(theirs, mine):
            t.copy_(torch.from_numpy(np.ascontiguousarray(p.data)))
    return model


def torch_step(torch, ours: TinyVGGStep, padding: int, variant: str):
    """A PyTorch training step (zero_grad, forward, cross-entropy, backward, SGD) on
    ours' batch, in the given variant (one of TORCH_VARIANTS), on PyTorch's own Tiny VGG
    (:func:`torch_tiny_vgg_like`)."""
    return _training_step(torch, torch_tiny_vgg_like(torch, ours, padding), ours, variant)


def _training_step(torch, model, ours: TinyVGGStep, path: str):
    """The step function of ``model`` on ours' batch by one of TORCH_VARIANTS' paths
    (``channels_last`` converts ``model`` in place: give each path its own)."""
    x = torch.from_numpy(ours.x.copy())
    labels = torch.from_numpy(ours.labels)
    if path == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    run = torch.compile(model) if path == "compile" else model  # default mode (Inductor)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(run(x), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


# numbacnn train's model variants (label, tiny_vgg options), main job's shape (1x28x28, batch 64)
VARIANTS = [
    ("plain (padding 1)", dict(padding=1)),
    ("--batch-norm", dict(padding=1, batch_norm=True)),
    ("--stride 2", dict(padding=1, stride=2)),
    ("--kernel-size 5 --padding 2", dict(padding=2, kernel_size=5)),
    ("--kernel-size 7 --padding 3", dict(padding=3, kernel_size=7)),
]


def variant_name(label: str) -> str:
    """A VARIANTS label's name for ``--variant``: plain, batch-norm, stride-2, kernel-size-5, kernel-size-7."""
    return "plain" if label.startswith("plain") else label.split(" --")[0].removeprefix("--").replace(" ", "-")


def chosen_variants(names: list[str] | None, with_plain: bool = False) -> list[tuple[str, dict]]:
    """The VARIANTS named (all when ``names`` is empty or None), in VARIANTS' order; the
    plain one too with ``with_plain`` (the --variants table divides by its step)."""
    if not names:
        return list(VARIANTS)
    return [v for v in VARIANTS if variant_name(v[0]) in names or (with_plain and variant_name(v[0]) == "plain")]


def torch_model_like(torch, model):
    """The same network in PyTorch, layer by layer, with numbacnn's initial weights
    (Conv2d, BatchNorm2d, ReLU, MaxPool2d, Dropout, Flatten, Linear; nested Sequentials)."""
    from numbacnn import nn as ncnn

    layers = []
    for _, layer in ncnn.leaf_layers(model):
        if isinstance(layer, ncnn.Conv2d):
            filters, channels, kh, kw = layer.weight.shape
            layers.append(torch.nn.Conv2d(channels * layer.groups, filters, (kh, kw), stride=layer.stride,
                                          padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                                          bias=layer.bias is not None))
        elif isinstance(layer, ncnn.BatchNorm2d):
            layers.append(torch.nn.BatchNorm2d(layer.weight.shape[0]))
        elif isinstance(layer, ncnn.ReLU):
            layers.append(torch.nn.ReLU())
        elif isinstance(layer, ncnn.MaxPool2d):
            layers.append(torch.nn.MaxPool2d(layer.kernel_size, layer.stride))
        elif isinstance(layer, ncnn.Dropout):
            layers.append(torch.nn.Dropout(layer.p))
        elif isinstance(layer, ncnn.Flatten):
            layers.append(torch.nn.Flatten())
        elif isinstance(layer, ncnn.Linear):
            layers.append(torch.nn.Linear(layer.weight.shape[1], layer.weight.shape[0]))
        else:
            raise AssertionError(f"compare_torch: no PyTorch twin for {type(layer).__name__}")
    theirs = torch.nn.Sequential(*layers).to(getattr(torch, str(model.parameters()[0].dtype)))
    with torch.no_grad():
        for t, p in zip(theirs.parameters(), model.parameters()):
            t.copy_(torch.from_numpy(np.ascontiguousarray(p.data)))
    return theirs


def torch_variant_step(torch, ours: TinyVGGStep, path: str):
    """PyTorch's training step of the network of ``ours`` (any variant,
    :func:`torch_model_like`) by one of TORCH_VARIANTS' paths, on its own copy of the
    network; returns (step, model)."""
    model = torch_model_like(torch, ours.model)
    return _training_step(torch, model, ours, path), model  # converted in place for channels_last


def variant_steps(torch, blocks: int, block_time: float, dtype: str,
                  variants: list[tuple[str, dict]] = VARIANTS, compile_: bool = False) -> list[dict]:
    """Each of ``variants`` (plain first): numbacnn's step and PyTorch's (NCHW,
    channels_last, and with ``compile_`` torch.compile) in alternating blocks.

    Each PyTorch path has its own copy of the network with numbacnn's initial weights:
    ``Module.to(memory_format=...)`` converts in place, so one shared model would run
    the "NCHW" step on channels_last weights."""
    results = []
    torch_paths = [path for path in TORCH_VARIANTS if compile_ or path != "compile"]
    for label, options in variants:
        ours = TinyVGGStep(64, dtype, in_channels=1, image_size=28, **options)
        functions = {"numbacnn": ours.step}
        for path in torch_paths:
            if path == "compile":
                torch._dynamo.reset()  # a fresh compile per variant
            functions[path] = torch_variant_step(torch, ours, path)[0]
        for fn in functions.values():  # warm-up: JIT compilation, caches, torch.compile
            for _ in range(3):
                fn()
        samples = alternating_blocks(functions, blocks, block_time)
        results.append(dict(label=label, ms={k: 1e3 * float(np.median(v)) for k, v in samples.items()}))
    return results


def print_variant_steps(results: list[dict]) -> None:
    """The variants table: numbacnn against PyTorch's fastest path per variant (named)."""
    def fastest(ms: dict) -> tuple[str, float]:
        return min(((path, ms[path]) for path in TORCH_VARIANTS if path in ms), key=lambda item: item[1])

    plain = results[0]["ms"]
    best_plain = fastest(plain)[1]
    print("| variant (numbacnn train options) | numbacnn ms | PyTorch best ms (path) | ratio | numbacnn vs its plain "
          "step | PyTorch vs its plain step |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        ms = r["ms"]
        path, best = fastest(ms)
        print(f"| {r['label']} | {ms['numbacnn']:.2f} | {best:.2f} ({path}) | {ms['numbacnn'] / best:.2f} | "
              f"{ms['numbacnn'] / plain['numbacnn']:.2f} | {best / best_plain:.2f} |")
    paths = [path for path in TORCH_VARIANTS if path in plain]
    print("PyTorch ms by path: " + "; ".join(
        f"{r['label']}: " + ", ".join(f"{path} {r['ms'][path]:.2f}" for path in paths) for r in results))


def alternating_blocks(functions: dict, blocks: int, block_time: float) -> dict:
    """{name: per-call seconds of each block} with the functions' blocks in turn.

    Each function was warmed up by the caller; repetitions per block are set from
    three timed calls so that a block lasts about ``block_time`` seconds."""
    reps = {}
    for name, fn in functions.items():
        calls = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            calls.append(time.perf_counter() - t0)
        reps[name] = max(1, min(500, int(round(block_time / max(float(np.median(calls)), 1e-6)))))
    samples = {name: [] for name in functions}
    for _ in range(blocks):
        for name, fn in functions.items():
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / reps[name])
    return samples


def measure_roof(threads: int, size: int = 2048, seconds: float = 1.5) -> float:
    """This machine's float32 roof in GFLOP/s: the best of repeated NumPy float32
    matmuls (OpenBLAS sgemm, ``size`` square) on ``threads`` threads, in a fresh
    process so that BLAS's thread count can be set before NumPy loads."""
    code = (
        "import time, numpy as np\n"
        f"n = {size}\n"
        "rng = np.random.default_rng(0)\n"
        "a = rng.standard_normal((n, n), dtype=np.float32); b = rng.standard_normal((n, n), dtype=np.float32)\n"
        "a @ b\n"
        "best, start = float('inf'), time.perf_counter()\n"
        f"while time.perf_counter() - start < {seconds} or best == float('inf'):\n"
        "    t0 = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t0)\n"
        "print(2 * n ** 3 / best / 1e9)\n")
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if result.returncode:
        raise RuntimeError(f"compare_torch: the roof measurement failed: {result.stderr.strip()[-300:]}")
    return float(result.stdout.strip().splitlines()[-1])


def load_average() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def page_faults_per_step(fn, steps: int = 20) -> float:
    """Minor page faults per call of ``fn`` (``getrusage``'s ``ru_minflt``) over
    ``steps`` warm calls: the cost of arrays allocated afresh each step (large NumPy
    arrays are mmap'd, touched page by page, and given back when freed). Counted
    outside any timed block."""
    import resource

    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def whole_steps(torch, blocks: int, block_time: float, compile_: bool, dtype: str) -> list[dict]:
    """For each of STEP_SHAPES: numbacnn's and PyTorch's step times (alternating blocks)."""
    results = []
    variants = [v for v in TORCH_VARIANTS if compile_ or v != "compile"]
    for label, in_channels, size, batch, padding in STEP_SHAPES:
        ours = TinyVGGStep(batch, dtype, in_channels=in_channels, image_size=size, padding=padding)
        functions = {"numbacnn": ours.step}
        compile_seconds = None
        if compile_:
            torch._dynamo.reset()  # a fresh compile per shape, never a dynamic-shape recompile
        for variant in variants:
            functions[variant] = torch_step(torch, ours, padding, variant)
        for name, fn in functions.items():  # warm-up: JIT compilation, caches, torch.compile
            t0 = time.perf_counter()
            losses = [fn() for _ in range(3)]
            if name == "compile":
                compile_seconds = time.perf_counter() - t0
            if not all(np.isfinite(losses)):
                raise AssertionError(f"compare_torch: {name} step loss is not finite: {losses}")
        samples = alternating_blocks(functions, blocks, block_time)
        faults = {name: page_faults_per_step(fn) for name, fn in functions.items()}
        results.append(dict(label=label, shape=(in_channels, size, batch, padding), samples=samples, faults=faults,
                            flops=tiny_vgg_step_flops(batch, in_channels, size, padding),
                            compile_seconds=compile_seconds))
    return results


def print_whole_steps(results: list[dict], roof: float) -> None:
    print("| step | numbacnn ms | torch NCHW ms | torch channels_last ms | torch.compile ms | "
          "numbacnn / best torch | numbacnn / NCHW | numbacnn GFLOP/s (% roof) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        medians = {name: float(np.median(times)) for name, times in r["samples"].items()}
        torch_names = [n for n in TORCH_VARIANTS if n in medians]
        best = min(torch_names, key=medians.get)
        ours = medians["numbacnn"]
        cells = []
        for name in ("numbacnn",) + TORCH_VARIANTS:
            if name not in medians:
                cells.append("-")
                continue
            times = r["samples"][name]
            cell = f"{medians[name] * 1e3:.2f} ({min(times) * 1e3:.2f}-{max(times) * 1e3:.2f})"
            cells.append(f"**{cell}**" if name == best else cell)
        rate = r["flops"] / ours / 1e9
        print(f"| {r['label']} | " + " | ".join(cells) + f" | **{ours / medians[best]:.2f}** (vs {best}) | "
              f"{ours / medians['NCHW']:.2f} | {rate:.1f} ({100 * rate / roof:.0f}%) |")
    print()
    print("ms: median of the blocks' mean step time (fastest-slowest block in brackets); bold: PyTorch's best; "
          "ratio < 1: numbacnn faster.")
    for r in results:
        faults = r.get("faults") or {}
        print(f"minor page faults per step (ru_minflt over 20 warm steps, untimed), {r['label']}: "
              + ", ".join(f"{name} {count:.0f}" for name, count in faults.items()))
    for r in results:
        if r["compile_seconds"] is not None:
            print(f"torch.compile warm-up (compile + 3 steps), {r['label']}: {r['compile_seconds']:.1f} s")


# --------------------------------------------------------------------------- #
# per-kernel table: the calls a numbacnn step makes, timed inside real steps
# --------------------------------------------------------------------------- #


def _conv_dims(x_padded, w, stride=(1, 1)):
    """(N, C, F, OH, OW, FLOPs) of a convolution of an already padded input."""
    n, (f, c, kh, kw) = x_padded.shape[0], w.shape
    oh, ow = (x_padded.shape[2] - kh) // stride[0] + 1, (x_padded.shape[3] - kw) // stride[1] + 1
    return n, c, f, oh, ow, 2 * n * f * c * kh * kw * oh * ow


def _describe(name: str, args: tuple, kwargs: dict) -> tuple[str, float, str]:
    """(row label, work, unit) of one call: FLOPs for convolutions and matrix
    products, bytes read + written for memory-bound copies and masks."""
    if name == "conv2d_relu_padded":
        n, c, f, oh, ow, flops = _conv_dims(args[0], args[1])
        pool = " + max-pool (indices)" if kwargs.get("pooled") is not None else ""
        return f"conv {c}->{f} {oh}x{ow}: forward + ReLU{pool}", flops, "GFLOP/s"
    if name == "conv2d_backward_padded":
        n, c, f, oh, ow, flops = _conv_dims(args[2], args[3])
        if kwargs.get("gx") is None:
            return f"conv {c}->{f} {oh}x{ow}: grad-weight + grad-bias", flops, "GFLOP/s"
        mask = " x ReLU mask" if kwargs.get("mask") is not None else ""
        return f"conv {c}->{f} {oh}x{ow}: grad-weight + grad-bias + grad-input{mask}", 2 * flops, "GFLOP/s"
    if name == "strided_conv2d_backward":
        stride = args[3]
        n, c, f, oh, ow, flops = _conv_dims(args[1], args[2], stride)
        if kwargs.get("gx", args[5] if len(args) > 5 else None) is None:  # chain.py passes gx by position
            return f"conv {c}->{f} {oh}x{ow} stride {stride[0]}: grad-weight + grad-bias", flops, "GFLOP/s"
        return f"conv {c}->{f} {oh}x{ow} stride {stride[0]}: grad-weight + grad-bias + grad-input", 2 * flops, "GFLOP/s"
    if name == "max_pool2d_relu_backward_padded":
        gp = args[2]
        return f"max-pool backward (indices) x ReLU mask {tuple(gp.shape[1:])}", 6 * gp.nbytes, "GB/s"
    if name in ("copy_into_border", "copy_interior"):
        src = args[2] if name == "copy_into_border" else args[2]
        what = "input into the padded buffer" if name == "copy_into_border" else "gradient re-bordered (plane grad-weight)"
        return f"copy: {what}", 2 * np.asarray(src).nbytes, "GB/s"
    if name == "relu_backward_padded":
        return "ReLU backward into bordered buffer", 3 * args[2].nbytes, "GB/s"
    if name == "conv2d_padded":  # strided blocks too (bordered_ops.conv2d_padded's fifth argument)
        stride = kwargs.get("stride", args[4] if len(args) > 4 else (1, 1))
        n, c, f, oh, ow, flops = _conv_dims(args[0], args[1], stride)
        strided = f" stride {stride[0]}" if tuple(stride) != (1, 1) else ""
        return f"conv {c}->{f} {oh}x{ow}{strided}: forward into z (batch norm's input)", flops, "GFLOP/s"
    if name == "batch_norm_statistics":
        z = args[0]
        return f"batch norm statistics {tuple(z.shape[1:])} (2 passes)", 2 * z.nbytes, "GB/s"
    if name == "batch_norm_relu_padded":
        z = args[0]
        pool = " + max-pool (indices)" if kwargs.get("pooled") is not None else ""
        return f"batch norm + ReLU{pool} {tuple(z.shape[1:])}", 2 * z.nbytes, "GB/s"
    if name == "batch_norm_pool_backward_padded":
        z = args[6]
        # reads z twice (the windows' maxima, then every element), gp, pooled and the
        # int64 indices twice (a quarter, a quarter and half of z's bytes), writes gz
        return f"max-pool backward x ReLU mask + batch norm backward {tuple(z.shape[1:])}", 5 * z.nbytes, "GB/s"
    if name == "batch_norm_backward_padded":
        z = args[3]
        return f"batch norm backward {tuple(z.shape[1:])}", 5 * z.nbytes, "GB/s"
    if name in ("conv2d", "conv2d_backward"):
        x, w = (args[0], args[1]) if name == "conv2d" else (args[1], args[2])
        stride = kwargs.get("stride", args[3] if name == "conv2d" and len(args) > 3 else
                            (args[3] if name == "conv2d_backward" and len(args) > 3 else 1))
        from numbacnn.shapes import conv_output_size
        pad = kwargs.get("padding", args[4] if len(args) > 4 else 0)
        s_h = stride[0] if isinstance(stride, tuple) else stride
        p_h = pad[0] if isinstance(pad, tuple) else pad
        f, c, kh, kw = w.shape
        oh = conv_output_size(x.shape[2], kh, s_h, p_h)
        ow = conv_output_size(x.shape[3], kw, s_h, p_h)
        flops = 2 * x.shape[0] * f * c * kh * kw * oh * ow
        what = "forward" if name == "conv2d" else "backward (grad-weight, grad-bias, grad-input)"
        return (f"conv {c}->{f} {oh}x{ow} stride {s_h}: {what}", flops if name == "conv2d" else 2 * flops,
                "GFLOP/s")
    if name == "linear":
        x, w = args[0], args[1]
        return f"linear {w.shape[1]}->{w.shape[0]} forward", 2 * x.shape[0] * w.shape[0] * w.shape[1], "GFLOP/s"
    if name == "linear_backward":
        gy, x, w = args[0], args[1], args[2]
        return f"linear {w.shape[1]}->{w.shape[0]} backward", 4 * gy.shape[0] * w.shape[0] * w.shape[1], "GFLOP/s"
    if name == "softmax_cross_entropy":
        return "softmax cross-entropy (loss + gradient)", 0, ""
    if name == "strided_conv2d_relu_padded":
        n, c, f, oh, ow, flops = _conv_dims(args[0], args[1], args[6])
        return f"conv {c}->{f} {oh}x{ow} stride {args[6][0]}: forward + ReLU", flops, "GFLOP/s"
    return _describe_lanes(name, args) or (name.replace("_", " "), 0, "")


def _describe_lanes(name: str, args: tuple) -> tuple[str, float, str] | None:
    """:func:`_describe` for a lanes block's ops (``numbacnn/fused/lanes_ops.py``; maps
    (C, H, W, N)), or None for another name."""
    if name in ("to_lanes", "from_lanes"):
        what = "into" if name == "to_lanes" else "out of"
        return f"lanes block: transpose {what} the lanes {tuple(args[1].shape)}", 2 * args[1].nbytes, "GB/s"
    if name == "conv":
        z_t, w, stride = args[0], args[2], args[4]
        f, c, kh, kw = w.shape
        flops = 2 * z_t.shape[3] * f * c * kh * kw * z_t.shape[1] * z_t.shape[2]
        return (f"lanes block: conv {c}->{f} {z_t.shape[1]}x{z_t.shape[2]} stride {stride[0]} forward", flops,
                "GFLOP/s")
    if name == "relu_pool":
        pool = " + max-pool" if args[1] is not None else ""
        return f"lanes block: ReLU{pool} {tuple(args[2].shape[:3])}", 2 * args[2].nbytes, "GB/s"
    if name == "output_gradient":  # (gz_t, gy_t, z_t, which, gz_border)
        pool = "max-pool backward x " if args[3] is not None else ""
        return f"lanes block: {pool}ReLU mask {tuple(args[2].shape[:3])}", 3 * args[2].nbytes, "GB/s"
    if name == "weight_bias_gradient":  # (gz_t, gz_border, x_t, w, stride)
        x_t, w, stride = args[2], args[3], args[4]
        f, c, kh, kw = w.shape
        oh, ow = (x_t.shape[1] - kh) // stride[0] + 1, (x_t.shape[2] - kw) // stride[1] + 1
        flops = 2 * x_t.shape[3] * f * c * kh * kw * oh * ow
        return (f"lanes block: conv {c}->{f} {oh}x{ow} stride {stride[0]} grad-weight + grad-bias",
                flops, "GFLOP/s")
    if name == "input_gradient":
        dx, w, stride, pad = args[0], args[2], args[3], args[4]
        f, c, kh, kw = w.shape
        oh, ow = ((dx.shape[1] + 2 * pad[0] - kh) // stride[0] + 1, (dx.shape[2] + 2 * pad[1] - kw) // stride[1] + 1)
        flops = 2 * dx.shape[3] * f * c * kh * kw * oh * ow
        return f"lanes block: conv {c}->{f} {oh}x{ow} stride {stride[0]} grad-input", flops, "GFLOP/s"
    return None


def kernel_table(ours: TinyVGGStep, steps: int) -> tuple[list[tuple], float]:
    """Run ``steps`` training steps with every functional call the step makes wrapped
    in a timer; returns ([(label, mean seconds per step, work, unit)], mean step
    seconds). Only the outermost call is timed (a fused op calling an unfused one is
    one row)."""
    import numbacnn.functional.fused as FF
    import numbacnn.fused.bordered_ops as BO
    import numbacnn.fused.lanes_ops as LO

    wrapped, depth = [], [0]
    order: list[str] = []
    times: dict[str, list[float]] = {}
    described: dict[str, tuple[float, str]] = {}
    current: dict[str, float] = {}

    def wrap(module, name):
        original = getattr(module, name, None)
        if original is None or not callable(original):
            return

        def timed(*args, **kwargs):
            if depth[0]:
                return original(*args, **kwargs)
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                depth[0] -= 1
                label, work, unit = _describe(name, args, kwargs)
                key = label
                while key in current:  # the same kind of call twice in one step: its own row
                    key += " "
                current[key] = elapsed
                described[key] = (work, unit)

        wrapped.append((module, name, original))
        setattr(module, name, timed)

    for name in ("conv2d_relu_padded", "conv2d_backward_padded", "max_pool2d_relu_backward_padded",
                 "copy_into_border", "copy_interior", "relu_backward_padded", "conv2d_padded",
                 "batch_norm_statistics", "batch_norm_relu_padded", "batch_norm_backward_padded",
                 "batch_norm_pool_backward_padded",
                 "strided_conv2d_backward", "strided_conv2d_relu_padded"):
        wrap(BO, name)  # the fused wing's fast path (numbacnn/fused/bordered_ops.py)
    for name in ("to_lanes", "conv", "relu_pool", "from_lanes", "output_gradient", "weight_bias_gradient",
                 "input_gradient"):
        wrap(LO, name)  # its lanes blocks (numbacnn/fused/lanes_ops.py)
    for name in ("conv2d_relu", "conv2d_relu_max_pool2d", "max_pool2d_relu_backward", "conv2d_backward_relu_mask"):
        wrap(FF, name)  # its composed path
    for name in ("linear", "linear_backward", "softmax_cross_entropy", "conv2d", "conv2d_backward", "relu",
                 "relu_backward", "max_pool2d", "max_pool2d_backward"):
        wrap(F, name)
    optimizer = ours.optimizer
    original_step = optimizer.step

    def sgd_step():
        t0 = time.perf_counter()
        original_step()
        current["SGD update"] = time.perf_counter() - t0
        described["SGD update"] = (0, "")

    optimizer.step = sgd_step
    step_times = []
    try:
        for _ in range(steps):
            current.clear()
            t0 = time.perf_counter()
            ours.step()
            step_times.append(time.perf_counter() - t0)
            for key, elapsed in current.items():
                if key not in times:
                    order.append(key)
                    times[key] = []
                times[key].append(elapsed)
    finally:
        for module, name, original in reversed(wrapped):
            setattr(module, name, original)
        del optimizer.step
    # means, not medians: the rows must add up to the step (on a busy machine a few
    # calls per step are hit by a descheduled thread, and per-row medians would leave
    # those hits in "everything else")
    rows = [(key.rstrip(), float(np.sum(times[key])) / steps, *described[key]) for key in order]
    return rows, float(np.mean(step_times))


def _print_kernel_rows(rows: list[tuple], step_seconds: float, roof: float) -> None:
    """The per-kernel table's header and one row per kernel (from :func:`kernel_table`)."""
    print("| kernel | ms per step | % of step | rate | % of roof |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, work, unit in rows:
        rate = f"{work / seconds / 1e9:.1f} {unit}" if work and seconds > 0 else "-"
        share = f"{100 * work / seconds / 1e9 / roof:.0f}%" if unit == "GFLOP/s" and seconds > 0 else "-"
        print(f"| {name} | {seconds * 1e3:.3f} | {100 * seconds / step_seconds:.0f}% | {rate} | {share} |")


def print_kernel_tables(dtype: str, steps: int, roof: float) -> None:
    for label, in_channels, size, batch, padding in STEP_SHAPES:
        ours = TinyVGGStep(batch, dtype, in_channels=in_channels, image_size=size, padding=padding)
        for _ in range(3):
            ours.step()
        rows, step_seconds = kernel_table(ours, steps)
        print(f"numbacnn per kernel, {label} (mean of {steps} steps, calls in step order):")
        print()
        _print_kernel_rows(rows, step_seconds, roof)
        rest = step_seconds - sum(row[1] for row in rows)
        print(f"| everything else (Python, dispatch, Flatten, zero_grad) | {rest * 1e3:.3f} | "
              f"{100 * rest / step_seconds:.0f}% | - | - |")
        flops = tiny_vgg_step_flops(batch, in_channels, size, padding)
        print(f"| **whole step** | {step_seconds * 1e3:.3f} | 100% | {flops / step_seconds / 1e9:.1f} GFLOP/s | "
              f"{100 * flops / step_seconds / 1e9 / roof:.0f}% |")
        print()


def print_variant_kernel_tables(dtype: str, steps: int, roof: float,
                                variants: list[tuple[str, dict]] = VARIANTS) -> None:
    """:func:`print_kernel_tables` for each of ``variants`` (main job's shape, batch 64);
    the whole step's GFLOP/s from the model's own forward FLOP count, times 3."""
    for label, options in variants:
        ours = TinyVGGStep(64, dtype, in_channels=1, image_size=28, **options)
        for _ in range(3):
            ours.step()
        rows, step_seconds = kernel_table(ours, steps)
        print(f"numbacnn per kernel, {label} (1x28x28, batch 64; mean of {steps} steps, calls in step order; "
              f"load {load_average()}):")
        print()
        _print_kernel_rows(rows, step_seconds, roof)
        rest = step_seconds - sum(row[1] for row in rows)
        print(f"| everything else | {rest * 1e3:.3f} | {100 * rest / step_seconds:.0f}% | - | - |")
        flops = 3 * ours.model.flops(tuple(ours.x.shape))
        print(f"| **whole step** | {step_seconds * 1e3:.3f} | 100% | ~{flops / step_seconds / 1e9:.1f} GFLOP/s | "
              f"~{100 * flops / step_seconds / 1e9 / roof:.0f}% |")
        print()


class BusyProcess:
    """One competing busy process, ``yes > /dev/null``, for the duration of a block."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.process = enabled, None

    def __enter__(self):
        if self.enabled:
            self.process = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


# --------------------------------------------------------------------------- #
# reporting
# --------------------------------------------------------------------------- #


def machine_description(torch) -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return (f"CPU: {model}, {os.cpu_count()} logical cores; threads: numbacnn {numba.get_num_threads()}, "
            f"torch {torch.get_num_threads()}\n"
            f"Python {platform.python_version()}, numba {numba.__version__}, numpy {np.__version__}, "
            f"torch {torch.__version__}, numbacnn {numbacnn.__version__}\n"
            f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
            # both libraries use GNU OpenMP in one process, so both run under this setting
            # (numbacnn sets 10000 unless the user chose; libgomp's own default is 300000)
            f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')} for both libraries")


def first_call_times() -> tuple[float, float]:
    """(seconds without a disk cache, seconds with a warm one) to the first training step."""
    import tempfile

    from benchmarks.bench_compile import first_step_seconds

    with tempfile.TemporaryDirectory() as cache_dir:
        cold = first_step_seconds(cache_dir)
        warm = first_step_seconds(cache_dir)
    return cold, warm


def per_op_table(torch, args) -> None:
    """The older table: each kernel against PyTorch's NCHW op, alternating calls."""
    print("| op | batch | numbacnn ms | torch ms | ratio | numbacnn rate | torch rate |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for batch in args.batches:
        for group in args.ops:
            for name, ours, theirs, work, unit in GROUPS[group](torch, batch, args.dtype):
                our_time, their_time = median_times([ours, theirs], args.min_time)
                scale = 1e9
                print(f"| {name} | {batch} | {our_time * 1e3:.3f} | {their_time * 1e3:.3f} | "
                      f"{our_time / their_time:.2f} | {work / our_time / scale:.1f} {unit} | "
                      f"{work / their_time / scale:.1f} {unit} |", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--busy", action="store_true",
                        help="run the steps and kernels with one competing busy process (`yes > /dev/null`, "
                             "started and killed here); the roof is measured before it starts")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave torch.compile out (its first compile takes ~1 min on 2 busy cores; "
                             "later runs reuse Inductor's on-disk cache)")
    parser.add_argument("--blocks", type=int, default=7, help="alternating blocks per library (default 7)")
    parser.add_argument("--block-time", type=float, default=0.2,
                        help="seconds per block, about (default 0.2)")
    parser.add_argument("--kernel-steps", type=int, default=15,
                        help="instrumented steps for the per-kernel table (0: no table; default 15)")
    parser.add_argument("--roof", type=float, default=None,
                        help="float32 roof in GFLOP/s to rate kernels against, instead of measuring it now "
                             "(a busy machine measures a lower roof)")
    parser.add_argument("--ops", nargs="+", default=None, choices=list(GROUPS),
                        help="instead: the older per-op table against PyTorch NCHW, for these groups")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128], help="batches of --ops")
    parser.add_argument("--min-time", type=float, default=0.3,
                        help="--ops: seconds of calls per op and library, at least (default 0.3)")
    parser.add_argument("--variants", action="store_true",
                        help="numbacnn train's model variants (batch norm, stride 2, 5x5, 7x7) against PyTorch")
    parser.add_argument("--variant-kernels", action="store_true",
                        help="per-kernel tables of each of numbacnn train's variants (no PyTorch runs)")
    parser.add_argument("--variant", nargs="+", default=None, metavar="NAME",
                        choices=[variant_name(label) for label, _ in VARIANTS],
                        help="only these variants for --variants (plain too: the table divides by its step) "
                             "and --variant-kernels: " + ", ".join(variant_name(label) for label, _ in VARIANTS))
    parser.add_argument("--first-call", action="store_true",
                        help="also time a fresh process's first training step, with and without a disk cache")
    args = parser.parse_args(argv)
    if args.variant and not (args.variants or args.variant_kernels):
        parser.error("--variant picks variants of --variants or --variant-kernels: add one of them")

    import torch

    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    print(machine_description(torch))
    if args.variant_kernels:
        roof = args.roof or measure_roof(numba.get_num_threads())
        print(f"roof (float32 sgemm, {numba.get_num_threads()} threads): {roof:.1f} GFLOP/s")
        print_variant_kernel_tables(args.dtype, args.kernel_steps, roof, chosen_variants(args.variant))
        return 0
    if args.variants:
        print(f"competing busy process (yes > /dev/null): {'yes' if args.busy else 'no'}; "
              f"load average before: {load_average()}")
        with BusyProcess(args.busy):
            results = variant_steps(torch, args.blocks, args.block_time, args.dtype,
                                    chosen_variants(args.variant, with_plain=True), compile_=not args.no_compile)
        print(f"load average after the steps: {load_average()}")
        print_variant_steps(results)
    elif args.ops:
        with BusyProcess(args.busy):
            per_op_table(torch, args)
    else:
        if args.roof:
            roof = args.roof
            print(f"float32 roof: {roof:.1f} GFLOP/s (given with --roof; measured now: {measure_roof(threads):.1f})")
        else:
            roof = measure_roof(threads)
            print(f"float32 roof: {roof:.1f} GFLOP/s (best NumPy float32 2048x2048 matmul, OpenBLAS, "
                  f"{threads} threads, measured now)")
        print(f"competing busy process (yes > /dev/null): {'yes' if args.busy else 'no'}")
        print()
        with BusyProcess(args.busy):
            results = whole_steps(torch, args.blocks, args.block_time, not args.no_compile, args.dtype)
            print(f"load average after the steps: {load_average()}")
            print()
            print_whole_steps(results, roof)
            print()
            if args.kernel_steps > 0:
                print_kernel_tables(args.dtype, args.kernel_steps, roof)
    print(f"load average at the end: {load_average()}")
    if args.first_call:
        cold, warm = first_call_times()
        print()
        print(f"first training step (batch 32) in a fresh process: {cold:.2f} s without a disk cache, "
              f"{warm:.2f} s with a warm cache")
    return 0


if __name__ == "__main__":
    sys.exit(main())
