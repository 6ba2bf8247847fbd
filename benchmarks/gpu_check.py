"""The Python half of ``benchmarks/gpu_check.sh``: timings beside PyTorch/cuDNN and one
epoch of ``numbacnn train --device cuda``, written as one Markdown report.

    python benchmarks/gpu_check.py --out gpu_check.md [--tests-log LOG --tests-status RC]
    python benchmarks/gpu_check.py --tiny --out /tmp/check.md   # plumbing, under the simulator

Sections of the report:

- the machine: GPU model, driver, CUDA runtime, versions of numbacnn, numba,
  numba-cuda, NumPy and PyTorch, the load average;
- (a) the test suite against the GPU (run by the shell script; its summary line);
- (b) milliseconds per call, median of alternating runs, each followed by a device
  synchronisation: a Tiny VGG training step (forward, loss, backward, SGD) and each
  kernel, numbacnn beside PyTorch in NCHW and in channels_last, at batch 32, 128,
  512 for 3x64x64 (CNN Explainer, padding 0) and 1x28x28 (the main job,
  Fashion-MNIST, padding 1); ratio = numbacnn / PyTorch (< 1: numbacnn faster);
- (c) one epoch of ``numbacnn train --device cuda`` on Fashion-MNIST: seconds and
  images/s from its metrics.json.

Each section stops starting new work when its share of ``--budget-s`` is spent, and
the report says what was skipped, so the whole check fits a short GPU loan.
``--tiny`` uses batch 2 and 8x8 images so CI can run the plumbing in the simulator.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numbacnn  # noqa: E402
import numbacnn.functional as F  # noqa: E402
from numbacnn.models import tiny_vgg, tiny_vgg_sizes  # noqa: E402
from numbacnn.optim import SGD  # noqa: E402

# (name, channels, image size, padding): CNN Explainer's input and the main job's
SHAPES = [("3x64x64", 3, 64, 0), ("1x28x28", 1, 28, 1)]
BATCHES = [32, 128, 512]
TINY_SHAPES = [("3x8x8", 3, 8, 1), ("1x8x8", 1, 8, 1)]  # padding 1: 8x8 survives two pools
TINY_BATCHES = [2]
FILTERS, CLASSES = 10, 10
TINY_FILTERS = 2


# --------------------------------------------------------------------------- #
# the machine
# --------------------------------------------------------------------------- #


def _nvidia_smi(query: str) -> str:
    if not shutil.which("nvidia-smi"):
        return "n/a (no nvidia-smi)"
    result = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                            capture_output=True, text=True)
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else "n/a"


def machine() -> dict[str, str]:
    import numba

    info = {"numbacnn": numbacnn.__version__, "numba": numba.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
    try:
        import numba_cuda

        info["numba-cuda"] = getattr(numba_cuda, "__version__", "?")
    except ImportError:
        info["numba-cuda"] = "not installed"
    torch = _torch()
    info["torch"] = torch.__version__ if torch else "not installed"
    info["torch CUDA"] = str(torch.version.cuda) if torch and torch.cuda.is_available() else "unavailable"
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        info["GPU"] = "none: Numba's CUDA simulator (plumbing check, timings mean nothing)"
        info["driver"] = "n/a"
    else:
        from numba import cuda

        device = cuda.get_current_device()
        name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
        info["GPU"] = f"{name} (sm_{device.compute_capability[0]}{device.compute_capability[1]})"
        info["driver"] = _nvidia_smi("driver_version")
        try:
            from numba.cuda.cudadrv import runtime

            info["CUDA runtime"] = ".".join(str(v) for v in runtime.get_version())
        except Exception as exc:  # reported, not fatal
            info["CUDA runtime"] = f"n/a ({type(exc).__name__})"
        info["memory pool"] = "numbacnn EMM pool" if _pool_is_active() else "Numba's default allocator"
    info["load average"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return info


def _pool_is_active() -> bool:
    from numba import cuda

    from numbacnn.kernels.cuda import memory

    return isinstance(cuda.current_context().memory_manager, memory.PooledMemoryManager)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# --------------------------------------------------------------------------- #
# (b) timings
# --------------------------------------------------------------------------- #


def median_ms(functions: list[Callable[[], None]], sync: list[Callable[[], None]], min_runs: int,
              min_time: float, warm_up: bool = True) -> list[float]:
    """Median milliseconds of each function, called in turn, each call synchronised."""
    for fn, wait in zip(functions, sync) if warm_up else ():  # compilation, cuDNN algorithm choice
        fn()
        wait()
    samples: list[list[float]] = [[] for _ in functions]
    start = time.perf_counter()
    runs = 0
    while runs < min_runs or (time.perf_counter() - start < min_time and runs < 200):
        for fn, wait, times in zip(functions, sync, samples):
            t0 = time.perf_counter()
            fn()
            wait()
            times.append((time.perf_counter() - t0) * 1e3)
        runs += 1
    return [float(np.median(t)) for t in samples]


def _numbacnn_cases(channels: int, size: int, padding: int, batch: int, filters: int) -> dict[str, Callable[[], None]]:
    """The Tiny VGG step and each kernel on numbacnn's CUDA backend, inputs already on the device."""
    rng = np.random.default_rng(0)
    dtype = np.float32
    model = tiny_vgg(in_channels=channels, num_classes=CLASSES, image_size=size, filters=filters,
                     padding=padding, dtype=dtype, seed=0).to("cuda")
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = numbacnn.to_device(rng.standard_normal((batch, channels, size, size)).astype(dtype), "cuda")
    labels = numbacnn.to_device(rng.integers(0, CLASSES, batch), "cuda")

    def step():
        optimizer.zero_grad()
        _, grad = F.softmax_cross_entropy_rows(model(x), labels, check_labels=False)
        model.backward(grad, input_grad=False)
        optimizer.step()

    w = numbacnn.to_device((rng.standard_normal((filters, channels, 3, 3)) * 0.2).astype(dtype), "cuda")
    b = numbacnn.to_device(np.zeros(filters, dtype), "cuda")
    y = F.conv2d(x, w, b, padding=padding)
    features = filters * 4 * 4
    xl = numbacnn.to_device(rng.standard_normal((batch, features)).astype(dtype), "cuda")
    wl = numbacnn.to_device(rng.standard_normal((CLASSES, features)).astype(dtype), "cuda")
    bl = numbacnn.to_device(np.zeros(CLASSES, dtype), "cuda")
    logits = F.linear(xl, wl, bl)
    return {
        "training step": step,
        "conv2d forward": lambda: F.conv2d(x, w, b, padding=padding),
        "conv2d backward": lambda: F.conv2d_backward(y, x, w, padding=padding, input_grad=False),
        "relu": lambda: F.relu(y),
        "max_pool2d 2x2": lambda: F.max_pool2d(y, 2),
        "linear": lambda: F.linear(xl, wl, bl),
        "softmax cross-entropy": lambda: F.softmax_cross_entropy_rows(logits, labels, check_labels=False),
    }


