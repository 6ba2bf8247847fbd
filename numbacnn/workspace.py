"""Workspaces: the output and gradient buffers a layer keeps between steps.

A training step of the same model on batches of the same shape needs the same
arrays every time. Allocating them afresh costs page faults (the issue measured
~1,900 per Tiny VGG step, ~25% of the step) because large NumPy arrays are
``mmap``'d and returned to the system when freed. So ``Conv2d``, ``ReLU``,
``MaxPool2d`` and ``Linear`` keep their buffers, keyed by the input's shape, dtype
and device, and pass them to the functional ops' ``out=``; a new shape replaces
them.

The rule for arrays the caller holds (what a PyTorch user expects): **every array
returned to the caller stays valid**. A layer reuses buffers only while it runs
inside a :class:`~numbacnn.nn.Sequential` (the buffers are then intermediates that
the next layer consumes within the same step), and the outermost Sequential
returns a copy of its output and of its input gradient. So
``y1 = model(x1); y2 = model(x2)`` leaves ``y1`` unchanged, and a layer called on
its own (``conv(x)``) returns a new array each time. Parameter gradients are never
workspaces handed over: a layer writes into its gradient buffer only when the
parameter already has a ``grad`` to add it into (``Parameter.accumulate`` keeps the
first gradient after ``zero_grad`` as it is).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from numbacnn.device import backend, device_of
from numbacnn.functional._dispatch import _overlap

_state = threading.local()


def reusing() -> bool:
    """Whether layers may write into their kept buffers now (inside a Sequential)."""
    return getattr(_state, "depth", 0) > 0


@contextmanager
def scope() -> Iterator[bool]:
    """Entered by ``Sequential.forward``/``backward``; yields True for the outermost
    one, which must hand the caller :func:`detached` arrays."""
    depth = getattr(_state, "depth", 0)
    _state.depth = depth + 1
    try:
        yield depth == 0
    finally:
        _state.depth = depth


def detached(a: Any) -> Any:
    """A copy of ``a`` on its device (None stays None): what leaves the model."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return a.copy()
    copy = backend(device_of(a)).empty(tuple(a.shape), np.dtype(a.dtype))
    copy.copy_to_device(a)
    return copy


def key_of(*arrays: Any) -> tuple:
    """What a buffer depends on: the shapes, dtypes and devices of ``arrays``."""
    if all(type(a) is np.ndarray for a in arrays):  # the common case, per layer and step
        return tuple((a.shape, a.dtype.str, "cpu") for a in arrays)
    return tuple((tuple(int(s) for s in a.shape), np.dtype(a.dtype).str, device_of(a)) for a in arrays)


class Workspaces:
    """One layer's buffers by name, each valid for one key (see :func:`key_of`)."""

    def __init__(self) -> None:
        self._buffers: dict[str, tuple[tuple, Any]] = {}

    def get(self, name: str, key: tuple, *inputs: Any) -> Any:
        """The buffer kept under ``name`` for ``key``, or None (outside a Sequential,
        never kept for this key, or sharing memory with one of ``inputs``: the same
        layer object used twice in a row would otherwise read what it writes)."""
        if not reusing():
            return None
        kept = self._buffers.get(name)
        if kept is None or kept[0] != key:
            return None
        if any(a is not None and _overlap(kept[1], a) for a in inputs):
            return None
        return kept[1]

    def keep(self, name: str, key: tuple, array: Any) -> Any:
        """Remember ``array`` (just returned by a functional op) for the next step;
        returns it. Outside a Sequential nothing is kept (the caller owns it)."""
        if reusing() and array is not None:
            self._buffers[name] = (key, array)
        return array

    def clear(self) -> None:
        """Forget every buffer (they are allocated again on the next step)."""
        self._buffers.clear()
