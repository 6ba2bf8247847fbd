"""Where arrays live: the "cpu" and "cuda" devices, the default device, moving arrays.

CPU arrays are NumPy arrays. CUDA arrays are Numba device arrays; any object that
exposes ``__cuda_array_interface__`` is accepted as a CUDA input. Nothing here
touches the GPU, or even imports numba-cuda, until a CUDA array is asked for, so
``import numbacnn`` works on machines without a GPU or the CUDA toolkit.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import warnings
from types import ModuleType
from typing import Any, Iterator

import numpy as np

DEVICES = ("cpu", "cuda")
DEVICE_CHOICES = ("cpu", "cuda", "auto")

_CUDA_INSTALL_HINT = 'pip install "numbacnn[cuda]"'


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


class SimulatorWarning(UserWarning):
    """``cuda`` was asked for while ``NUMBA_ENABLE_CUDASIM=1``: the CUDA kernels run in
    Numba's simulator (each GPU thread a Python thread), for testing, not for work."""


SIMULATOR_ENV = "NUMBA_ENABLE_CUDASIM"
SIMULATOR_MESSAGE = (
    "device 'cuda' runs in Numba's CUDA simulator because NUMBA_ENABLE_CUDASIM=1 is set: every GPU thread "
    "is a Python thread, thousands of times slower than the CPU (a 118-image training takes minutes); "
    "it is for testing kernels. Unset NUMBA_ENABLE_CUDASIM for a real GPU, or use device 'cpu'"
)
_simulator_warned = False


def cuda_simulator_enabled() -> bool:
    """True when Numba's CUDA simulator replaces the GPU (``NUMBA_ENABLE_CUDASIM=1``,
    read as Numba reads it: set before numba is imported)."""
    try:
        from numba.core import config
    except Exception:  # pragma: no cover - numba always has it
        return os.environ.get(SIMULATOR_ENV, "0") not in ("", "0")
    return bool(getattr(config, "ENABLE_CUDASIM", 0))


def cuda_available() -> bool:
    """True when numba-cuda is importable and finds a GPU (or the CUDA simulator:
    see :func:`cuda_simulator_enabled`, which ``"auto"`` never picks).

    Never raises: a missing package, driver or toolkit all mean "no".
    """
    try:
        from numba import cuda
    except Exception:  # numba without its CUDA target, or a broken toolkit
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def cuda_kernels_present() -> bool:
    """True when this installation ships the CUDA backend (numbacnn.kernels.cuda)."""
    return importlib.util.find_spec("numbacnn.kernels.cuda") is not None


def resolve_device(name: str) -> str:
    """Turn a user's device choice into "cpu" or "cuda".

    Parameters
    ----------
    name : {"cpu", "cuda", "auto"}
        "auto" means CUDA when a GPU and the CUDA backend are usable, else CPU;
        never Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which only an
        explicit "cuda" gets, with a :class:`SimulatorWarning` (once per process).

    Raises
    ------
    ValueError
        ``name`` is not one of the choices.
    DeviceError
        "cuda" was asked for but cannot be used here; the message says why.
    """
    if not isinstance(name, str) or name.lower() not in DEVICE_CHOICES:
        raise ValueError(f"device: got {name!r}, expected one of {DEVICE_CHOICES}")
    name = name.lower()
    if name == "auto":
        usable = cuda_kernels_present() and not cuda_simulator_enabled() and cuda_available()
        return "cuda" if usable else "cpu"
    if name == "cuda":
        require_cuda()
        global _simulator_warned
        if cuda_simulator_enabled() and not _simulator_warned:
            _simulator_warned = True
            warnings.warn(SIMULATOR_MESSAGE, SimulatorWarning, stacklevel=2)
    return name


def require_cuda() -> None:
    """Raise a DeviceError that says how to get CUDA when it is not usable."""
    if not cuda_kernels_present():
        raise DeviceError(
            "device 'cuda': this numbacnn installation has no CUDA backend yet "
            "(numbacnn.kernels.cuda is missing); use device 'cpu'"
        )
    try:
        from numba import cuda
    except Exception as exc:
        raise DeviceError(
            f"device 'cuda': numba's CUDA target is not installed ({exc}); "
            f"install it with: {_CUDA_INSTALL_HINT}"
        ) from exc
    if not cuda_available():
        raise DeviceError(
            "device 'cuda': no usable NVIDIA GPU was found (numba.cuda.is_available() "
            "is False). Check the driver with `nvidia-smi`, or use device 'cpu'."
        )
    if cuda_simulator_enabled() and not hasattr(cuda, "get_current_device"):
        # numba's own (deprecated) CUDA target without numba-cuda: its simulator
        # lacks what the kernels use
        raise DeviceError(
            f"device 'cuda': NUMBA_ENABLE_CUDASIM=1 is set but numba-cuda is not installed, and numba's "
            f"built-in simulator cannot run numbacnn's kernels; install it with: {_CUDA_INSTALL_HINT}, "
            f"or use device 'cpu'"
        )


