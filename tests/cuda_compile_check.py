"""Compile every CUDA kernel with NVIDIA's compilers and check that its launches fit.

A CI tool, not part of the library: it lives with the tests (``numbacnn`` never
imports it) and only ``tests/test_cuda_compile.py`` runs it.

The simulator runs the kernels' Python; it says nothing about whether NVVM and
ptxas accept them, how many registers they need or whether a launch fits a card.
This module answers that without a GPU (no driver is needed to compile):

1. **Record** (in a process running the CUDA simulator): :func:`recording` wraps
   every public function of ``numbacnn.kernels.cuda`` (the backend interface the
   functional layer calls) and notes each call's arguments as (shape, dtype) of
   the arrays and the scalar values. Running the library's own paths under it
   gives exactly the calls a training step makes.
2. **Replay** (in a process *without* the simulator, one per target compute
   capability): :func:`replay` calls the same backend functions with stand-in
   arrays, with the GPU's launch constants (``launch.SIMULATOR`` is False there),
   and catches every ``kernel[grid, block](*args)`` launch instead of running
   it: kernel, Numba argument types, grid and block.
3. **Compile and check**: :func:`check_launches` compiles each (kernel,
   signature) with ``numba.cuda.compile_ptx(..., cc=cc)`` (NVVM), assembles the
   PTX with ``ptxas -arch=sm_XX -v`` and reads registers, spills and shared
   memory, then checks each launch against the card (:data:`TARGETS`).

Run as ``python tests/cuda_compile_check.py RECORDS.json --cc 9.0`` from the
repository root (with ``NUMBA_ENABLE_CUDASIM`` unset); ``tests/test_cuda_compile.py``
does, with ``tests/`` on ``PYTHONPATH`` so that ``--extra`` can name test kernels.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from typing import Any, Iterator

import numpy as np

# Per-SM and per-block limits (CUDA C Programming Guide, "Technical Specifications
# per Compute Capability"): A100 is sm_80, H100 is sm_90.
TARGETS = {
    (8, 0): dict(name="sm_80 (A100)", registers_per_sm=65536, max_registers_per_thread=255,
                 max_threads_per_block=1024, max_threads_per_sm=2048, max_blocks_per_sm=32,
                 static_shared_per_block=48 * 1024, shared_per_sm=164 * 1024),
    (9, 0): dict(name="sm_90 (H100)", registers_per_sm=65536, max_registers_per_thread=255,
                 max_threads_per_block=1024, max_threads_per_sm=2048, max_blocks_per_sm=32,
                 static_shared_per_block=48 * 1024, shared_per_sm=228 * 1024),
}
MAX_BLOCK_DIMS = (1024, 1024, 64)
MAX_GRID_DIMS = (2**31 - 1, 65535, 65535)
REGISTER_UNIT = 256  # registers are given to warps in units of 256 (allocation granularity)
WARP = 32

# Kernels that must keep at least this many blocks resident per SM (issue 12 item 3:
# one block per SM leaves the SM idle at every syncthreads of the tiled forward)
def _min_blocks_per_sm() -> dict[str, int]:
    from numbacnn.kernels.cuda import conv

    return {"numbacnn.kernels.cuda.conv:conv2d_forward_tiled_kernel": conv.TILED_BLOCKS_PER_SM}


# --------------------------------------------------------------------------- #
# 1. record (simulator process)
# --------------------------------------------------------------------------- #


def _describe(value: Any) -> Any:
    """JSON description of one backend-function argument."""
    if isinstance(value, type) and issubclass(value, np.generic):  # a dtype given as a scalar type
        return {"dtype_object": np.dtype(value).str}
    if hasattr(value, "shape") and hasattr(value, "dtype") and not np.isscalar(value):
        return {"array": [int(s) for s in value.shape], "dtype": np.dtype(value.dtype).str}
    if isinstance(value, np.dtype):
        return {"dtype_object": value.str}
    if isinstance(value, np.generic):
        return {"scalar": value.item(), "dtype": value.dtype.str}
    if isinstance(value, tuple):
        return {"tuple": [_describe(v) for v in value]}
    if isinstance(value, (bool, int, float)):
        return {"python": value}
    raise TypeError(f"cuda_compile_check cannot record an argument of type {type(value).__name__}")


@contextlib.contextmanager
def recording(calls: list) -> Iterator[list]:
    """While active, every call of a public ``numbacnn.kernels.cuda`` function that
    launches kernels is appended to ``calls`` as {"function", "args"}."""
    backend = importlib.import_module("numbacnn.kernels.cuda")
    originals = {}
    for name in dir(backend):
        function = getattr(backend, name)
        if name.startswith("_") or name == "empty" or not isinstance(function, types.FunctionType):
            continue
        if not function.__module__.startswith("numbacnn.kernels.cuda"):
            continue

        def wrapper(*args, _name=name, _function=function, **kwargs):
            calls.append({"function": _name, "args": [_describe(a) for a in args],
                          "kwargs": {k: _describe(v) for k, v in kwargs.items()}})
            return _function(*args, **kwargs)

        originals[name] = function
        setattr(backend, name, wrapper)
    try:
        yield calls
    finally:
        for name, function in originals.items():
            setattr(backend, name, function)


# --------------------------------------------------------------------------- #
# 2. replay (compiler process, no simulator)
# --------------------------------------------------------------------------- #


class StandInArray:
    """Shape and dtype of a device array, enough for the launch helpers to size a grid."""

    def __init__(self, shape, dtype) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape, dtype=np.int64))

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        if -1 in shape:
            known = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
            shape = tuple(self.size // max(known, 1) if s == -1 else s for s in shape)
        return StandInArray(shape, self.dtype)

    def is_c_contiguous(self) -> bool:
        return True

    def __len__(self) -> int:
        return self.shape[0]

    def numba_type(self):
        from numba import from_dtype, types as nbtypes

        return nbtypes.Array(from_dtype(self.dtype), self.ndim, "C")


def _rebuild(description: Any) -> Any:
    if "array" in description:
        return StandInArray(description["array"], description["dtype"])
    if "scalar" in description:
        return np.dtype(description["dtype"]).type(description["scalar"])
    if "dtype_object" in description:
        return np.dtype(description["dtype_object"])
    if "tuple" in description:
        return tuple(_rebuild(d) for d in description["tuple"])
    return description["python"]


@dataclasses.dataclass
class Launch:
    kernel: str                 # "module:name"
    argtypes: tuple             # Numba types
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    dispatcher: Any = dataclasses.field(repr=False, compare=False, default=None)


def _dims(value) -> tuple[int, int, int]:
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return tuple(int(v) for v in value) + (1,) * (3 - len(value))


@contextlib.contextmanager
def catching_launches(launches: list) -> Iterator[list]:
    """While active, ``kernel[grid, block](*args)`` appends a :class:`Launch` instead of
    running (nor compiling) anything, and ``empty`` returns stand-in arrays."""
    import numba
    from numba.cuda.dispatcher import CUDADispatcher

    memory = importlib.import_module("numbacnn.kernels.cuda.memory")
    original_getitem = CUDADispatcher.__getitem__
    original_pooled = memory._pooled_array

    def getitem(self, config):
        grid, block = config[0], config[1]

        def launch(*args):
            argtypes = tuple(a.numba_type() if isinstance(a, StandInArray) else numba.typeof(a) for a in args)
            name = f"{self.py_func.__module__}:{self.py_func.__name__}"
            launches.append(Launch(name, argtypes, _dims(grid), _dims(block), self))

        return launch

    CUDADispatcher.__getitem__ = getitem
    memory._pooled_array = lambda shape, dtype: StandInArray(shape, dtype)
    try:
        yield launches
    finally:
        CUDADispatcher.__getitem__ = original_getitem
        memory._pooled_array = original_pooled


def replay(calls: list) -> list[Launch]:
    """The kernel launches the recorded backend calls make with the GPU's constants."""
    backend = importlib.import_module("numbacnn.kernels.cuda")
    launches: list[Launch] = []
    with catching_launches(launches):
        for call in calls:
            args = [_rebuild(a) for a in call["args"]]
            kwargs = {k: _rebuild(v) for k, v in call.get("kwargs", {}).items()}
            getattr(backend, call["function"])(*args, **kwargs)
    return launches


