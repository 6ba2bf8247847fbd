"""AvgPool2d, AdaptiveAvgPool2d and AdaptiveMaxPool2d, as PyTorch's layers."""

from __future__ import annotations

from typing import Any

import numbacnn.functional as F
from numbacnn.nn.module import Module
from numbacnn.shapes import adaptive_output_size, pair, pool2d_geometry


class AvgPool2d(Module):
    """2-D average pooling (stride None means kernel_size); see ``F.avg_pool2d``.

    Shapes: x (N, C, H, W) or (C, H, W) -> (N, C, OH, OW) or (C, OH, OW).
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
        name = "AvgPool2d"
        self.kernel_size = pair(kernel_size, "kernel_size", name, minimum=1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", name, minimum=1)
        self.padding = pair(padding, "padding", name, minimum=0)
        self._hyper = dict(stride=self.stride, padding=self.padding, ceil_mode=ceil_mode,
                           count_include_pad=count_include_pad, divisor_override=divisor_override)
        self._shape: Any = None

    def forward(self, x: Any) -> Any:
        y = F.avg_pool2d(x, self.kernel_size, **self._hyper)
        self._shape = tuple(x.shape) if self.training else None
        return y

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        if self._shape is None:
            raise RuntimeError("AvgPool2d.backward: no cached input shape; call forward in training mode first")
        gx = F.avg_pool2d_backward(gy, self._shape, self.kernel_size, **self._hyper) if input_grad else None
        self._shape = None
        return gx

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        hyper = {k: v for k, v in self._hyper.items() if k in ("stride", "padding", "ceil_mode")}
        return pool2d_geometry(tuple(input_shape), self.kernel_size, op="AvgPool2d", **hyper).output_shape

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size`` whatever the input size (1 = global)."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        adaptive_output_size(output_size, (1, 1), "AdaptiveAvgPool2d")  # checks the argument only
        self.output_size = output_size
        self._shape: Any = None

    def forward(self, x: Any) -> Any:
        y = F.adaptive_avg_pool2d(x, self.output_size)
        self._shape = tuple(x.shape) if self.training else None
        return y

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        if self._shape is None:
            raise RuntimeError("AdaptiveAvgPool2d.backward: no cached input shape; call forward in training mode")
        gx = F.adaptive_avg_pool2d_backward(gy, self._shape) if input_grad else None
        self._shape = None
        return gx

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*tuple(input_shape)[:-2], *adaptive_output_size(self.output_size, input_shape, "AdaptiveAvgPool2d"))

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Max pooling to a fixed ``output_size`` (PyTorch's windows and first maximum)."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        adaptive_output_size(output_size, (1, 1), "AdaptiveMaxPool2d")
        self.output_size = output_size
        self._cache: Any = None

    def forward(self, x: Any) -> Any:
        y, indices = F.adaptive_max_pool2d(x, self.output_size, return_indices=True)
        self._cache = (indices, tuple(x.shape)) if self.training else None
        return y

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        if self._cache is None:
            raise RuntimeError("AdaptiveMaxPool2d.backward: no cached indices; call forward in training mode first")
        indices, shape = self._cache
        gx = F.adaptive_max_pool2d_backward(gy, indices=indices, input_shape=shape) if input_grad else None
        self._cache = None
        return gx

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*tuple(input_shape)[:-2], *adaptive_output_size(self.output_size, input_shape, "AdaptiveMaxPool2d"))

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

