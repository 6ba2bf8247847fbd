"""Layers: Conv2d, ReLU, MaxPool2d, Flatten, Linear.

Each layer's forward and backward sit next to each other and call
``numbacnn.functional`` only; there is no kernel code here. Forward caches its
input in training mode; backward returns the input gradient and adds the
parameter gradients into ``Parameter.grad``.

Inside a ``Sequential`` the layers write into buffers they keep between steps
(``numbacnn/workspace.py`` gives the rule: arrays returned to the caller stay
valid; a layer called on its own returns new arrays).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any

import numpy as np

import numbacnn.functional as F
from numbacnn.device import get_default_device, resolve_device, to_device
from numbacnn.nn.module import Module, Parameter
from numbacnn.workspace import Workspaces, key_of
from numbacnn.shapes import (
    ConvExplanation,
    HyperparameterWarning,
    conv2d_geometry,
    explain_conv,
    pair,
    pool2d_geometry,
)

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A ``numpy.random.Generator`` from a Generator, a seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng: expected a numpy.random.Generator, an int seed or None, got {rng!r}")


def _check_dtype(dtype: Any, layer: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"{layer}: dtype must be float32 or float64, got {dt}")
    return dt


def _uniform_parameter(shape: tuple[int, ...], bound: float, rng: np.random.Generator,
                       dtype: np.dtype, device_name: str | None) -> Parameter:
    """U(-bound, bound) values drawn in float64 (so float32 and float64 models
    from the same seed start from the same numbers), then stored in ``dtype``."""
    values = rng.uniform(-bound, bound, size=shape).astype(dtype)
    return Parameter(to_device(values, resolve_device(device_name) if device_name else get_default_device()))


def _check_positive_int(value: Any, name: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


def _grad_buffer(ws: Workspaces, name: str, parameter: Parameter | None, key: tuple) -> Any:
    """The kept buffer for a parameter's gradient, only when the parameter already
    has a ``grad`` to add it into: a first gradient after ``zero_grad`` becomes
    ``grad`` itself and must be a new array (the next step would overwrite it)."""
    if parameter is None or parameter.grad is None:
        return None
    return ws.get(name, key)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../numbacnn


def _user_stacklevel() -> int:
    """``warnings.warn``'s stacklevel, called from the function that warns, that names
    the first frame outside numbacnn: the user's ``model(x)`` line, whether the layer
    ran on its own, inside a Sequential or in a fused group (a fixed stacklevel
    pointed into nn/fusion.py or nn/module.py)."""
    frame = sys._getframe(2)  # the caller of the function that warns
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep):
        frame = frame.f_back
        level += 1
    return level


def _warn_if_asymmetric(layer: Module, x: Any) -> None:
    """CNN Explainer's stride lesson: warn (once per layer) when the kernel does not
    slide symmetrically over this input x (N, C, H, W), i.e. border rows/columns are
    dropped."""
    if len(x.shape) != 4:
        return  # the functional op reports the wrong rank
    input_hw = (int(x.shape[2]), int(x.shape[3]))
    if layer._warned or input_hw in layer._checked_sizes:
        return
    layer._checked_sizes.add(input_hw)
    explanation = layer.slide(input_hw)
    # A kernel that does not fit at all is the functional op's error to raise.
    if explanation is not None and not explanation.symmetric and min(explanation.output_size) >= 1:
        layer._warned = True
        warnings.warn(f"{type(layer).__name__}: {explanation.message}", HyperparameterWarning,
                      stacklevel=_user_stacklevel())


class Conv2d(Module):
    """2-D convolution (cross-correlation), PyTorch's ``nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (h, w)
    padding : int, (h, w), "valid" or "same"
    groups : int
    bias : bool
    dtype : float32 or float64
    device : str or None
        Where the parameters live (default: the default device).
    rng : numpy.random.Generator, int or None
        Source of the initial weights: PyTorch's default, ``kaiming_uniform_(a=sqrt(5))``
        for the weight and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the bias, both of
        which are U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C/groups*KH*KW.

    Shapes
    ------
    x (N, in_channels, H, W) -> y (N, out_channels, HO, WO); weight is
    (out_channels, in_channels/groups, KH, KW), bias (out_channels,).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 dtype: Any = np.float32, device: str | None = None,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        name = "Conv2d"
        self.in_channels = _check_positive_int(in_channels, "in_channels", name)
        self.out_channels = _check_positive_int(out_channels, "out_channels", name)
        self.groups = _check_positive_int(groups, "groups", name)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{name}: groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        self.kernel_size = pair(kernel_size, "kernel_size", name, minimum=1)
        self.stride = pair(stride, "stride", name, minimum=1)
        self.dilation = pair(dilation, "dilation", name, minimum=1)
        if isinstance(padding, str):
            if padding.lower() not in ("valid", "same"):
                raise ValueError(f"{name}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            if padding.lower() == "same" and self.stride != (1, 1):
                raise ValueError(f"{name}: padding='same' needs stride 1, got stride={stride!r}")
            self.padding: Any = padding.lower()
        else:
            self.padding = pair(padding, "padding", name, minimum=0)
        dt = _check_dtype(dtype, name)
        generator = as_rng(rng)
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = _uniform_parameter(
            (self.out_channels, self.in_channels // self.groups, kh, kw), bound, generator, dt, device
        )
        self.bias = _uniform_parameter((self.out_channels,), bound, generator, dt, device) if bias else None
        self._x: Any = None
        self._ws = Workspaces()
        self._warned = False
        self._checked_sizes: set[tuple[int, int]] = set()

    def _hyper(self) -> dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def slide(self, input_hw: tuple[int, int]) -> ConvExplanation | None:
        """See :meth:`Module.slide`; "same" padding never drops pixels (None)."""
        if self.padding == "same":
            return None
        padding = (0, 0) if self.padding == "valid" else self.padding
        return explain_conv(input_hw, self.kernel_size, self.stride, padding, self.dilation)

    def forward(self, x: Any) -> Any:
        """x (N, C, H, W) -> (N, F, HO, WO); caches x in training mode."""
        _warn_if_asymmetric(self, x)
        key = key_of(x, self.weight.data)
        y = F.conv2d(x, self.weight.data, None if self.bias is None else self.bias.data, **self._hyper(),
                     out=self._ws.get("y", key, x))
        self._x = x if self.training else None
        return self._ws.keep("y", key, y)

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        """gy (N, F, HO, WO) -> gx (N, C, H, W) or None; accumulates weight/bias grads."""
        if self._x is None:
            raise RuntimeError("Conv2d.backward: no cached input; call forward in training mode (model.train()) first")
        key = key_of(gy, self._x, self.weight.data)
        out = (self._ws.get("gx", key, gy) if input_grad else None, _grad_buffer(self._ws, "gw", self.weight, key),
               _grad_buffer(self._ws, "gb", self.bias, key))
        gx, gw, gb = F.conv2d_backward(gy, self._x, self.weight.data, input_grad=input_grad, **self._hyper(),
                                       out=out)
        self._ws.keep("gx", key, gx)
        if self.weight.grad is not None:
            self._ws.keep("gw", key, gw)
        if self.bias is not None and self.bias.grad is not None:
            self._ws.keep("gb", key, gb)
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        self._x = None  # the cache is spent; a second backward needs a new forward
        return gx

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return conv2d_geometry(input_shape, self.weight.shape, op="Conv2d", **self._hyper()).output_shape

    def flops(self, input_shape: tuple[int, ...]) -> int:
        n, f, ho, wo = self.output_shape(input_shape)
        macs = n * f * ho * wo * (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        return 2 * macs + (n * f * ho * wo if self.bias is not None else 0)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}" + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")
                + (f", groups={self.groups}" if self.groups != 1 else "")
                + (", bias=False" if self.bias is None else ""))


