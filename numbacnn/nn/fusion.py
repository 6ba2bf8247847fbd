"""Fusion chosen by :class:`~numbacnn.nn.Sequential`: Conv2d -> ReLU (-> MaxPool2d).

The unfused layers stay the definition. When a Sequential holds a run
``Conv2d, ReLU`` or ``Conv2d, ReLU, MaxPool2d`` (exactly those classes: a subclass
may have changed what its forward does), it runs the run as one
:class:`ConvReLUGroup`, which calls the fused ops of ``numbacnn.functional.fused``.
The group produces the same output, the same parameter gradients (added into the
same ``Parameter.grad``) and the same input gradient as the layers one by one;
``tests/test_fusion.py`` holds them equal.

Between neighbouring groups the backward also saves a pass: when a group's input is
the previous group's ReLU output (a conv after conv + ReLU), the group returns its
input gradient already multiplied by that ReLU's mask (``x > 0``), and the previous
group skips its own ReLU backward. That masked gradient stays inside the
Sequential: what ``Sequential.backward`` returns is always the plain gradient with
respect to its input.

``with numbacnn.nn.fusion.disabled():`` runs every Sequential layer by layer (the
reference path); ``set_enabled(False)`` does so until switched back.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numbacnn.functional as F
import numbacnn.functional.fused as FF
from numbacnn.nn.layers import Conv2d, MaxPool2d, ReLU, _warn_if_asymmetric
from numbacnn.nn.module import Module

_enabled = True


def set_enabled(enabled: bool) -> None:
    """Switch fusion on or off for every Sequential (on by default)."""
    global _enabled
    _enabled = bool(enabled)


def is_enabled() -> bool:
    """Whether Sequential fuses Conv2d -> ReLU (-> MaxPool2d) runs."""
    return _enabled


@contextmanager
def disabled() -> Iterator[None]:
    """Run every Sequential layer by layer inside this block (the unfused reference)."""
    global _enabled
    before = _enabled
    _enabled = False
    try:
        yield
    finally:
        _enabled = before


class ConvReLUGroup:
    """``Conv2d -> ReLU`` or ``Conv2d -> ReLU -> MaxPool2d`` run as one step.

    Not a Module: the layers stay where they are in the Sequential (names,
    ``state_dict``, parameters unchanged); the group only holds what its backward
    needs from its forward.
    """

    def __init__(self, conv: Conv2d, relu: ReLU, pool: MaxPool2d | None = None) -> None:
        self.conv, self.relu, self.pool = conv, relu, pool
        self.layers: tuple[Module, ...] = (conv, relu) if pool is None else (conv, relu, pool)
        self._x: Any = None        # the group's input (conv's input)
        self._y: Any = None        # the ReLU output: the mask, and the pool's input
        self._indices: Any = None  # the pool's argmax indices

    def __repr__(self) -> str:
        return "ConvReLUGroup(" + ", ".join(type(layer).__name__ for layer in self.layers) + ")"

    @property
    def ends_in_relu(self) -> bool:
        """True when the group's output is the ReLU's output (no pool after it)."""
        return self.pool is None

    def _conv_args(self) -> dict[str, Any]:
        conv = self.conv
        return dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)

    def _pool_args(self) -> dict[str, Any]:
        pool = self.pool
        return dict(kernel_size=pool.kernel_size, stride=pool.stride, padding=pool.padding,
                    dilation=pool.dilation, ceil_mode=pool.ceil_mode)

    def forward(self, x: Any) -> Any:
        """x (N, C, H, W) -> the last layer's output; caches x, y, indices in training mode."""
        conv = self.conv
        _warn_if_asymmetric(conv, x)
        bias = None if conv.bias is None else conv.bias.data
        training = conv.training
        if self.pool is None:
            y = FF.conv2d_relu(x, conv.weight.data, bias, **self._conv_args())
            out, indices = y, None
        else:
            p = self._pool_args()
            out, y, indices = FF.conv2d_relu_max_pool2d(
                x, conv.weight.data, bias, **self._conv_args(), pool_kernel_size=p["kernel_size"],
                pool_stride=p["stride"], pool_padding=p["padding"], pool_dilation=p["dilation"],
                ceil_mode=p["ceil_mode"])
            _warn_if_asymmetric(self.pool, y)
        self._x, self._y, self._indices = (x, y, indices) if training else (None, None, None)
        return out

    def backward(self, gy: Any, input_grad: bool = True, gy_is_masked: bool = False,
                 mask_input: bool = False) -> Any:
        """gy (the last layer's output shape) -> gx (x's shape) or None.

        ``gy_is_masked``: gy is already the gradient with respect to the ReLU's input
        (the next group multiplied in this group's mask); only possible without a
        pool. ``mask_input``: return ``gx * (x > 0)`` (x came from a ReLU).
        Accumulates the conv's weight and bias gradients.
        """
        if self._x is None:
            raise RuntimeError(f"{self!r}.backward: no cached input; call forward in training mode first")
        if self.pool is not None:
            gz = FF.max_pool2d_relu_backward(gy, self._indices, self._y, **self._pool_args())
        elif gy_is_masked:
            gz = gy
        else:
            gz = F.relu_backward(gy, self._y)
        conv = self.conv
        gx, gw, gb = FF.conv2d_backward_relu_mask(gz, self._x, conv.weight.data, **self._conv_args(),
                                                  input_grad=input_grad, mask_input=mask_input)
        conv.weight.accumulate(gw)
        if conv.bias is not None:
            conv.bias.accumulate(gb)
        self._x = self._y = self._indices = None  # spent, as the layers' caches
        return gx


Step = Module | ConvReLUGroup


def plan(layers: Sequence[Module]) -> list[Step]:
    """The steps a Sequential runs: its layers, with each Conv2d -> ReLU (-> MaxPool2d)
    run replaced by one :class:`ConvReLUGroup`. Only those exact classes are fused."""
    steps: list[Step] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        if (type(layer) is Conv2d and i + 1 < len(layers) and type(layers[i + 1]) is ReLU):
            if i + 2 < len(layers) and type(layers[i + 2]) is MaxPool2d:
                steps.append(ConvReLUGroup(layer, layers[i + 1], layers[i + 2]))
                i += 3
            else:
                steps.append(ConvReLUGroup(layer, layers[i + 1]))
                i += 2
            continue
        steps.append(layer)
        i += 1
    return steps


def run_forward(steps: Sequence[Step], x: Any) -> Any:
    """Apply the steps in order."""
    for step in steps:
        x = step.forward(x)
    return x


def run_backward(steps: Sequence[Step], gy: Any, input_grad: bool) -> Any:
    """Back-propagate through the steps of the last forward, in reverse.

    A group whose previous step is a group ending in ReLU returns its input gradient
    masked, and that previous group takes it as is (``gy_is_masked``).
    """
    masked = False
    for i in range(len(steps) - 1, -1, -1):
        step = steps[i]
        wants_input_grad = input_grad if i == 0 else True
        if isinstance(step, ConvReLUGroup):
            previous = steps[i - 1] if i > 0 else None
            mask_input = isinstance(previous, ConvReLUGroup) and previous.ends_in_relu
            gy = step.backward(gy, input_grad=wants_input_grad, gy_is_masked=masked, mask_input=mask_input)
            masked = mask_input
        else:
            gy = step.backward(gy, input_grad=wants_input_grad)
            masked = False
    return gy