def all_kernels() -> dict[str, Any]:
    """Every ``@cuda.jit`` kernel (not device function) in numbacnn.kernels.cuda, by "module:name"."""
    import pkgutil

    from numba.cuda.dispatcher import CUDADispatcher

    package = importlib.import_module("numbacnn.kernels.cuda")
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"numbacnn.kernels.cuda.{info.name}")
        for name, value in vars(module).items():
            if (isinstance(value, CUDADispatcher) and not value.targetoptions.get("device")
                    and value.py_func.__module__ == module.__name__):
                found[f"{module.__name__}:{value.py_func.__name__}"] = value
    return found


# --------------------------------------------------------------------------- #
# 3. compile and check
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def target_compute_capability(cc: tuple[int, int]) -> Iterator[None]:
    """Compile device functions for ``cc`` without a driver.

    ``compile_ptx(kernel, sig, cc=cc)`` takes the target explicitly, but when the
    kernel calls a ``@cuda.jit(device=True)`` function, typing the call compiles
    that function through ``CUDADispatcher.compile_device``, which asks the current
    device for its compute capability (``get_current_device().compute_capability``)
    and so needs a driver:
    https://github.com/NVIDIA/numba-cuda/blob/v0.30.4/numba_cuda/numba/cuda/dispatcher.py#L2065
    Here that lookup answers ``cc`` instead. The compiled device function is cached
    on its dispatcher by argument types only, not by cc, so one process should
    compile for one cc (``main`` runs once per cc).
    """
    from numba.cuda import dispatcher

    original = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=tuple(cc))
    try:
        yield
    finally:
        dispatcher.get_current_device = original


