"""Fusion chosen by :class:`~numbacnn.nn.Sequential`: Conv2d (-> BatchNorm2d) -> ReLU (-> MaxPool2d).

The unfused layers stay the definition. When a Sequential holds a run
``Conv2d, ReLU`` or ``Conv2d, ReLU, MaxPool2d``, with or without a ``BatchNorm2d``
after the conv (exactly those classes: a subclass may have changed what its forward
does), it runs it as one block, and consecutive
blocks as one :class:`FusedChain` step, which hands the block descriptions and the
layers' parameters to the fused wing (:class:`numbacnn.fused.BlockChain`). A chain
produces the same output, the same parameter gradients (added into the same
``Parameter.grad``), the same running statistics and the same input gradient as the
layers one by one; ``tests/test_fusion.py`` and ``tests/test_fusion_batch_norm.py``
hold them equal.

``with numbacnn.nn.fusion.disabled():`` runs every Sequential layer by layer (the
reference path); ``set_enabled(False)`` does so until switched back.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from numbacnn.fused import BlockChain, ConvBlock, NormParams, NormSpec, PoolSpec
from numbacnn.nn.layers import Conv2d, MaxPool2d, ReLU, _warn_if_asymmetric
from numbacnn.nn.module import Module
from numbacnn.nn.normalization import BatchNorm2d

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


Group = tuple  # (Conv2d, [BatchNorm2d,] ReLU [, MaxPool2d])


def group_pool(group: Group) -> MaxPool2d | None:
    """The group's MaxPool2d, or None."""
    return group[-1] if type(group[-1]) is MaxPool2d else None


def group_norm(group: Group) -> BatchNorm2d | None:
    """The group's BatchNorm2d, or None."""
    return group[1] if type(group[1]) is BatchNorm2d else None


