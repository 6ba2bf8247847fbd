"""Shared fixtures: the devices to test on and a seeded generator.

CUDA: with a real GPU (``nvidia-smi`` on the PATH, or ``NUMBACNN_TEST_REAL_GPU=1``)
the "cuda" tests run on it. Otherwise the CUDA kernels run in Numba's CUDA
simulator: ``NUMBA_ENABLE_CUDASIM=1`` has to be set before numba is first
imported, so it is set here, at the very top. ``NUMBACNN_TEST_REAL_GPU=0`` forces
the simulator; an explicit ``NUMBA_ENABLE_CUDASIM`` is left as it is.
"""

import os
import shutil
import sys

_real_gpu = os.environ.get("NUMBACNN_TEST_REAL_GPU")
if _real_gpu is None:
    _real_gpu = "1" if shutil.which("nvidia-smi") else "0"
if _real_gpu != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    # The simulator runs each CUDA thread as a Python thread and implements
    # syncthreads() by polling; with the default 5 ms GIL switch interval every
    # barrier costs milliseconds. A short interval makes the CUDA tests ~10x faster.
    sys.setswitchinterval(1e-4)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import available_devices  # noqa: E402


@pytest.fixture(params=available_devices())
def device(request) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