def find_ptxas() -> str | None:
    """ptxas from the nvidia-cuda-nvcc-cu12 wheel (numba-cuda[cu12]), else the PATH's."""
    spec = importlib.util.find_spec("nvidia.cuda_nvcc")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = os.path.join(root, "bin", "ptxas")
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("ptxas")


def compilers_missing() -> str | None:
    """Why the NVIDIA compilers cannot be used here, or None when they can."""
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()  # loads libnvvm (from the nvidia-cuda-nvcc-cu12 wheel or a toolkit)
    except Exception as exc:  # any failure to load it means "not usable"
        return f"libnvvm is not usable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if find_ptxas() is None:
        return "ptxas was not found (nvidia-cuda-nvcc-cu12 or a CUDA toolkit)"
    return None


@dataclasses.dataclass
class Resources:
    registers: int
    shared_bytes: int
    spill_stores: int
    spill_loads: int
    local_bytes: int


_RESOURCE_PATTERNS = {
    "registers": r"Used (\d+) registers",
    "shared_bytes": r"(\d+) bytes smem",
    "spill_stores": r"(\d+) bytes spill stores",
    "spill_loads": r"(\d+) bytes spill loads",
    "local_bytes": r"(\d+) bytes stack frame",
}


def parse_ptxas(log: str, entry: str) -> Resources:
    """Resources of entry function ``entry`` from ``ptxas -v`` output."""
    blocks = re.split(r"ptxas info\s*: Compiling entry function '", log)
    for block in blocks[1:]:
        if block.startswith(entry + "'"):
            values = {}
            for field, pattern in _RESOURCE_PATTERNS.items():
                match = re.search(pattern, block)
                values[field] = int(match.group(1)) if match else 0
            return Resources(**values)
    raise ValueError(f"ptxas -v printed nothing for entry function {entry!r}:\n{log}")