class ReLU(Module):
    """max(x, 0), elementwise; any shape. Gradient 0 at x == 0 (as PyTorch)."""

    def __init__(self) -> None:
        super().__init__()
        self._x: Any = None
        self._ws = Workspaces()

    def forward(self, x: Any) -> Any:
        key = key_of(x)
        y = F.relu(x, out=self._ws.get("y", key, x))
        self._x = x if self.training else None
        return self._ws.keep("y", key, y)

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        if self._x is None:
            raise RuntimeError("ReLU.backward: no cached input; call forward in training mode first")
        gx = None
        if input_grad:
            key = key_of(gy, self._x)
            gx = self._ws.keep("gx", key, F.relu_backward(gy, self._x, out=self._ws.get("gx", key, gy, self._x)))
        self._x = None
        return gx

    def flops(self, input_shape: tuple[int, ...]) -> int:
        return int(np.prod(input_shape, dtype=np.int64))


class MaxPool2d(Module):
    """2-D max pooling, PyTorch's ``nn.MaxPool2d`` (stride None means kernel_size).

    Shapes
    ------
    x (N, C, H, W) -> y (N, C, HO, WO).
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        name = "MaxPool2d"
        self.kernel_size = pair(kernel_size, "kernel_size", name, minimum=1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", name, minimum=1)
        self.padding = pair(padding, "padding", name, minimum=0)
        self.dilation = pair(dilation, "dilation", name, minimum=1)
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise TypeError(f"{name}: ceil_mode must be a bool, got {ceil_mode!r}")
        self.ceil_mode = bool(ceil_mode)
        self._x: Any = None
        self._ws = Workspaces()
        self._warned = False
        self._checked_sizes: set[tuple[int, int]] = set()

    def _hyper(self) -> dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, ceil_mode=self.ceil_mode)

    def slide(self, input_hw: tuple[int, int]) -> ConvExplanation | None:
        """See :meth:`Module.slide`; with ``ceil_mode`` a partial last window covers
        the remainder, so nothing is dropped (None)."""
        if self.ceil_mode:
            return None
        return explain_conv(input_hw, self.kernel_size, self.stride, self.padding, self.dilation)

    def forward(self, x: Any) -> Any:
        _warn_if_asymmetric(self, x)
        key = key_of(x)
        y = F.max_pool2d(x, self.kernel_size, **self._hyper(), out=self._ws.get("y", key, x))
        self._x = x if self.training else None
        return self._ws.keep("y", key, y)

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        if self._x is None:
            raise RuntimeError("MaxPool2d.backward: no cached input; call forward in training mode first")
        gx = None
        if input_grad:
            key = key_of(gy, self._x)
            gx = F.max_pool2d_backward(gy, self._x, self.kernel_size, **self._hyper(),
                                       out=self._ws.get("gx", key, gy, self._x))
            self._ws.keep("gx", key, gx)
        self._x = None
        return gx

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return pool2d_geometry(input_shape, self.kernel_size, op="MaxPool2d", **self._hyper()).output_shape

    def flops(self, input_shape: tuple[int, ...]) -> int:
        # one comparison per window element
        return int(np.prod(self.output_shape(input_shape), dtype=np.int64)) * self.kernel_size[0] * self.kernel_size[1]

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...), a reshape (a view for contiguous input)."""

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: Any) -> Any:
        shape = tuple(int(s) for s in x.shape)
        if len(shape) < 2:
            raise ValueError(f"Flatten: x must have a batch axis and at least one more, got shape {shape}")
        self._shape = shape
        return x.reshape(shape[0], math.prod(shape[1:]))  # math.prod: np.prod costs ~5 us a step here

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        if self._shape is None:
            raise RuntimeError("Flatten.backward: call forward first")
        return gy.reshape(self._shape) if input_grad else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (input_shape[0], int(np.prod(input_shape[1:], dtype=np.int64)))


