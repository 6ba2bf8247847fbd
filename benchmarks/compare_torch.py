"""numbacnn vs PyTorch (CPU) side by side, in one process, with the same thread count.

    python benchmarks/compare_torch.py                 # batches 1, 32, 128, float32
    python benchmarks/compare_torch.py --batches 32 --ops conv --min-time 0.5
    python benchmarks/compare_torch.py --first-call    # also cold-start times

For every op and batch size both libraries are warmed up, then called alternately
(numbacnn, torch, numbacnn, ...) so that noise from other processes hits both
alike; the table shows the median time of each, the ratio numbacnn / torch (< 1
means numbacnn is faster) and the rate each reaches: GFLOP/s for convolutions,
linear layers and whole steps, GB/s (bytes read + written) for pooling and ReLU.

Needs PyTorch's CPU build: ``pip install torch==2.13.0`` (never a bare
``pip install torch``, which pulls gigabytes of CUDA packages).
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
                               conv_inputs, pool_inputs, training_step_flops)


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--ops", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--min-time", type=float, default=0.3,
                        help="seconds of calls per op and library, at least (default 0.3)")
    parser.add_argument("--first-call", action="store_true",
                        help="also time a fresh process's first training step, with and without a disk cache")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(numba.get_num_threads())
    print(machine_description(torch))
    print()
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
    if args.first_call:
        cold, warm = first_call_times()
        print()
        print(f"first training step (batch 32) in a fresh process: {cold:.2f} s without a disk cache, "
              f"{warm:.2f} s with a warm cache")
    return 0


if __name__ == "__main__":
    sys.exit(main())