def _torch_cases(torch, channels: int, size: int, padding: int, batch: int, filters: int,
                 channels_last: bool) -> dict[str, Callable[[], None]]:
    nn = torch.nn
    device = "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    final = tiny_vgg_sizes(size, 3, padding)[-1][1]
    model = nn.Sequential(
        nn.Conv2d(channels, filters, 3, padding=padding), nn.ReLU(), nn.Conv2d(filters, filters, 3, padding=padding),
        nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(filters, filters, 3, padding=padding), nn.ReLU(),
        nn.Conv2d(filters, filters, 3, padding=padding), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(filters * final * final, CLASSES)).to(device).to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, channels, size, size, device=device).to(memory_format=memory_format)
    labels = torch.randint(0, CLASSES, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), labels).backward()
        optimizer.step()

    conv = nn.Conv2d(channels, filters, 3, padding=padding).to(device).to(memory_format=memory_format)
    y = conv(x).detach()
    gy = torch.randn_like(y)
    x_grad = x.clone().requires_grad_(False)
    features = filters * 4 * 4
    xl = torch.randn(batch, features, device=device)
    linear = nn.Linear(features, CLASSES).to(device)
    logits = linear(xl).detach()

    def conv_backward():
        torch.ops.aten.convolution_backward(gy, x_grad, conv.weight, [filters], [1, 1], [padding, padding],
                                            [1, 1], False, [0, 0], 1, [False, True, True])

    with torch.no_grad():
        return {
            "training step": step,
            "conv2d forward": lambda: torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=padding),
            "conv2d backward": conv_backward,
            "relu": lambda: torch.relu(y),
            "max_pool2d 2x2": lambda: torch.nn.functional.max_pool2d(y, 2),
            "linear": lambda: torch.nn.functional.linear(xl, linear.weight, linear.bias),
            "softmax cross-entropy": lambda: torch.nn.functional.cross_entropy(logits, labels, reduction="none"),
        }


