"""The layer table: a model's leaf layers for an input shape, without data.

:func:`describe_layers` walks the layers and gives each one's output shape,
parameters, FLOPs, receptive field and whether its kernel slides symmetrically;
:func:`format_layer_table` prints that as ``numbacnn explain model`` shows it.
Layer names follow CNN Explainer (``conv_1_1``, ``relu_1_1``, ``max_pool_1``,
``output``) beside numbacnn's dotted names (``features.0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from numbacnn.nn import BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, leaf_layers
from numbacnn.nn.summary import checked_input_shape, layer_step
from numbacnn.shapes import ConvExplanation, receptive_field_step


def explainer_names(layers: Sequence[Module]) -> list[str]:
    """CNN Explainer's names for a layer sequence.

    Convolutions are numbered per block (a block ends at a max pool):
    ``conv_1_1, relu_1_1, conv_1_2, relu_1_2, max_pool_1, conv_2_1, ...``; a ReLU
    (and a batch norm, ``batch_norm_1_1``) takes the number of the convolution before
    it. The last Linear is ``output``, earlier ones ``linear_1``, ``linear_2``, ...
    """
    names, block, conv_in_block, linears = [], 1, 0, 0
    last_linear = max((i for i, layer in enumerate(layers) if isinstance(layer, Linear)), default=-1)
    for index, layer in enumerate(layers):
        if isinstance(layer, Conv2d):
            conv_in_block += 1
            names.append(f"conv_{block}_{conv_in_block}")
        elif isinstance(layer, ReLU):
            names.append(f"relu_{block}_{conv_in_block}" if conv_in_block else f"relu_{index}")
        elif isinstance(layer, BatchNorm2d):
            names.append(f"batch_norm_{block}_{conv_in_block}" if conv_in_block else f"batch_norm_{index}")
        elif isinstance(layer, MaxPool2d):
            names.append(f"max_pool_{block}")
            block, conv_in_block = block + 1, 0
        elif isinstance(layer, Flatten):
            names.append("flatten")
        elif isinstance(layer, Linear):
            linears += 1
            names.append("output" if index == last_linear else f"linear_{linears}")
        else:
            names.append(type(layer).__name__.lower())
    return names


@dataclass(frozen=True)
class LayerDescription:
    """One leaf layer for an input of a given shape (no data needed).

    Attributes
    ----------
    name : str
        Dotted numbacnn name, e.g. ``"features.0"``.
    explainer_name : str
        CNN Explainer's name, e.g. ``"conv_1_1"``.
    kind : str
        Layer class name.
    output_shape : tuple of int
        (N, C, H, W) or (N, features).
    parameters, flops : int
        Trainable scalars; forward FLOPs for this batch (multiply-add = 2).
    receptive_field : (int, int) or None
        Input pixels (h, w) one output unit depends on; None after Flatten (all of them).
    slide : ConvExplanation or None
        For Conv2d / MaxPool2d: how the kernel slides over this layer's input.
    """

    name: str
    explainer_name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int
    flops: int
    receptive_field: tuple[int, int] | None
    slide: ConvExplanation | None = None

    @property
    def symmetric(self) -> bool:
        """False when this layer's kernel leaves border rows/columns uncovered."""
        return self.slide is None or self.slide.symmetric


def describe_layers(model: Module, input_shape: Sequence[int]) -> list[LayerDescription]:
    """Walk the model's layers for an input shape, without running it.

    Parameters
    ----------
    model : Module
        A (nested) Sequential, e.g. ``tiny_vgg()``.
    input_shape : (C, H, W) or (N, C, H, W)
        A batch of 1 when N is left out.

    Returns
    -------
    list of LayerDescription
        One per leaf layer, in forward order.
    """
    shape = checked_input_shape(input_shape, "describe_layers")
    if len(shape) == 3:
        shape = (1,) + shape
    layers = leaf_layers(model)
    names = explainer_names([layer for _, layer in layers])
    field_size: tuple[int, int] | None = (1, 1)
    jump = (1, 1)
    described = []
    for (name, layer), explainer_name in zip(layers, names):
        flops, output_shape = layer_step(name, layer, shape, "describe_layers")
        slide = layer.slide((shape[2], shape[3])) if len(shape) == 4 else None
        shape = output_shape
        if isinstance(layer, (Conv2d, MaxPool2d)) and field_size is not None:
            field_size, jump = receptive_field_step(field_size, jump, layer.kernel_size, layer.stride,
                                                    layer.dilation)
        elif isinstance(layer, (Flatten, Linear)):
            field_size = None  # every output depends on the whole input from here on
        described.append(LayerDescription(
            name=name, explainer_name=explainer_name, kind=type(layer).__name__, output_shape=shape,
            parameters=sum(p.size for p in layer.parameters()), flops=int(flops),
            receptive_field=field_size, slide=slide,
        ))
    return described


def format_layer_table(described: Sequence[LayerDescription], input_shape: Sequence[int]) -> str:
    """A text table of :func:`describe_layers`' result, asymmetric slides flagged,
    followed by totals and a paragraph for each asymmetric slide."""
    header = ("layer", "name", "type", "output shape", "params", "FLOPs", "receptive field", "slide")
    shape = tuple(int(s) for s in input_shape)
    rows = [("input", "", "", str((1,) + shape if len(shape) == 3 else shape), "", "", "1x1", "")]
    for d in described:
        field_text = f"{d.receptive_field[0]}x{d.receptive_field[1]}" if d.receptive_field else "whole input"
        slide_text = "" if d.slide is None else ("symmetric" if d.slide.symmetric else
                                                 f"ASYMMETRIC: {d.slide.uncovered[0]} row(s), "
                                                 f"{d.slide.uncovered[1]} col(s) dropped")
        rows.append((d.explainer_name, d.name, d.kind, str(d.output_shape), f"{d.parameters:,}", f"{d.flops:,}",
                     field_text, slide_text))
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    right_aligned = {4, 5}

    def line(row: Sequence[str]) -> str:
        return "  ".join(cell.rjust(w) if i in right_aligned else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(row, widths))).rstrip()

    rule = "-" * len(line(header))
    lines = [rule, line(header), rule] + [line(row) for row in rows] + [rule]
    lines.append(f"total parameters: {sum(d.parameters for d in described):,}")
    lines.append(f"forward FLOPs (batch {described[0].output_shape[0] if described else 1}): "
                 f"{sum(d.flops for d in described):,}")
    asymmetric = [d for d in described if not d.symmetric]
    if asymmetric:
        lines.append("")
        for d in asymmetric:
            lines.append(f"{d.explainer_name} ({d.name}, {d.kind}): {d.slide.message}")
    else:
        lines.append("every kernel slides symmetrically: no border pixel is dropped")
    return "\n".join(lines)


__all__ = ["LayerDescription", "describe_layers", "explainer_names", "format_layer_table"]
