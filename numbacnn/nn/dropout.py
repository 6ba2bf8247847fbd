"""Dropout, PyTorch's ``nn.Dropout``: active in training mode, the identity in eval."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

import numbacnn.functional as F
from numbacnn.nn.module import Module


class Dropout(Module):
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p)
    in training mode; the identity in eval mode.

    Parameters
    ----------
    p : float in [0, 1]
    seed : int, Generator or None
        One ``numpy.random.Generator`` is made from it and advanced at every
        training forward, so a model built with the same seed drops the same
        elements step after step (on either device: the mask is drawn on the host).
    """

    def __init__(self, p: float = 0.5, seed: int | np.random.Generator | None = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"Dropout: p must be a probability between 0 and 1, got {p!r}")
        self.p = float(p)
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._mask: Any = None

    def forward(self, x: Any) -> Any:
        if not self.training:
            self._mask = None
            return x  # the identity, as PyTorch's nn.Dropout in eval mode (no copy, no mask)
        y, self._mask = F.dropout(x, self.p, training=True, seed=self._rng, return_mask=True)
        return y

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        if self._mask is None:
            raise RuntimeError("Dropout.backward: no mask; call forward in training mode first")
        gx = F.dropout_backward(gy, self._mask) if input_grad else None
        self._mask = None
        return gx

    def extra_repr(self) -> str:
        return f"p={self.p}"