def compile_kernel(dispatcher, argtypes: tuple, cc: tuple[int, int]) -> tuple[Resources, str]:
    """PTX through NVVM, then ptxas for sm_XX; returns the resources and the entry name."""
    from numba import cuda

    with target_compute_capability(cc):
        # the kernel's own options (launch bounds, fastmath) shape its code; line
        # information is left out as in a normal build
        options = dispatcher.targetoptions
        ptx, _ = cuda.compile_ptx(dispatcher.py_func, argtypes, cc=cc, lineinfo=False,
                                  fastmath=bool(options.get("fastmath", False)),
                                  launch_bounds=options.get("launch_bounds"))
    entry = re.search(r"\.entry\s+(\S+?)\s*\(", ptx).group(1)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        result = subprocess.run([find_ptxas(), f"-arch=sm_{cc[0]}{cc[1]}", "-v", path, "-o", os.devnull],
                                capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ptxas failed (exit {result.returncode}): {result.stderr.strip()}")
    return parse_ptxas(result.stdout + result.stderr, entry), entry


def blocks_per_sm(resources: Resources, threads: int, target: dict) -> int:
    """Blocks of ``threads`` threads one SM can hold, limited by registers, shared
    memory, threads and its block limit (the CUDA occupancy calculator's rules)."""
    warps = -(-threads // WARP)
    registers_per_warp = -(-resources.registers * WARP // REGISTER_UNIT) * REGISTER_UNIT
    by_registers = target["registers_per_sm"] // max(registers_per_warp * warps, 1)
    # 1 KB of shared memory per block is reserved by the system on sm_80 and sm_90
    by_shared = target["shared_per_sm"] // (resources.shared_bytes + 1024)
    by_threads = target["max_threads_per_sm"] // threads
    return min(by_registers, by_shared, by_threads, target["max_blocks_per_sm"])


def launch_problems(launch: Launch, resources: Resources, target: dict) -> list[str]:
    """Everything about one launch that does not fit ``target`` (empty when it fits)."""
    threads = launch.block[0] * launch.block[1] * launch.block[2]
    problems = []
    if any(b > m for b, m in zip(launch.block, MAX_BLOCK_DIMS)) or threads > target["max_threads_per_block"]:
        problems.append(f"block {launch.block} = {threads} threads (at most {target['max_threads_per_block']})")
    if any(g > m for g, m in zip(launch.grid, MAX_GRID_DIMS)) or min(launch.grid) < 1:
        problems.append(f"grid {launch.grid} outside {MAX_GRID_DIMS}")
    if resources.registers > target["max_registers_per_thread"]:
        problems.append(f"{resources.registers} registers per thread")
    warps = -(-threads // WARP)
    registers_per_warp = -(-resources.registers * WARP // REGISTER_UNIT) * REGISTER_UNIT
    if registers_per_warp * warps > target["registers_per_sm"]:
        problems.append(f"{resources.registers} registers x {threads} threads need {registers_per_warp * warps} "
                        f"registers, the SM has {target['registers_per_sm']}")
    if resources.shared_bytes > target["static_shared_per_block"]:
        problems.append(f"{resources.shared_bytes} bytes of static shared memory (at most "
                        f"{target['static_shared_per_block']})")
    if resources.spill_stores or resources.spill_loads:
        problems.append(f"register spills ({resources.spill_stores} bytes stored, {resources.spill_loads} loaded)")
    wanted = _min_blocks_per_sm().get(launch.kernel, 1)
    if not problems and blocks_per_sm(resources, threads, target) < wanted:
        problems.append(f"{blocks_per_sm(resources, threads, target)} block(s) per SM, at least {wanted} wanted")
    return problems


def check_launches(launches: list[Launch], cc: tuple[int, int]) -> dict:
    """Compile each distinct (kernel, signature) for ``cc`` and check every launch.

    Returns {"cc", "kernels": [{kernel, signature, block, registers, shared_bytes,
    spill_*, blocks_per_sm, problems}], "failures": [text]}.
    """
    target = TARGETS[tuple(cc)]
    compiled: dict = {}
    rows, failures, seen = [], [], set()
    for launch in launches:
        key = (launch.kernel, launch.argtypes)
        if key not in compiled:
            try:
                compiled[key] = compile_kernel(launch.dispatcher, launch.argtypes, cc)[0]
            except Exception as exc:  # a kernel NVVM or ptxas refuses
                compiled[key] = exc
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                failures.append(f"{launch.kernel}{launch.argtypes} does not compile for sm_{cc[0]}{cc[1]}: "
                                f"{type(exc).__name__}: {first_line}")
        resources = compiled[key]
        row_key = (launch.kernel, launch.argtypes, launch.block)
        if isinstance(resources, Exception) or row_key in seen:
            continue
        seen.add(row_key)
        problems = launch_problems(launch, resources, target)
        failures.extend(f"{launch.kernel}{launch.argtypes} block {launch.block} grid {launch.grid} on "
                        f"{target['name']}: {p}" for p in problems)
        threads = launch.block[0] * launch.block[1] * launch.block[2]
        rows.append(dict(kernel=launch.kernel, signature=str(launch.argtypes), block=list(launch.block),
                         threads=threads, registers=resources.registers, shared_bytes=resources.shared_bytes,
                         spill_stores=resources.spill_stores, spill_loads=resources.spill_loads,
                         local_bytes=resources.local_bytes,
                         blocks_per_sm=blocks_per_sm(resources, threads, target), problems=problems))
    return {"cc": list(cc), "target": target["name"], "kernels": rows, "failures": failures}


def _set_constants(assignments: list[str]) -> None:
    """``module.NAME=value`` (Python literal): change a launch constant before replay,
    e.g. an oversized tile to see the check fail."""
    import ast

    for assignment in assignments:
        target, value = assignment.split("=", 1)
        module_name, name = target.rsplit(".", 1)
        setattr(importlib.import_module(module_name), name, ast.literal_eval(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/cuda_compile_check.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("records", help="JSON list of recorded backend calls (see recording())")
    parser.add_argument("--cc", default="9.0", help="compute capability, e.g. 8.0 or 9.0")
    parser.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
                        help="override a launch constant before replaying (repeatable)")
    parser.add_argument("--extra", action="append", default=[], metavar="JSON",
                        help='one more launch: {"kernel": "module:name", "argtypes": ["float32[:]", ...], '
                             '"block": [n, 1, 1]} (to test that a broken kernel is caught)')
    parser.add_argument("--only", help="check only the kernels whose name contains this text")
    parser.add_argument("--out", help="write the result as JSON here")
    parser.add_argument("--require-all", action="store_true",
                        help="fail when a kernel of numbacnn.kernels.cuda was never launched")
    args = parser.parse_args(argv)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        parser.error("run without NUMBA_ENABLE_CUDASIM=1: the simulator has no compiler")
    cc = tuple(int(p) for p in args.cc.split("."))
    with open(args.records) as f:
        calls = json.load(f)
    _set_constants(args.set)
    launches = replay(calls)
    if args.only:
        launches = [launch for launch in launches if args.only in launch.kernel]
    for extra in args.extra:
        spec = json.loads(extra)
        module_name, name = spec["kernel"].split(":")
        from numba.core import sigutils

        dispatcher = getattr(importlib.import_module(module_name), name)
        argtypes = tuple(sigutils._parse_signature_string(t) if isinstance(t, str) else t for t in spec["argtypes"])
        launches.append(Launch(spec["kernel"], argtypes, (1, 1, 1), _dims(spec["block"]), dispatcher))
    result = check_launches(launches, cc)
    if args.require_all:
        missing = sorted(set(all_kernels()) - {launch.kernel for launch in launches})
        result["failures"].extend(f"{name} was never launched by the recorded paths" for name in missing)
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    for failure in result["failures"]:
        print("FAIL", failure)
    print(f"{len(result['kernels'])} launch configurations checked for {result['target']}, "
          f"{len(result['failures'])} problems")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
