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

import numpy as np

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


class _Workspace:
    """The buffers of one fast group for one input shape, kept between steps so a
    training step allocates (and page-faults) nothing. Bordered buffers are zeroed
    once here; the kernels write their interiors only."""

    def __init__(self, x_shape: tuple, dtype: Any, conv: Conv2d, pad: tuple[int, int],
                 out_border: tuple[int, int], pooled: bool, training: bool) -> None:
        n, _, h, w = x_shape
        filters, _, kernel_h, kernel_w = conv.weight.shape
        self.pad = pad
        self.y_shape = (n, filters, h + 2 * pad[0] - kernel_h + 1, w + 2 * pad[1] - kernel_w + 1)
        self.x_padded = FF.bordered_empty(x_shape, pad, dtype)  # used when no neighbour hands x over
        self.y_border = (0, 0) if pooled else out_border
        # With a pool the ReLU output is never stored: the backward needs only the
        # pooled output (its mask) and the indices, so the kernel pools its own sums.
        self.y = self.y_view = None
        if not pooled:
            self.y = FF.bordered_empty(self.y_shape, self.y_border, dtype)
            self.y_view = FF.interior(self.y, self.y_border, self.y_shape)
        if pooled:
            self.pooled_shape = (n, filters, self.y_shape[2] // 2, self.y_shape[3] // 2)
            self.pooled_border = out_border
            self.pooled = FF.bordered_empty(self.pooled_shape, out_border, dtype)
            self.pooled_view = FF.interior(self.pooled, out_border, self.pooled_shape)
            self.indices = np.empty(self.pooled_shape, np.int64)
        self.gz_border = (kernel_h - 1 - pad[0], kernel_w - 1 - pad[1])
        self.gz = self.gz_view = self.gz_by_1 = self.gx = None
        self.gz_by_1_written = False  # set by the next group when its grad-input wrote gz_by_1 too
        if not training:
            return  # no backward after an eval-mode forward: no gradient buffers
        # the output gradient, bordered by K - 1 - p for the grad-input correlation
        self.gz = FF.bordered_empty(self.y_shape, self.gz_border, dtype)
        self.gz_view = FF.interior(self.gz, self.gz_border, self.y_shape)
        # 3x3 without padding: the gradient again, bordered by 1 like x_padded, so
        # grad-weight can run over whole planes (see conv2d_backward_padded)
        if (kernel_h, kernel_w) == (3, 3) and pad == (0, 0):
            self.gz_by_1 = FF.bordered_empty(self.y_shape, (1, 1), dtype)
        self.gx = np.empty(x_shape, dtype)  # a plain input gradient (to a pool or outside)


class _ShapeOnly:
    """Stands for an array whose shape alone is needed (the pool's unstored input)."""

    def __init__(self, shape: tuple) -> None:
        self.shape = shape


class ConvReLUGroup:
    """``Conv2d -> ReLU`` or ``Conv2d -> ReLU -> MaxPool2d`` run as one step.

    Not a Module: the layers stay where they are in the Sequential (names,
    ``state_dict``, parameters unchanged); the group only holds what its backward
    needs from its forward.

    Two paths: the fast one (CPU, stride 1, dilation 1, groups 1, symmetric padding,
    2x2 pools: Tiny VGG) runs the bordered-buffer kernels of ``kernels/cpu/fused.py``
    on workspaces kept between steps, and hands buffers to its neighbouring groups
    (its output is written straight into the next conv's padded input; the next
    group's grad-input straight into this group's bordered output gradient); every
    other case runs the compositions of ``functional/fused.py``.
    A fast group's outputs and input gradient are its workspaces, overwritten by the
    next step (as the layers' own buffers; the outermost Sequential hands copies to
    its caller); an eval-mode workspace has no gradient buffers.
    """

    def __init__(self, conv: Conv2d, relu: ReLU, pool: MaxPool2d | None = None) -> None:
        self.conv, self.relu, self.pool = conv, relu, pool
        self.layers: tuple[Module, ...] = (conv, relu) if pool is None else (conv, relu, pool)
        self.previous: ConvReLUGroup | None = None  # neighbouring groups, set by plan()
        self.next: ConvReLUGroup | None = None
        self._x: Any = None        # the group's input (conv's input)
        self._y: Any = None        # the ReLU output: the mask, and the pool's input
        self._indices: Any = None  # the pool's argmax indices
        self._fast: _Workspace | None = None  # the last forward's workspace, when it took the fast path
        self._x_padded: Any = None
        self._workspaces: dict[bool, _Workspace] = {}  # by training mode

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

    def fast_padding(self, x: Any) -> tuple[int, int] | None:
        """(pad_h, pad_w) when this group takes the fast path for an input like x, else None."""
        conv = self.conv
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[0] == 0 or x.dtype != conv.weight.data.dtype:
            return None
        if x.dtype not in (np.float32, np.float64) or (conv.bias is not None and conv.bias.data.dtype != x.dtype):
            return None
        pad = FF.fast_conv_padding(x.shape, conv.weight.shape, conv.stride, conv.padding, conv.dilation,
                                   conv.groups)
        if pad is None or self.pool is None:
            return pad
        pool = self.pool
        if not (pool.kernel_size == (2, 2) and pool.stride == (2, 2) and pool.padding == (0, 0)
                and pool.dilation == (1, 1)):
            return None
        out_h = x.shape[2] + 2 * pad[0] - conv.weight.shape[2] + 1
        out_w = x.shape[3] + 2 * pad[1] - conv.weight.shape[3] + 1
        if out_h < 2 or out_w < 2 or (pool.ceil_mode and (out_h % 2 or out_w % 2)):
            return None  # ceil_mode with an odd size has partial windows: the general pool
        return pad

    def _next_border(self, out_shape: tuple, dtype: Any) -> tuple[int, int]:
        """The border the next group wants around this group's output (its padding)."""
        nxt = self.next
        if nxt is None:
            return (0, 0)
        probe = np.lib.stride_tricks.as_strided(np.empty(1, dtype), out_shape, (0,) * 4)  # shape and dtype only
        return nxt.fast_padding(probe) or (0, 0)

    def forward(self, x: Any) -> Any:
        """x (N, C, H, W) -> the last layer's output; caches x, y, indices in training mode."""
        conv = self.conv
        _warn_if_asymmetric(conv, x)
        pad = self.fast_padding(x)
        self._fast = None
        if pad is not None:
            return self._forward_fast(x, pad)
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

    def _forward_fast(self, x: Any, pad: tuple[int, int]) -> Any:
        conv = self.conv
        training = conv.training
        filters, _, kernel_h, kernel_w = conv.weight.shape
        y_shape = (x.shape[0], filters, x.shape[2] + 2 * pad[0] - kernel_h + 1, x.shape[3] + 2 * pad[1] - kernel_w + 1)
        out_shape = y_shape if self.pool is None else (y_shape[0], filters, y_shape[2] // 2, y_shape[3] // 2)
        out_border = self._next_border(out_shape, x.dtype)
        key = (tuple(x.shape), x.dtype.str, out_border, training)
        ws = self._workspaces.get(training)
        if ws is None or ws.key != key:
            # one workspace per mode (an eval forward has no gradient buffers); a new
            # batch shape replaces that mode's. What leaves the outermost Sequential is
            # copied there (nn/workspace.py), so reusing buffers in eval mode is safe too.
            ws = _Workspace(tuple(x.shape), x.dtype, conv, pad, out_border, self.pool is not None, training)
            ws.key = key
            self._workspaces[training] = ws
        previous = self.previous
        handed = previous._fast if previous is not None else None
        if handed is not None and previous.pool is None and x is handed.y_view and handed.y_border == pad:
            x_padded = handed.y  # the previous group wrote its output into our padded input
        elif handed is not None and previous.pool is not None and x is handed.pooled_view \
                and handed.pooled_border == pad:
            x_padded = handed.pooled
        else:
            x_padded = ws.x_padded
            FF.copy_into_border(x_padded, pad, x)
        bias = conv.bias.data if conv.bias is not None else np.zeros(filters, x.dtype)
        if self.pool is None:
            FF.conv2d_relu_padded(x_padded, conv.weight.data, bias, ws.y, ws.y_border)
            out = ws.y_view
        else:
            FF.conv2d_relu_padded(x_padded, conv.weight.data, bias, None, ws.y_border, pooled=ws.pooled,
                                  pooled_border=ws.pooled_border, indices=ws.indices)
            _warn_if_asymmetric(self.pool, _ShapeOnly(ws.y_shape))
            out = ws.pooled_view
        self._fast = ws
        self._x, self._x_padded = (x, x_padded) if training else (None, None)
        self._y = self._indices = None
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
        if self._fast is not None:
            return self._backward_fast(gy, input_grad, gy_is_masked, mask_input)
        if self.pool is not None:
            gz = FF.max_pool2d_relu_backward(gy, self._indices, self._y, **self._pool_args())
        elif gy_is_masked:
            gz = gy
        else:
            gz = F.relu_backward(gy, self._y)
        conv = self.conv
        gx, gw, gb = FF.conv2d_backward_relu_mask(gz, self._x, conv.weight.data, **self._conv_args(),
                                                  input_grad=input_grad, mask_input=mask_input)
        self._accumulate(gw, gb)
        self._x = self._y = self._indices = None  # spent, as the layers' caches
        return gx

    def _accumulate(self, gw: Any, gb: Any) -> None:
        conv = self.conv
        conv.weight.accumulate(gw)
        if conv.bias is not None:
            conv.bias.accumulate(gb)

    def _backward_fast(self, gy: Any, input_grad: bool, gy_is_masked: bool, mask_input: bool) -> Any:
        ws = self._fast
        gy = np.asarray(gy)
        # ws.gz_by_1 (3x3 without padding) holds the same gradient with another border;
        # the kernels that write ws.gz write it too where they can (by_1_written)
        by_1_written = ws.gz_by_1_written
        ws.gz_by_1_written = False
        if self.pool is not None:
            FF.max_pool2d_relu_backward_padded(ws.gz, ws.gz_border, gy.reshape(ws.pooled_shape), ws.indices,
                                               ws.pooled, ws.pooled_border, also=ws.gz_by_1, also_border=(1, 1))
            by_1_written = True
        elif gy_is_masked:
            if gy is not ws.gz_view:  # handed over by a group on the composed path
                FF.copy_into_border(ws.gz, ws.gz_border, gy.reshape(ws.y_shape))
                by_1_written = False
        else:
            FF.relu_backward_padded(ws.gz, ws.gz_border, gy.reshape(ws.y_shape), ws.y_view)
            by_1_written = False
        x_padded, pad = self._x_padded, ws.pad
        if ws.gz_by_1 is not None and not by_1_written:
            FF.copy_interior(ws.gz_by_1, (1, 1), ws.gz, ws.gz_border)
        previous = self.previous
        handed = previous._fast if previous is not None else None
        gx = None
        if not input_grad:
            gw, gb = FF.conv2d_backward_padded(ws.gz, ws.gz_border, x_padded, self.conv.weight.data, pad,
                                               gz_bordered_by_1=ws.gz_by_1)
        elif mask_input and handed is not None and previous._x is not None:
            # straight into the previous group's bordered output gradient, through its ReLU mask
            gw, gb = FF.conv2d_backward_padded(ws.gz, ws.gz_border, x_padded, self.conv.weight.data, pad,
                                               gx=handed.gz, gx_border=handed.gz_border, mask=x_padded,
                                               mask_border=pad, gz_bordered_by_1=ws.gz_by_1,
                                               gx_also=handed.gz_by_1, gx_also_border=(1, 1))
            handed.gz_by_1_written = handed.gz_by_1 is not None
            gx = handed.gz_view
        else:
            gw, gb = FF.conv2d_backward_padded(ws.gz, ws.gz_border, x_padded, self.conv.weight.data, pad,
                                               gx=ws.gx, mask=x_padded if mask_input else None, mask_border=pad,
                                               gz_bordered_by_1=ws.gz_by_1)
            gx = ws.gx
        self._accumulate(gw, gb)
        self._x = self._x_padded = None
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
    for before, after in zip(steps, steps[1:]):
        if isinstance(before, ConvReLUGroup) and isinstance(after, ConvReLUGroup):
            before.next, after.previous = after, before
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