def conv_block(conv: Conv2d, pool: MaxPool2d | None, norm: BatchNorm2d | None = None) -> ConvBlock:
    """The fused wing's description of one group (values only)."""
    pool_spec = norm_spec = None
    if pool is not None:
        pool_spec = PoolSpec(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
    if norm is not None:
        norm_spec = NormSpec(norm.eps, norm.affine, norm.track_running_stats)
    return ConvBlock(tuple(conv.weight.shape), conv.stride, conv.padding, conv.dilation, conv.groups, pool_spec,
                     norm_spec)


class FusedChain:
    """Consecutive ``Conv2d (-> BatchNorm2d) -> ReLU (-> MaxPool2d)`` groups of a Sequential run as one step.

    Not a Module: the layers stay where they are in the Sequential (names,
    ``state_dict``, parameters and buffers unchanged); the step reads their parameters
    at each call, warns as the layers would, counts each batch norm's batches as it
    would, and accumulates the gradients the chain returns.
    """

    def __init__(self, groups: Sequence[Group]) -> None:
        self.groups = [tuple(group) for group in groups]
        self.chain: BlockChain | None = None
        self._blocks: tuple = ()
        self._warned_for: set = set()  # input shapes whose slide lessons the layers have been asked

    def __repr__(self) -> str:
        return "FusedChain(" + " | ".join(", ".join(type(layer).__name__ for layer in group)
                                          for group in self.groups) + ")"

    @property
    def layers(self) -> tuple[Module, ...]:
        return tuple(layer for group in self.groups for layer in group)

    def blocks(self) -> tuple[ConvBlock, ...]:
        """The groups as the wing sees them; the chain is rebuilt if a layer changed."""
        blocks = tuple(conv_block(group[0], group_pool(group), group_norm(group)) for group in self.groups)
        if self.chain is None or blocks != self._blocks:
            self.chain, self._blocks = BlockChain(blocks), blocks
        return blocks

    def _params(self, forward: bool = False) -> list[tuple[Any, Any, NormParams | None]]:
        """Each group's (conv weight, conv bias, batch norm's NormParams or None);
        ``forward``: for a forward, which counts each batch norm's batch."""
        params = []
        for group in self.groups:
            conv, norm = group[0], group_norm(group)
            norm_params = None
            if norm is not None:
                momentum = norm.count_batch() if forward else 0.0
                norm_params = NormParams(
                    None if norm.weight is None else norm.weight.data, None if norm.bias is None else norm.bias.data,
                    norm.running_mean, norm.running_var, norm.uses_batch_stats(), momentum)
            params.append((conv.weight.data, None if conv.bias is None else conv.bias.data, norm_params))
        return params

    def _warn(self, x: Any) -> None:
        """CNN Explainer's slide lesson for each conv and pool, on the shapes this input
        gives them (the layers warn the same way when run one by one)."""
        shape = tuple(x.shape)
        for group in self.groups:
            conv, pool = group[0], group_pool(group)
            _warn_if_asymmetric(conv, _Shape(shape))
            try:
                shape = conv.output_shape(shape)
                if pool is not None:
                    _warn_if_asymmetric(pool, _Shape(shape))
                    shape = pool.output_shape(shape)
            except (ValueError, TypeError):
                return  # the functional op raises the error when the block runs

    def forward(self, x: Any) -> Any:
        """x (N, C, H, W) -> the last group's output; caches what backward needs in training mode."""
        self.blocks()
        if tuple(x.shape) not in self._warned_for:  # each layer checks each input size once anyway
            self._warned_for.add(tuple(x.shape))
            self._warn(x)
        return self.chain.forward(x, self._params(forward=True), [group[0].training for group in self.groups])

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        """gy (the last group's output shape) -> gx (x's shape) or None; accumulates every
        conv's weight and bias gradients."""
        if self.chain is None:
            raise RuntimeError(f"{self!r}.backward: no cached input; call forward in training mode first")
        gx, grads = self.chain.backward(gy, self._params(), input_grad)
        for group, (gw, gb, gnorm) in zip(self.groups, grads):
            conv, norm = group[0], group_norm(group)
            conv.weight.accumulate(gw)
            if conv.bias is not None:
                conv.bias.accumulate(gb)
            if norm is not None and norm.weight is not None:
                norm.weight.accumulate(gnorm[0])
                norm.bias.accumulate(gnorm[1])
        return gx


class _Shape:
    """Stands for an array whose shape alone is needed (a layer's input inside the chain)."""

    def __init__(self, shape: tuple) -> None:
        self.shape = shape


Step = Module | FusedChain


def _group_at(layers: Sequence[Module], i: int) -> Group | None:
    """The Conv2d, [BatchNorm2d,] ReLU [, MaxPool2d] group starting at layers[i], exact
    classes only."""
    if type(layers[i]) is not Conv2d:
        return None
    end = i + 1
    if end < len(layers) and type(layers[end]) is BatchNorm2d:
        end += 1
    if end >= len(layers) or type(layers[end]) is not ReLU:
        return None
    end += 1
    if end < len(layers) and type(layers[end]) is MaxPool2d:
        end += 1
    return tuple(layers[i:end])


def plan(layers: Sequence[Module]) -> list[Step]:
    """The steps a Sequential runs: its layers, with each maximal run of consecutive
    Conv2d (-> BatchNorm2d) -> ReLU (-> MaxPool2d) groups replaced by one :class:`FusedChain`."""
    steps: list[Step] = []
    i = 0
    while i < len(layers):
        groups = []
        while i < len(layers) and (group := _group_at(layers, i)) is not None:
            groups.append(group)
            i += len(group)
        if groups:
            steps.append(FusedChain(groups))
        else:
            steps.append(layers[i])
            i += 1
    return steps


def run_forward(steps: Sequence[Step], x: Any) -> Any:
    """Apply the steps in order."""
    for step in steps:
        x = step.forward(x)
    return x


def run_backward(steps: Sequence[Step], gy: Any, input_grad: bool) -> Any:
    """Back-propagate through the steps of the last forward, in reverse; the first step
    skips its input gradient when ``input_grad`` is False."""
    for i in range(len(steps) - 1, -1, -1):
        gy = steps[i].backward(gy, input_grad=input_grad if i == 0 else True)
    return gy