class Linear(Module):
    """y = x @ weight.T + bias, PyTorch's ``nn.Linear`` and its initialisation.

    Shapes
    ------
    x (N, in_features) -> y (N, out_features); weight (out_features, in_features).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: Any = np.float32,
                 device: str | None = None, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        name = "Linear"
        self.in_features = _check_positive_int(in_features, "in_features", name)
        self.out_features = _check_positive_int(out_features, "out_features", name)
        dt = _check_dtype(dtype, name)
        generator = as_rng(rng)
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = _uniform_parameter((self.out_features, self.in_features), bound, generator, dt, device)
        self.bias = _uniform_parameter((self.out_features,), bound, generator, dt, device) if bias else None
        self._x: Any = None
        self._ws = Workspaces()

    def forward(self, x: Any) -> Any:
        key = key_of(x, self.weight.data)
        y = F.linear(x, self.weight.data, None if self.bias is None else self.bias.data,
                     out=self._ws.get("y", key, x))
        self._x = x if self.training else None
        return self._ws.keep("y", key, y)

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        if self._x is None:
            raise RuntimeError("Linear.backward: no cached input; call forward in training mode first")
        key = key_of(gy, self._x, self.weight.data)
        out = (self._ws.get("gx", key, gy), _grad_buffer(self._ws, "gw", self.weight, key),
               _grad_buffer(self._ws, "gb", self.bias, key))
        gx, gw, gb = F.linear_backward(gy, self._x, self.weight.data, out=out)
        self._ws.keep("gx", key, gx)
        if self.weight.grad is not None:
            self._ws.keep("gw", key, gw)
        if self.bias is not None and self.bias.grad is not None:
            self._ws.keep("gb", key, gb)
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        self._x = None
        return gx if input_grad else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise ValueError(
                f"Linear: input shape {tuple(input_shape)} does not fit, expected (N, {self.in_features})"
            )
        return (input_shape[0], self.out_features)

    def flops(self, input_shape: tuple[int, ...]) -> int:
        n = input_shape[0]
        return 2 * n * self.in_features * self.out_features + (n * self.out_features if self.bias is not None else 0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}" + (
            ", bias=False" if self.bias is None else "")
