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


# The longest files first. pytest-xdist (``--dist loadfile``, pyproject.toml) hands whole
# files to the workers in collection order, so a long file collected late (the README
# run, alphabetically near the end) kept one worker busy minutes after the other had
# finished (CI on 2 cores, 2026-12-06: the README test started last, 145 s).
# test_strided_phases.py (about 350 s of compiling) and the other kernel files that grew
# in session 4 joined the list after a CI run of 32 minutes (2026-12-06).
SLOW_FILES_FIRST = ("test_readme.py", "test_strided_phases.py", "test_sweep.py", "test_fusion_axes.py", "test_cache.py",
                    "test_fusion.py", "test_gpu_check.py", "test_kernel_choices.py", "test_fusion_batch_norm.py",
                    "test_cuda_compile.py", "test_parity_ops.py", "test_sweep_stride.py", "test_small_maps.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: every file keeps its own order
