"""``summary(model, input_shape)``: a torchinfo-style table of a model."""

from __future__ import annotations

from typing import Callable, Sequence

from numbacnn.nn.module import Module, leaf_layers


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
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    rows = [("input", "", str(shape), "", "")]
    total_params = total_flops = 0
    for name, layer in leaf_layers(model):
        flops = layer.flops(shape)
        shape = layer.output_shape(shape)
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
