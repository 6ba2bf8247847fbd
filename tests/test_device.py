"""The device model: names, default device, context manager, moving arrays."""

import importlib

import numpy as np
import pytest

import numbacnn
from numbacnn.device import resolve_device

# numbacnn.device is the context manager; the module is reached through sys.modules
device_module = importlib.import_module("numbacnn.device")


def test_auto_and_cpu_resolve(monkeypatch):
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("CPU") == "cpu"
    monkeypatch.setattr(device_module, "cuda_available", lambda: False)
    assert resolve_device("auto") == "cpu"


def test_default_device_and_context_manager_restore():
    assert numbacnn.get_default_device() == "cpu"
    with numbacnn.device("cpu") as chosen:
        assert chosen == "cpu"
    with pytest.raises(RuntimeError):
        with numbacnn.device("cpu"):
            raise RuntimeError("inside")
    assert numbacnn.get_default_device() == "cpu"
    assert numbacnn.set_default_device("auto") in ("cpu", "cuda")
    numbacnn.set_default_device("cpu")


def test_round_trip_keeps_values_and_dtype(device, rng):
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((2, 3)).astype(dtype)
        moved = numbacnn.to_device(a, device)
        assert numbacnn.device_of(moved) == device
        back = numbacnn.to_host(moved)
        assert back.dtype == dtype
        np.testing.assert_array_equal(back, a)


def test_device_of_rejects_non_arrays():
    with pytest.raises(TypeError, match="list"):
        numbacnn.device_of([1.0])


def test_import_bounds_openmp_spinning_unless_the_user_chose(tmp_path):
    import os
    import subprocess
    import sys

    probe = "import os, numbacnn; print(os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    default = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert default.stdout.strip() == "10000"
    chosen = subprocess.run([sys.executable, "-c", probe], env={**env, "GOMP_SPINCOUNT": "5"},
                            capture_output=True, text=True, check=True)
    assert chosen.stdout.strip() == "5"
