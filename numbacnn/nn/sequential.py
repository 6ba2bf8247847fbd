"""Sequential: layers run in order, with Conv2d -> ReLU (-> MaxPool2d) runs fused.

``forward`` and ``backward`` walk the steps of ``nn/fusion.plan`` (the layers, with
each run of conv groups as one :class:`~numbacnn.nn.fusion.FusedChain`) inside a
workspace scope (``numbacnn/workspace.py``): layers reuse their buffers inside, and
what leaves the outermost Sequential is a copy.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from numbacnn import workspace
from numbacnn.nn import fusion
from numbacnn.nn.module import Module


class Sequential(Module):
    """Layers applied in order; children are named "0", "1", ... or by the keys of
    an ``OrderedDict`` (as ``torch.nn.Sequential``).

    Examples
    --------
    >>> from numbacnn import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, rng=0))
    >>> [name for name, _ in model.named_parameters()]
    ['1.weight', '1.bias']
    """

    runs_children_in_order = True  # what layer-by-layer walks rely on (nn/summary.leaf_layers)

    def __init__(self, *layers: Module | Mapping[str, Module]) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], Mapping):
            items = list(layers[0].items())
        else:
            items = [(str(i), layer) for i, layer in enumerate(layers)]
        for name, layer in items:
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {name!r} must be a Module, got {type(layer).__name__}")
            setattr(self, name, layer)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int | str) -> Module:
        if isinstance(index, str):
            if index not in self._modules:
                raise KeyError(f"Sequential has no layer named {index!r}; its layers are {list(self._modules)}")
            return self._modules[index]
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"Sequential: index must be an int or a layer name, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"Sequential: index {index} is out of range for {len(self)} layers")
        return list(self._modules.values())[index]

    def forward(self, x: Any) -> Any:
        """Apply each layer in turn: x (N, ...) -> the last layer's output.

        Conv2d -> ReLU (-> MaxPool2d) runs go through fused ops (``nn/fusion.py``),
        which give the same results as the layers one by one."""
        steps = self._fusion_steps() if fusion.is_enabled() else list(self._modules.values())
        self.__dict__["_last_steps"] = steps  # what backward must walk back through
        with workspace.scope() as outermost:  # layers write into kept buffers inside
            y = fusion.run_forward(steps, x)
        # what leaves the model is the caller's: a copy, so the next step cannot change it
        return workspace.detached(y) if outermost and y is not x else y

    def _fusion_steps(self) -> list:
        """This Sequential's fusion plan, rebuilt when its layers change."""
        layers = tuple(self._modules.values())
        cached = self.__dict__.get("_fusion_plan")
        if cached is None or len(cached[0]) != len(layers) or any(a is not b for a, b in zip(cached[0], layers)):
            cached = (layers, fusion.plan(layers))
            self.__dict__["_fusion_plan"] = cached
        return cached[1]

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        """Back-propagate ``gy`` (shape of the last forward's output) through the
        layers in reverse. With ``input_grad=False`` the first layer skips its input
        gradient (returns None): the usual case for a model's first convolution."""
        steps = self.__dict__.get("_last_steps") or list(self._modules.values())
        with workspace.scope() as outermost:
            gx = fusion.run_backward(steps, gy, input_grad)
        return workspace.detached(gx) if outermost and gx is not gy else gx

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        for layer in self._modules.values():
            shape = layer.output_shape(shape)
        return shape

    def flops(self, input_shape: tuple[int, ...]) -> int:
        total, shape = 0, tuple(input_shape)
        for layer in self._modules.values():
            total += layer.flops(shape)
            shape = layer.output_shape(shape)
        return total
