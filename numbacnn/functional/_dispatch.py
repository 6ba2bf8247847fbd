"""What every functional op shares: finding the one device of its inputs, making
them contiguous, and picking the kernel backend. No op logic lives here."""

from __future__ import annotations

from typing import Any

import numpy as np

from numbacnn.device import backend, device_of

Array = Any  # a NumPy array or a CUDA device array
IntOrPair = int | tuple[int, int]


def _common_device(op: str, **arrays: Array) -> str:
    """The one device all given arrays (None skipped) live on; error if they differ."""
    placed = [(name, device_of(a)) for name, a in arrays.items() if a is not None]
    first_name, first_device = placed[0]
    for name, where in placed[1:]:
        if where != first_device:
            raise ValueError(
                f"{op}: {first_name} is on {first_device} but {name} is on {where}; "
                f"all inputs must be on one device (move them with numbacnn.to_device(array, "
                f"'{first_device}'))"
            )
    return first_device


def _contiguous(a: Array, name: str, op: str, where: str) -> Array:
    """C-contiguous version of ``a``: a copy for strided NumPy views (values and dtype
    unchanged); CUDA arrays must already be contiguous."""
    if a is None:
        return None
    if where == "cpu":
        return np.ascontiguousarray(a)
    is_contiguous = getattr(a, "is_c_contiguous", None)
    if is_contiguous is not None and not is_contiguous():
        raise ValueError(f"{op}: {name} is a non-contiguous CUDA array; expected a C-contiguous one")
    return a


def _prepare(op: str, **arrays: Array) -> tuple[str, Any, dict[str, Array]]:
    """Device, kernel backend and contiguous versions of the named arrays."""
    where = _common_device(op, **arrays)
    kernels = backend(where)
    return where, kernels, {name: _contiguous(a, name, op, where) for name, a in arrays.items()}


def _add_batch_axis(a: Array, batched_ndim: int) -> tuple[Array, bool]:
    """``a`` with a leading batch axis of 1 when it has ``batched_ndim - 1`` axes (an
    unbatched (C, H, W) image, as PyTorch accepts), and whether one was added.

    A reshape: a view of contiguous arrays on either device, nothing copied."""
    if hasattr(a, "shape") and len(a.shape) == batched_ndim - 1:  # non-arrays are refused by the checks
        return a.reshape((1, *a.shape)), True
    return a, False


def _drop_batch_axis(a: Array, added: bool) -> Array:
    """Undo :func:`_add_batch_axis` on a result: (1, ...) -> (...) when ``added``."""
    if a is None or not added:
        return a
    return a.reshape(tuple(a.shape[1:]))
