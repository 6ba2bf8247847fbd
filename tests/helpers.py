"""One checking helper for every op and backend, and the device runner.

``assert_close`` compares against a float64 reference with DESIGN.md's accuracy
bar (relative L2 error <= 1e-10 in float64, <= 2e-4 in float32) and, on failure,
prints the worst element. ``on_device`` runs a functional call with its array
arguments moved to a device and brings the results back to the host.
"""

from __future__ import annotations

import os

import numpy as np

import numbacnn
from numbacnn.device import cuda_available, cuda_kernels_present

RELATIVE_L2_TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-4}
DTYPES = [np.float32, np.float64]

# Under Numba's CUDA simulator every CUDA thread is a Python thread: keep shapes small.
CUDA_SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def available_devices() -> list[str]:
    devices = ["cpu"]
    if cuda_kernels_present() and cuda_available():
        devices.append("cuda")
    return devices


def max_spatial_size(device: str) -> int:
    """Largest H/W the random-shape tests draw on a device."""
    return 7 if (device == "cuda" and CUDA_SIMULATED) else 12


def finite_difference_device(device: str) -> str:
    """Where finite-difference tests evaluate the forward op hundreds of times.

    Under the CUDA simulator that would take minutes, so there the CPU forward
    (itself checked against the reference) is differentiated numerically, and the
    CUDA backward is still the one checked. On a real GPU: the device itself.
    """
    return "cpu" if (device == "cuda" and CUDA_SIMULATED) else device


def relative_l2_error(actual, expected) -> float:
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    scale = np.linalg.norm(expected)
    diff = np.linalg.norm(actual - expected)
    return float(diff / scale) if scale > 0 else float(diff)


def assert_close(actual, expected, dtype, name: str = "result") -> None:
    """``actual`` (host array in ``dtype``) matches the float64 ``expected``."""
    actual = numbacnn.to_host(actual)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != expected {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{name}: dtype {actual.dtype} != expected {np.dtype(dtype)}"
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{name}: NaN pattern differs"
    # +-inf (a pooling window that is all padding) must match exactly; the L2 error is over finite values
    infinite = np.isinf(expected)
    assert np.array_equal(actual[infinite], expected[infinite]), f"{name}: infinities differ"
    finite = np.isfinite(expected)
    error = relative_l2_error(actual[finite], expected[finite])
    tolerance = RELATIVE_L2_TOLERANCE[np.dtype(dtype)]
    if not error <= tolerance:
        worst = np.unravel_index(np.argmax(np.abs(np.where(finite, actual - expected, 0))), expected.shape)
        raise AssertionError(
            f"{name}: relative L2 error {error:.3g} > {tolerance:g} ({np.dtype(dtype).name}); worst at "
            f"{worst}: got {actual[worst]!r}, expected {expected[worst]!r}; first values got "
            f"{actual.ravel()[:4]}, expected {expected.ravel()[:4]}"
        )


def on_device(device: str, fn, *args, **kwargs):
    """Call ``fn`` with every array argument moved to ``device``; results to host."""
    moved = [numbacnn.to_device(a, device) if isinstance(a, np.ndarray) else a for a in args]
    moved_kwargs = {k: numbacnn.to_device(v, device) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    result = fn(*moved, **moved_kwargs)
    if isinstance(result, tuple):
        return tuple(numbacnn.to_host(r) if r is not None and not isinstance(r, float) else r for r in result)
    return numbacnn.to_host(result)


def random_array(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def bordered_copy(a: np.ndarray, border: tuple[int, int]) -> np.ndarray:
    """a (N, C, H, W) in the interior of a new zero-bordered buffer (``numbacnn/fused/buffers.py``)."""
    from numbacnn.fused.buffers import bordered_empty, interior

    buffer = bordered_empty(a.shape, border, a.dtype)
    interior(buffer, border, a.shape)[...] = a
    return buffer


def assert_border_zero(buffer: np.ndarray, border: tuple[int, int], shape: tuple, name: str) -> None:
    """Nothing outside the (N, C, H, W) interior at ``border`` of a bordered buffer was written."""
    inside = np.zeros(buffer.shape, bool)
    inside[:, :, border[0]:border[0] + shape[2], border[1]:border[1] + shape[3]] = True
    assert not np.any(buffer[~inside]), f"{name}: border written"
