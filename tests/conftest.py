"""Shared fixtures: the devices to test on and a seeded generator.

CUDA: with a real GPU (``nvidia-smi`` on the PATH, or ``NUMBACNN_TEST_REAL_GPU=1``)
the "cuda" tests run on it. Otherwise the CUDA kernels run in Numba's CUDA
simulator: ``NUMBA_ENABLE_CUDASIM=1`` has to be set before numba is first
imported, so it is set here, at the very top. ``NUMBACNN_TEST_REAL_GPU=0`` forces
the simulator; an explicit ``NUMBA_ENABLE_CUDASIM`` is left as it is, except that
``NUMBACNN_TEST_REAL_GPU=1`` turns the simulator off and refuses to run without a GPU.
"""

import os
import shutil
import sys

_real_gpu = os.environ.get("NUMBACNN_TEST_REAL_GPU")
# asked for explicitly (benchmarks/gpu_check.sh): the real GPU or a usage error, never
# a silent fall-back to the simulator or to CPU-only tests
_real_gpu_required = _real_gpu == "1"
if _real_gpu is None:
    _real_gpu = "1" if shutil.which("nvidia-smi") else "0"
if _real_gpu_required:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
elif _real_gpu != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    # a short GIL switch interval (the simulator's barriers poll) and a lock around the
    # simulator's shared-array lookup (a race it has): see cuda_simulator.py
    import cuda_simulator

    cuda_simulator.prepare()
    _locked_shared_array = cuda_simulator.locked_shared_array  # test_cuda checks the lock through these
    _unlocked_shared_array = cuda_simulator.unlocked_shared_array

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests replay the same cases on every run (issue 22): a fixed seed derived
# from each test's name (derandomize) and no example database, so a CI failure is
# reproduced by the same command and a pass does not depend on the draw. Every
# module-level ``settings(max_examples=...)`` inherits this profile, as it is loaded
# before the test modules are imported. NUMBACNN_HYPOTHESIS_PROFILE=explore draws new
# cases (random seed, more examples) when hunting for bugs on purpose.
settings.register_profile("numbacnn", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, database=None, deadline=None, print_blob=True,
                          max_examples=200)
settings.load_profile(os.environ.get("NUMBACNN_HYPOTHESIS_PROFILE", "numbacnn"))

from helpers import available_devices  # noqa: E402


def pytest_configure(config) -> None:
    # pytest-xdist (3.8) sorts ``--dist loadfile``'s queue of files by their number of
    # tests, most first (``--loadscope-reorder``, on by default), whatever order the
    # collection has: the README run (2 tests), test_cache (4), test_gpu_check (3) and
    # the other long files with few tests ran last, so one worker ran on alone at the
    # end. SLOW_FILES_FIRST below only works with that sorting off.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
    if _real_gpu_required and "cuda" not in available_devices():
        raise pytest.UsageError(
            "NUMBACNN_TEST_REAL_GPU=1 but numba finds no usable GPU (numba.cuda.is_available() is False); "
            "check the driver with nvidia-smi, or unset NUMBACNN_TEST_REAL_GPU to use the simulator")


@pytest.fixture(params=available_devices())
def device(request) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