def timings(tiny: bool, deadline: float) -> tuple[list[dict], list[str]]:
    """Rows of {shape, batch, case, numbacnn_ms, torch_nchw_ms, torch_cl_ms}; notes."""
    torch = _torch()
    torch_gpu = torch is not None and torch.cuda.is_available()
    notes = [] if torch_gpu else ["PyTorch with CUDA is not available here: its columns are empty"]
    rows = []
    min_runs, min_time = (1, 0.0) if tiny else (5, 0.2)
    for shape, channels, size, padding in (TINY_SHAPES if tiny else SHAPES):
        for batch in (TINY_BATCHES if tiny else BATCHES):
            if time.perf_counter() > deadline:
                notes.append(f"skipped {shape} batch {batch}: out of time")
                continue
            filters = TINY_FILTERS if tiny else FILTERS
            ours = _numbacnn_cases(channels, size, padding, batch, filters)
            theirs = {}
            if torch_gpu:
                theirs["nchw"] = _torch_cases(torch, channels, size, padding, batch, filters, channels_last=False)
                theirs["cl"] = _torch_cases(torch, channels, size, padding, batch, filters, channels_last=True)
            for case, fn in ours.items():
                functions, sync = [fn], [lambda: numbacnn.synchronize("cuda")]
                for layout in ("nchw", "cl"):
                    if layout in theirs:
                        functions.append(theirs[layout][case])
                        sync.append(torch.cuda.synchronize)
                # under the simulator (--tiny) nothing compiles: no warm-up, one run
                if torch_gpu:
                    with torch.no_grad() if case != "training step" else _nothing():
                        ms = median_ms(functions, sync, min_runs, min_time, warm_up=not tiny)
                else:
                    ms = median_ms(functions, sync, min_runs, min_time, warm_up=not tiny)
                rows.append({"shape": shape, "batch": batch, "case": case, "numbacnn_ms": ms[0],
                             "torch_nchw_ms": ms[1] if len(ms) > 1 else None,
                             "torch_cl_ms": ms[2] if len(ms) > 2 else None})
    return rows, notes


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- #
# (c) one epoch of the main job
# --------------------------------------------------------------------------- #


def _write_idx(path: str, array: np.ndarray) -> None:
    """IDX file (the MNIST format): magic 0x0000 08 <ndim>, big-endian sizes, uint8 data."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def synthetic_dataset(folder: str, train: int, test: int, size: int) -> str:
    """A Fashion-MNIST look-alike of random pixels (IDX files): the epoch's time does
    not depend on the pixels, and a borrowed GPU machine may not have the dataset."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("t10k", test)):
        _write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte"), rng.integers(0, 256, (count, size, size)))
        _write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte"), np.arange(count) % 10)
    return folder


def _fashion_mnist_found(data_dir: str | None) -> bool:
    from numbacnn.data import FASHION_MNIST_SYSTEM_DIR

    folder = data_dir or os.environ.get("NUMBACNN_DATA") or str(FASHION_MNIST_SYSTEM_DIR)
    return any(os.path.exists(os.path.join(base, "train-images-idx3-ubyte" + ext))
               for base in (folder, os.path.join(folder, "fashion-mnist")) for ext in ("", ".gz"))


