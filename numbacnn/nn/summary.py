"""``summary(model, input_shape)``: a torchinfo-style table of a model."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: module.py imports this file (Module.summary)
    from numbacnn.nn.module import Module


def checked_input_shape(input_shape: Sequence[int], op: str) -> tuple[int, ...]:
    """``input_shape`` as a tuple of ints >= 0, or a TypeError / ValueError naming it."""
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in input_shape):
        raise TypeError(f"{op}: input_shape must be a sequence of ints such as (3, 64, 64) or (1, 3, 64, 64), "
                        f"got {input_shape!r}")
    if any(s < 0 for s in input_shape):
        raise ValueError(f"{op}: input_shape must not have negative sizes, got {tuple(input_shape)}")
    return tuple(int(s) for s in input_shape)


def layer_step(name: str, layer: Module, shape: tuple[int, ...], op: str) -> tuple[int, tuple[int, ...]]:
    """(FLOPs, output shape) of one leaf layer for an input ``shape``; a shape the
    layer cannot take raises ValueError naming the layer and the shape."""
    try:
        return layer.flops(shape), tuple(layer.output_shape(shape))
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{op}: layer {name} ({type(layer).__name__}) cannot take an input of shape {shape}: "
                         f"{exc}") from exc


def _format_count(n: int) -> str:
    return f"{n:,}"


def summary(model: Module, input_shape: Sequence[int],
            print_fn: Callable[[str], None] | None = print) -> str:
    """Print and return a table: layer, output shape, parameter count, FLOPs.

    Shapes are computed from the hyperparameters alone (no forward pass), so this
    is instant and shows where a configuration breaks.

    Parameters
    ----------
    model : Module
        A layer or a (nested) Sequential whose leaves run in order.
    input_shape : (C, H, W) or (N, C, H, W)
        Input shape; a batch of 1 is assumed when N is left out.
    print_fn : callable or None
        Called with the table text; None prints nothing.

    Returns
    -------
    str
        The table. FLOPs count a multiply-add as 2 and a comparison (ReLU, max) as 1.
    """
    shape = checked_input_shape(input_shape, "summary")
    if len(shape) == 3:
        shape = (1,) + shape
    rows = [("input", "", str(shape), "", "")]
    total_params = total_flops = 0
    for name, layer in leaf_layers(model):
        flops, shape = layer_step(name, layer, shape, "summary")
        params = sum(p.size for p in layer.parameters())
        total_params += params
        total_flops += flops
        rows.append((name, type(layer).__name__, str(shape), _format_count(params), _format_count(flops)))
    header = ("layer", "type", "output shape", "params", "FLOPs")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
    rule = "-" * (sum(widths) + 2 * 4)

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    lines = [rule, fmt(header), rule] + [fmt(r) for r in rows] + [rule]
    dtype = model.parameters()[0].dtype if model.parameters() else None
    lines.append(f"total parameters: {_format_count(total_params)}"
                 + (f" ({total_params * dtype.itemsize / 1024:.1f} KiB as {dtype})" if dtype else ""))
    lines.append(f"forward FLOPs for batch {shape[0]}: {_format_count(total_flops)}")
    text = "\n".join(lines)
    if print_fn is not None:
        print_fn(text)
    return text


def leaf_layers(model: Module, prefix: str = "") -> list[tuple[str, Module]]:
    """Layers without sub-modules, with dotted names, in forward order.

    Layer-by-layer walks (``summary``, the explain report) run these one after
    another, which is what a (nested) ``Sequential`` does; a container with its own
    ``forward`` logic is refused.

    Raises
    ------
    TypeError
        A module with children is not a Sequential (its order of calls is unknown).
    """
    children = list(model._modules.items())
    if not children:
        return [(prefix or type(model).__name__, model)]
    if not getattr(type(model), "runs_children_in_order", False):
        raise TypeError(
            f"{prefix or 'the model'} is a {type(model).__name__} with sub-modules; layer-by-layer walks "
            f"(summary, the explain report) need (nested) Sequential containers, whose forward is just "
            f"their layers in order"
        )
    leaves = []
    for name, child in children:
        leaves.extend(leaf_layers(child, f"{prefix}.{name}" if prefix else name))
    return leaves
