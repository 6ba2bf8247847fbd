"""The backend interface: both kernel backends provide exactly the names of
``numbacnn.kernels.interface``, with the same parameter names, from mirrored files.

The CUDA backend is imported as the library imports it: on a GPU, or in Numba's
CUDA simulator (conftest.py sets ``NUMBA_ENABLE_CUDASIM=1`` when there is none).
"""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

from helpers import available_devices
from numbacnn.kernels import interface

needs_cuda = pytest.mark.skipif("cuda" not in available_devices(), reason="CUDA backend not usable here")

# allocation is the one family whose files differ: the CPU's two NumPy calls sit in
# kernels/cpu/__init__.py, the CUDA pool has a module of its own (kernels/cuda/memory.py)
NOT_MIRRORED = {"empty", "zeros"}


def _python_function(value):
    """The Python function behind a backend name (an ``@njit`` dispatcher's ``py_func``)."""
    return getattr(value, "py_func", value)


def interface_problems(module: types.ModuleType, expected: tuple[str, ...]) -> list[str]:
    """Every way ``module`` differs from a backend providing exactly ``expected``."""
    problems = []
    declared = list(getattr(module, "__all__", []))
    if sorted(declared) != sorted(expected):
        problems.append(f"__all__ lacks {sorted(set(expected) - set(declared))}, "
                        f"has extra {sorted(set(declared) - set(expected))}")
    if len(set(declared)) != len(declared):
        problems.append("__all__ names a function twice")
    for name in expected:
        if not callable(getattr(module, name, None)):
            problems.append(f"{name} is missing or not callable")
    # public values beyond the list (sub-modules, such as kernels/cpu/conv.py, are files, not names)
    public = {name for name, value in vars(module).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    for name in sorted(public - set(expected)):
        problems.append(f"{name} is public but not in the interface")
    return problems


def _backends() -> tuple[types.ModuleType, types.ModuleType]:
    return importlib.import_module("numbacnn.kernels.cpu"), importlib.import_module("numbacnn.kernels.cuda")


def test_the_interface_lists_each_name_once():
    names = interface.BACKEND_NAMES + interface.CPU_FAST_WING_NAMES
    assert len(set(names)) == len(names)
    assert all(isinstance(name, str) and name.isidentifier() for name in names)
    # each family's group is sorted, so a reader finds a name (and a merge conflict is a line)
    for group in (interface.MEMORY, interface.CONVOLUTION, interface.LINEAR, interface.MAX_POOLING,
                  interface.WINDOW_POOLING, interface.BATCH_NORM, interface.ELEMENTWISE,
                  interface.SOFTMAX_AND_LOSSES, interface.TRAINING_LOOP, interface.OPTIMISERS):
        assert list(group) == sorted(group), group


def test_the_cpu_backend_provides_exactly_the_interface():
    cpu = importlib.import_module("numbacnn.kernels.cpu")
    assert interface_problems(cpu, interface.BACKEND_NAMES + interface.CPU_FAST_WING_NAMES) == []


@needs_cuda
def test_the_cuda_backend_provides_exactly_the_interface():
    cuda = importlib.import_module("numbacnn.kernels.cuda")
    assert interface_problems(cuda, interface.BACKEND_NAMES) == []
    # the fast wing is the CPU's own: no CUDA twin to keep in step
    assert not set(interface.CPU_FAST_WING_NAMES) & set(dir(cuda))


def test_the_check_finds_a_missing_an_extra_and_an_unlisted_name():
    """The check above can fail: a fake backend lacking one name, declaring one
    name too many and exposing one public function outside ``__all__``."""
    fake = types.ModuleType("fake_backend")
    for name in interface.BACKEND_NAMES[1:]:
        setattr(fake, name, lambda: None)
    fake.__all__ = [*interface.BACKEND_NAMES[1:], "conv3d_forward"]
    fake.helper = lambda: None
    fake.conv = types.ModuleType("fake_backend.conv")  # a sub-module: allowed
    problems = interface_problems(fake, interface.BACKEND_NAMES)
    missing = interface.BACKEND_NAMES[0]
    assert problems == [f"__all__ lacks ['{missing}'], has extra ['conv3d_forward']",
                        f"{missing} is missing or not callable",
                        "helper is public but not in the interface"]


@needs_cuda
@pytest.mark.parametrize("name", interface.BACKEND_NAMES)
def test_both_backends_take_the_same_parameters(name):
    cpu, cuda = _backends()
    cpu_parameters = list(inspect.signature(_python_function(getattr(cpu, name))).parameters)
    cuda_parameters = list(inspect.signature(_python_function(getattr(cuda, name))).parameters)
    assert cpu_parameters == cuda_parameters, name


@needs_cuda
@pytest.mark.parametrize("name", sorted(set(interface.BACKEND_NAMES) - NOT_MIRRORED))
def test_each_name_lives_in_the_same_file_on_both_backends(name):
    """Mirrored files (STYLE.md practice 2): ``kernels/cpu/dropout.py`` and
    ``kernels/cuda/dropout.py`` hold the same functions."""
    cpu, cuda = _backends()
    cpu_file = _python_function(getattr(cpu, name)).__module__.rsplit(".", 1)[-1]
    cuda_file = _python_function(getattr(cuda, name)).__module__.rsplit(".", 1)[-1]
    assert cpu_file == cuda_file, f"{name}: kernels/cpu/{cpu_file}.py but kernels/cuda/{cuda_file}.py"


def test_the_cpu_backend_has_the_fast_wings_kernel_modules():
    cpu = importlib.import_module("numbacnn.kernels.cpu")
    for name in interface.CPU_FAST_WING_MODULES:
        assert isinstance(getattr(cpu, name, None), types.ModuleType), name