# The longest files first, the longest of them first, so that both pytest-xdist workers
# (``--dist loadfile``, pyproject.toml: each file runs whole on one worker, files handed
# out in the order collected, pytest_configure above) end together: a long file handed
# out late kept one worker busy minutes after the other had finished (CI on 2 cores,
# 2026-12-06: the README test started last, 145 s). Seconds are cold, one file alone
# (numba caches cleared) or CI's --durations, 2026-12-06; in CI the kernels one file
# compiles are on disk for the files after it, so most files take less there.
# test_readme.py is not in the list: run early it compiles every kernel of its commands
# and sweep cold (371 s in CI on 203f4f0, 34:28 in all); run late, as before this list
# took effect, it loads most of them from the disk cache the other files filled (160 s
# on d2ae1ec, 30:51 in all).
SLOW_FILES_FIRST = (
    "test_strided_phases.py",  # ~250 s
    "test_large_kernels.py",  # 169 s (18 tests: the xdist reordering had put it 33rd)
    "test_fusion_axes.py",  # ~200 s
    "test_fusion.py",  # ~200 s
    "test_sweep.py",  # 123 s (the sequential sweep's fixture 105 s)
    "test_cache.py",  # 105 s: a process that compiles with an empty cache
    "test_fusion_batch_norm.py",
    "test_sweep_stride.py",  # 110 s
    "test_kernel_choices.py",
    "test_parity_ops.py",  # acceptance sweep 58 s
    "test_cuda_compile.py",
    "test_small_maps.py",
    "test_float64_partial_sums.py",  # 85 s (12 tests)
    "test_conv_winograd.py",  # 80 s (7 tests)
    "test_models.py",  # 68 s (8 tests)
    "test_large_kernel_planes.py",  # 52 s (5 tests)
    "test_benchmarks.py",  # 52 s (9 tests)
    "test_gathered.py",  # 48 s (9 tests)
    "test_reliability_faults.py",  # 47 s (1 test)
    "test_gpu_check.py",  # 18 s
)


def pytest_collection_modifyitems(config, items) -> None:
    """SLOW_FILES_FIRST in its order, then the other files by their number of tests, most
    first (what pytest-xdist's reordering did: the files with a handful of quick tests
    last); every file keeps its own order of tests (the sort is stable)."""
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    tests_in = {}
    for item in items:
        tests_in[item.path.name] = tests_in.get(item.path.name, 0) + 1
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -tests_in[item.path.name], item.path.name))


# Where CI's time goes (most of it is Numba compiling): NUMBACNN_COMPILE_LOG=DIR writes
# one JSON line per top-level compile (a kernel and the functions it compiles inside it)
# to DIR/<worker>.jsonl: the test that asked for it, the kernel, its argument types and
# the seconds. Loads from the disk cache are not compiles and are not logged.
# Summarise with benchmarks/compile_log.py.
_compile_log_dir = os.environ.get("NUMBACNN_COMPILE_LOG")
_current_test = ["(collection)"]

if _compile_log_dir:
    import json
    import threading
    import time

    from numba.core import event as _numba_event

    class _CompileLog(_numba_event.Listener):
        def __init__(self, path: str) -> None:
            self._path = path
            self._local = threading.local()

        def on_start(self, event) -> None:
            depth = getattr(self._local, "depth", 0)
            if depth == 0:
                self._local.started = time.perf_counter()
            self._local.depth = depth + 1

        def on_end(self, event) -> None:
            self._local.depth -= 1
            if self._local.depth:
                return
            dispatcher = event.data["dispatcher"]
            py_func = getattr(dispatcher, "py_func", None)
            cells = getattr(py_func, "__closure__", None) or ()
            record = {
                "test": _current_test[0],
                "kernel": f"{getattr(py_func, '__module__', '?')}.{getattr(py_func, '__qualname__', repr(dispatcher))}",
                "args": str(event.data["args"]),
                # a factory's compiled-in sizes: with the kernel and args, what makes a compile the same
                "closure": [repr(cell.cell_contents)[:40] for cell in cells
                            if isinstance(getattr(cell, "cell_contents", None), (int, float, bool, tuple))],
                "seconds": round(time.perf_counter() - self._local.started, 3),
            }
            with open(self._path, "a") as log:
                log.write(json.dumps(record) + "\n")

    os.makedirs(_compile_log_dir, exist_ok=True)
    _numba_event.register(
        "numba:compile",
        _CompileLog(os.path.join(_compile_log_dir, os.environ.get("PYTEST_XDIST_WORKER", "main") + ".jsonl")))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(item) -> None:  # only while logging: which test a compile belongs to
        _current_test[0] = item.nodeid
