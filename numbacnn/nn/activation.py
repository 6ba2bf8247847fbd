"""LeakyReLU, PyTorch's ``nn.LeakyReLU`` (the functional op in ``functional/activation.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np

import numbacnn.functional as F
from numbacnn.nn.module import Module


class LeakyReLU(Module):
    """x where x > 0, else ``negative_slope * x``; any shape."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float, np.floating)):
            raise TypeError(f"LeakyReLU: negative_slope must be a number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)
        self._x: Any = None

    def forward(self, x: Any) -> Any:
        self._x = x if self.training else None
        return F.leaky_relu(x, self.negative_slope)

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        if self._x is None:
            raise RuntimeError("LeakyReLU.backward: no cached input; call forward in training mode first")
        gx = F.leaky_relu_backward(gy, self._x, self.negative_slope) if input_grad else None
        self._x = None
        return gx

    def flops(self, input_shape: tuple[int, ...]) -> int:
        return int(np.prod(input_shape, dtype=np.int64))

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"