def one_epoch(tiny: bool, data_dir: str | None, timeout: float) -> dict:
    """Run ``numbacnn train --device cuda --epochs 1`` and read its metrics.json."""
    with tempfile.TemporaryDirectory() as work:
        synthetic = tiny or not _fashion_mnist_found(data_dir)
        if synthetic:
            os.makedirs(os.path.join(work, "data"))
            data_dir = synthetic_dataset(os.path.join(work, "data"), *((40, 10, 8) if tiny else (60000, 10000, 28)))
        command = [sys.executable, "-m", "numbacnn", "train", "--device", "cuda", "--epochs", "1",
                   "--dataset", "fashion-mnist", "--image-size", "8" if tiny else "28", "--channels", "1",
                   "--padding", "1", "--out", os.path.join(work, "run"), "--no-progress"]
        if data_dir:
            command += ["--data-dir", data_dir]
        if tiny:
            command += ["--batch-size", "16", "--filters", "2", "--val-fraction", "0.2"]
        start = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"status": f"stopped after {timeout:.0f} s", "command": " ".join(command[1:])}
        wall = time.perf_counter() - start
        outcome = {"command": "numbacnn " + " ".join(command[3:]), "wall_s": wall, "exit": result.returncode,
                   "data": "synthetic (random pixels, Fashion-MNIST's sizes)" if synthetic else "Fashion-MNIST"}
        metrics_path = os.path.join(work, "run", "metrics.json")
        if result.returncode == 0 and os.path.exists(metrics_path):
            with open(metrics_path) as f:
                history = json.load(f)["history"][0]
            outcome.update(status="ok", seconds=history["seconds"], images_per_second=history["images_per_second"],
                           train_loss=history["train_loss"], train_accuracy=history["train_accuracy"])
        else:
            outcome["status"] = "failed: " + (result.stderr.strip().splitlines() or ["no output"])[-1]
        return outcome


# --------------------------------------------------------------------------- #
# the report
# --------------------------------------------------------------------------- #


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _ratio(ours: float, theirs: float | None) -> str:
    return "" if theirs is None or theirs <= 0 else f"{ours / theirs:.2f}"


def report(info: dict, tests: str, rows: list[dict], notes: list[str], epoch: dict, seconds: float) -> str:
    lines = ["# numbacnn GPU check", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    lines += ["", "## (a) test suite against the GPU", "", tests or "(not run)", "",
              "## (b) milliseconds per call (median; ratio = numbacnn / PyTorch, < 1: numbacnn faster)", "",
              "| input | batch | case | numbacnn ms | torch NCHW ms | ratio | torch channels_last ms | ratio |",
              "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['batch']} | {r['case']} | {_ms(r['numbacnn_ms'])} | "
                     f"{_ms(r['torch_nchw_ms'])} | {_ratio(r['numbacnn_ms'], r['torch_nchw_ms'])} | "
                     f"{_ms(r['torch_cl_ms'])} | {_ratio(r['numbacnn_ms'], r['torch_cl_ms'])} |")
    lines += [f"- {note}" for note in notes]
    lines += ["", "## (c) one epoch of the main job", ""]
    lines += [f"- {key}: {value:.3f}" if isinstance(value, float) else f"- {key}: {value}"
              for key, value in epoch.items()]
    lines += ["", f"Python part: {seconds:.1f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.md", help="the report (Markdown)")
    parser.add_argument("--tiny", action="store_true", help="batch 2, 8x8 images, a 40-image dataset (CI plumbing)")
    parser.add_argument("--budget-s", type=float, default=200.0, help="seconds for (b) and (c) together")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: numbacnn's search)")
    parser.add_argument("--tests-log", default=None, help="pytest output of section (a)")
    parser.add_argument("--tests-status", default=None, help="pytest exit status of section (a)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    numbacnn.set_default_device("cuda")
    info = machine()
    tests = ""
    if args.tests_log and os.path.exists(args.tests_log):
        with open(args.tests_log) as f:
            tail = [line for line in f.read().strip().splitlines() if line.strip()][-1:]
        tests = f"exit status {args.tests_status}: {tail[0] if tail else '(no output)'}"
    rows, notes = timings(args.tiny, deadline=start + 0.6 * args.budget_s)
    epoch = one_epoch(args.tiny, args.data_dir, timeout=max(30.0, start + args.budget_s - time.perf_counter()))
    text = report(info, tests, rows, notes, epoch, time.perf_counter() - start)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    return 0 if epoch.get("status") == "ok" and rows else 1


if __name__ == "__main__":
    sys.exit(main())