_default_device = "cpu"


def get_default_device() -> str:
    """The device ("cpu" or "cuda") where new parameters and batches are created."""
    return _default_device


def set_default_device(name: str) -> str:
    """Choose where new parameters and data batches live; returns the resolved name.

    ``name`` is "cpu", "cuda" or "auto" (see :func:`resolve_device`).
    """
    global _default_device
    _default_device = resolve_device(name)
    return _default_device


@contextlib.contextmanager
def device(name: str) -> Iterator[str]:
    """Context manager: ``with numbacnn.device("cuda"): ...`` sets the default device
    for the block and restores the previous one afterwards, even on error."""
    global _default_device
    previous = _default_device
    _default_device = resolve_device(name)
    try:
        yield _default_device
    finally:
        _default_device = previous


def is_cuda_array(a: Any) -> bool:
    """True when ``a`` is a GPU array: it has ``__cuda_array_interface__``, or it is a
    device array of Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which has not."""
    if isinstance(a, np.ndarray):
        return False
    if hasattr(a, "__cuda_array_interface__"):
        return True
    # only look for the simulator's class if the simulator has been imported
    simulator = sys.modules.get("numba.cuda.simulator.cudadrv.devicearray")
    return simulator is not None and isinstance(a, simulator.FakeCUDAArray)


def device_of(a: Any) -> str:
    """"cpu" for NumPy arrays, "cuda" for GPU arrays; TypeError for anything else."""
    if isinstance(a, np.ndarray):
        return "cpu"
    if is_cuda_array(a):
        return "cuda"
    raise TypeError(
        f"expected a NumPy array or a CUDA device array, got {type(a).__name__}"
    )


def backend(device_name: str) -> ModuleType:
    """The kernel module for a device: ``numbacnn.kernels.cpu`` or ``.cuda``.

    Every backend module exposes the same kernel names plus ``empty`` and ``zeros``.
    """
    if device_name == "cpu" and _LOADED_BACKENDS:  # the common case, several times per layer per step
        return _LOADED_BACKENDS["cpu"]
    if device_name == "cuda":
        require_cuda()
    if device_name not in DEVICES:
        raise ValueError(f"device: got {device_name!r}, expected one of {DEVICES}")
    module = importlib.import_module(f"numbacnn.kernels.{device_name}")
    if device_name == "cpu":
        _LOADED_BACKENDS["cpu"] = module
    return module


_LOADED_BACKENDS: dict[str, ModuleType] = {}  # "cpu" -> numbacnn.kernels.cpu once imported


def empty(shape: tuple[int, ...], dtype: Any, device_name: str | None = None) -> Any:
    """Uninitialised array of ``shape`` and ``dtype`` on a device (default device)."""
    return backend(device_name or _default_device).empty(tuple(shape), np.dtype(dtype))


def zeros(shape: tuple[int, ...], dtype: Any, device_name: str | None = None) -> Any:
    """Zero-filled array of ``shape`` and ``dtype`` on a device (default device)."""
    return backend(device_name or _default_device).zeros(tuple(shape), np.dtype(dtype))


def to_device(a: Any, device_name: str | None = None) -> Any:
    """Return ``a`` on ``device_name`` ("cpu", "cuda", "auto"; default: the default
    device). Arrays already there are returned as they are, not copied.

    Moving never changes the dtype; a NumPy input that is not C-contiguous is made
    contiguous on the way (a copy, values unchanged).
    """
    target = resolve_device(device_name) if device_name else _default_device
    if target == "cpu":
        return to_host(a)
    # "cuda" was checked by resolve_device, or when it became the default device
    if is_cuda_array(a):
        return a
    # importing the backend first installs its memory pool (an EMM plugin) before
    # this upload creates the CUDA context; see kernels/cuda/memory.py
    backend("cuda")
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(np.asarray(a)))


def to_host(a: Any) -> np.ndarray:
    """Return ``a`` as a NumPy array (copying from the GPU when it lives there)."""
    if isinstance(a, np.ndarray):
        return a
    if is_cuda_array(a):
        if hasattr(a, "copy_to_host"):
            return a.copy_to_host()
        from numba import cuda

        return cuda.as_cuda_array(a).copy_to_host()
    return np.asarray(a)


def cuda_memory_stats() -> dict[str, int]:
    """Counters of numbacnn's CUDA memory pool (see ``numbacnn/kernels/cuda/memory.py``):
    ``allocations`` (each one a ``cudaMalloc`` on a GPU), ``reuses``, ``bytes_in_use``
    and ``bytes_cached``."""
    return backend("cuda").memory.pool_stats()


def synchronize(device_name: str | None = None) -> None:
    """Wait for queued GPU work to finish (a no-op on the CPU). Use before timing."""
    if (device_name or _default_device) == "cuda":
        from numba import cuda

        cuda.synchronize()

