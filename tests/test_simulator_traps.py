"""Numba's CUDA simulator is never picked by accident (issue 21, item 5):
``auto`` never chooses it, ``cuda`` under it warns that it is slow, ``numbacnn info``
says what it is instead of crashing when numba-cuda is missing, and no message
advises turning it on."""

from __future__ import annotations

import sys
import types
import warnings

import pytest

import importlib
from numbacnn.cli import main
from numbacnn.device import DeviceError, SimulatorWarning, cuda_simulator_enabled, resolve_device

device_module = importlib.import_module("numbacnn.device")  # numbacnn.device is also a function

needs_simulator = pytest.mark.skipif(not cuda_simulator_enabled(), reason="runs under NUMBA_ENABLE_CUDASIM=1 "
                                     "(tests/conftest.py sets it without a GPU)")


@needs_simulator
def test_auto_never_picks_the_simulator():
    assert device_module.cuda_available()  # the simulator answers "available" ...
    assert resolve_device("auto") == "cpu"  # ... and auto still takes the CPU


@needs_simulator
def test_cuda_under_the_simulator_warns_once(monkeypatch):
    monkeypatch.setattr(device_module, "_simulator_warned", False)
    with pytest.warns(SimulatorWarning, match="thousands of times slower"):
        assert resolve_device("cuda") == "cuda"
    with warnings.catch_warnings():
        warnings.simplefilter("error", SimulatorWarning)
        resolve_device("cuda")  # once per process


@needs_simulator
def test_cli_device_cuda_under_the_simulator_prints_one_warning_line(monkeypatch, capsys):
    from numbacnn.train.config import resolve_device_option

    monkeypatch.setattr(device_module, "_simulator_warned", False)
    assert resolve_device_option("cuda") == "cuda"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("numbacnn: warning: device 'cuda' runs in Numba's CUDA simulator")


@needs_simulator
def test_info_under_the_simulator_without_numba_cuda_says_so(monkeypatch, capsys):
    """numba's own simulator (numba-cuda not installed) has no get_current_device:
    info ended in 'internal error AttributeError'."""
    import numba

    bare = types.ModuleType("numba.cuda")
    bare.is_available = lambda: True  # what numba's built-in simulator answers
    monkeypatch.setattr(numba, "cuda", bare, raising=False)
    monkeypatch.setitem(sys.modules, "numba.cuda", bare)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "cuda: simulator only (NUMBA_ENABLE_CUDASIM=1 is set: unusable:" in out
    assert "numba-cuda is not installed" in out
    with pytest.raises(DeviceError, match="numba-cuda is not installed"):
        device_module.require_cuda()


@needs_simulator
def test_info_under_the_simulator_says_auto_uses_the_cpu(capsys):
    assert main(["info"]) == 0
    assert "--device auto uses the CPU" in capsys.readouterr().out


def test_no_message_advises_the_simulator(monkeypatch):
    monkeypatch.setattr(device_module, "cuda_available", lambda: False)
    with pytest.raises(DeviceError) as excinfo:
        device_module.require_cuda()
    assert "NUMBA_ENABLE_CUDASIM" not in str(excinfo.value)
