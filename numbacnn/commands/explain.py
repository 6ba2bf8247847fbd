"""``numbacnn explain conv | model | report``: CNN Explainer's lessons in a terminal.

- ``explain conv --input 7 --kernel 3 --stride 3 --padding 0 [--png FILE]``: the
  output-size arithmetic per axis, whether the kernel slides symmetrically (which
  input rows/columns are silently dropped if not) and nearby settings that fix it;
  ``--png`` draws the padded input with every kernel position.
- ``explain model [--image-size 64 --padding 0 --stride 1 ...]``: Tiny VGG layer by layer:
  output shape, parameters, FLOPs, receptive field, asymmetric slides.
- ``explain report CHECKPOINT IMAGE --out DIR``: a static HTML page with every
  layer's activation maps for one image (``DIR/index.html``).

Exit codes: 0 explained; 1 the configuration is impossible (kernel larger than the
padded input, or a model ``tiny_vgg`` refuses to build); 2 bad arguments or files.
"""

from __future__ import annotations

import argparse
from typing import Any

from numbacnn.commands import DefaultsHelpFormatter
from numbacnn.errors import OutputError, ResourceError, UsageError

EXIT_OK, EXIT_IMPOSSIBLE, EXIT_ERROR = 0, 1, 2

# explain model builds the model (its weights) to walk its layers; a model whose
# parameters would take more than this share of the memory available is refused,
# with the figure, before anything is allocated.
MEMORY_SHARE = 0.5


def _int_or_pair(text: str) -> int | tuple[int, int]:
    """argparse type: ``7`` or ``7,5`` / ``7x5`` (height, width)."""
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or a pair like 7,5, got {text!r}") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return (values[0], values[1])
    raise argparse.ArgumentTypeError(f"expected an int or a pair like 7,5, got {text!r}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain", help="explain hyperparameters, a model's layers, or one image's activations",
        description="CNN Explainer's lessons as commands: how a kernel slides (conv), what each layer of "
                    "Tiny VGG does to shapes (model), and what a trained model sees in one image (report).",
    )
    parser.set_defaults(func=lambda args: (parser.print_help(), EXIT_ERROR)[1])
    explain = parser.add_subparsers(dest="explain_command", metavar="WHAT")

    conv = explain.add_parser(
        "conv", help="output size, symmetric slide and fixes for one convolution",
        description="Explain how a kernel slides over an input. Sizes may be one int or a pair "
                    "HEIGHT,WIDTH (e.g. --stride 2,1).",
        formatter_class=DefaultsHelpFormatter,
    )
    conv.add_argument("--input", type=_int_or_pair, required=True, help="input height/width")
    conv.add_argument("--kernel", type=_int_or_pair, required=True, help="kernel height/width")
    conv.add_argument("--stride", type=_int_or_pair, default=1, help="step between kernel positions")
    conv.add_argument("--padding", type=_int_or_pair, default=0, help="zero padding on each side")
    conv.add_argument("--dilation", type=_int_or_pair, default=1, help="spacing between kernel taps (1: none)")
    conv.add_argument("--png", metavar="FILE", default=None,
                      help="also draw the padded input with every kernel position (needs numbacnn[viz])")
    conv.set_defaults(func=run_conv)

    model = explain.add_parser(
        "model", help="Tiny VGG layer by layer: shapes, parameters, FLOPs, receptive fields",
        description="Print CNN Explainer's Tiny VGG layer by layer for these hyperparameters, flagging every "
                    "kernel that does not slide symmetrically over its input.",
        formatter_class=DefaultsHelpFormatter,
    )
    model.add_argument("--image-size", type=int, default=64,
                       help="input height and width (64: CNN Explainer's Tiny ImageNet; 28: Fashion-MNIST)")
    model.add_argument("--in-channels", type=int, default=3, help="input channels (3: RGB; 1: grey, as Fashion-MNIST)")
    model.add_argument("--num-classes", type=int, default=10, help="outputs of the classifier")
    model.add_argument("--filters", type=int, default=10, help="channels of every convolution")
    model.add_argument("--kernel-size", type=int, default=3, help="height and width of every convolution's kernel")
    model.add_argument("--padding", type=int, default=0,
                       help="zero padding of every convolution (numbacnn train uses 1)")
    model.add_argument("--stride", type=int, default=1,
                       help="stride of each block's first convolution (as numbacnn train --stride)")
    model.set_defaults(func=run_model)

    report = explain.add_parser(
        "report", help="HTML page of one image's activation maps through a trained model",
        description="Run one image through a checkpoint layer by layer and write a self-contained "
                    "OUT/index.html (images beside it in OUT/images/): the input, every conv/ReLU/pool "
                    "layer's activation maps, the first-layer kernels and the class probabilities. "
                    "Needs numbacnn[viz].",
    )
    report.add_argument("checkpoint", help="checkpoint.npz written by `numbacnn train` (or its folder)")
    report.add_argument("image", help="PNG/JPEG image; resized to the model's input size")
    report.add_argument("--out", required=True, metavar="DIR", help="report folder (created)")
    report.add_argument("--invert", action="store_true",
                        help="invert grey levels first (Fashion-MNIST is light-on-dark)")
    report.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                        help="where to run the model (default: cpu; one image is fast on the CPU)")
    report.set_defaults(func=run_report)


# --------------------------------------------------------------------------- #
# explain conv
# --------------------------------------------------------------------------- #


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _axis_loss(uncovered: int, input_size: int, pad: int, row_or_column: str) -> tuple[str, bool]:
    """Which rows (or columns) one axis never covers, in the input's own numbering,
    and whether they are padding only."""
    lost_input = uncovered - min(uncovered, pad)  # the bottom/right padding is dropped first
    if lost_input == 0:
        if uncovered == 1:
            return f"the last padding {row_or_column}", True
        return f"the last {uncovered} padding {row_or_column}s", True
    first = input_size - lost_input
    if lost_input == 1:
        return f"the last input {row_or_column} ({row_or_column} {first}, counting from 0)", False
    return (f"the last {lost_input} input {row_or_column}s ({row_or_column}s {first}-{input_size - 1}, "
            f"counting from 0)", False)


def _format_pair(value: tuple[int, int]) -> str:
    return str(value[0]) if value[0] == value[1] else f"{value[0]},{value[1]}"


def _why(problem: str, e: Any) -> str:
    """The cause of a skip or a window of zeros, in the user's numbers."""
    from numbacnn.shapes import effective_kernel_size

    if "never read" in problem:
        causes = []
        for axis, stride, kernel, dilation in (("height", e.stride[0], e.kernel_size[0], e.dilation[0]),
                                               ("width", e.stride[1], e.kernel_size[1], e.dilation[1])):
            span = effective_kernel_size(kernel, dilation)
            if dilation > 1:
                causes.append(f"{axis}: dilation {dilation} leaves holes between taps")
            elif stride > span:
                causes.append(f"{axis}: stride {stride} > kernel {span}")
        return f" ({'; '.join(causes)})" if causes else ""
    if "only zero padding" in problem:
        causes = [f"{axis}: padding {pad} >= kernel {effective_kernel_size(k, d)}"
                  for axis, pad, k, d in (("height", e.padding[0], e.kernel_size[0], e.dilation[0]),
                                          ("width", e.padding[1], e.kernel_size[1], e.dilation[1]))
                  if pad >= effective_kernel_size(k, d)]
        return f" ({'; '.join(causes)})" if causes else ""
    return ""


def explain_conv_text(explanation: Any) -> str:
    """The report ``numbacnn explain conv`` prints for a ConvExplanation."""
    from numbacnn.shapes import explain_conv

    e = explanation
    (in_h, in_w), (k_h, k_w) = e.input_size, e.kernel_size
    lines = [
        f"input {in_h}x{in_w}, kernel {k_h}x{k_w}, stride {_format_pair(e.stride)}, "
        f"padding {_format_pair(e.padding)}" + (f", dilation {_format_pair(e.dilation)}" if e.dilation != (1, 1) else ""),
        "output size = (input + 2*padding - kernel) / stride + 1"
        + ("   (kernel = dilation*(kernel-1)+1)" if e.dilation != (1, 1) else ""),
        f"  height: {e.arithmetic[0]}",
        f"  width:  {e.arithmetic[1]}",
        f"output {e.output_size[0]}x{e.output_size[1]}",
        "",
    ]
    if min(e.output_size) < 1:
        lines.append(f"verdict: IMPOSSIBLE: {e.message}")
        return "\n".join(lines)
    # The verdict is made of the explanation's facts (e.sound, e.problems), the same
    # ones the picture's title and every suggestion are checked against.
    if e.sound:
        positions = e.output_size[0] * e.output_size[1]
        lines.append(f"verdict: symmetric: the {e.output_size[0]}x{e.output_size[1]} = {positions} kernel positions "
                     f"read every input pixel, end exactly at the border of the padded "
                     f"{in_h + 2 * e.padding[0]}x{in_w + 2 * e.padding[1]} input, and none sees only zero padding.")
        return "\n".join(lines)
    sentences = []
    problems = list(e.problems)
    if not e.symmetric:
        losses = []
        if e.uncovered[0]:
            losses.append(_axis_loss(e.uncovered[0], in_h, e.padding[0], "row"))
        if e.uncovered[1]:
            losses.append(_axis_loss(e.uncovered[1], in_w, e.padding[1], "column"))
        verb = "are" if len(losses) > 1 or max(e.uncovered) > 1 else "is"
        if all(padding_only for _, padding_only in losses):
            consequence = ("Only zero padding is dropped, but the slide is lopsided: the padding before the input "
                           "is read and the padding after it is not, so the borders are treated differently.")
        else:
            consequence = ("The division above is floored, so those pixels are silently dropped "
                           "(PyTorch does the same).")
        sentences.append(f"{' and '.join(text for text, _ in losses)} {verb} never covered by the kernel. "
                         f"{consequence}")
        problems = problems[1:]  # the first problem is the one just described row by row
    for problem in problems:
        sentences.append(problem[0].upper() + problem[1:] + _why(problem, e) + ".")
    lines.append(f"verdict: NOT symmetric: {' '.join(sentences)}")
    suggestions = [("padding", p, dict(padding=p, stride=e.stride)) for p in e.suggested_paddings]
    suggestions += [("stride", s, dict(padding=e.padding, stride=s)) for s in e.suggested_strides]
    if suggestions:
        lines.append("")
        lines.append("suggestions (each reads every input pixel, ends exactly at the border and has no window "
                     "of only padding):")
        for name, value, settings in suggestions:
            fixed = explain_conv(e.input_size, e.kernel_size, dilation=e.dilation, **settings)
            lines.append(f"  --{name} {_format_pair(value)}: output {fixed.output_size[0]}x{fixed.output_size[1]}"
                         f"  ({fixed.arithmetic[0]}"
                         + (f"; {fixed.arithmetic[1]}" if fixed.arithmetic[1] != fixed.arithmetic[0] else "")
                         + ")")
    else:
        lines.append("no nearby padding or stride passes every check on both axes; change the input or kernel size.")
    return "\n".join(lines)


CONV_OPTIONS = (("input", 1), ("kernel", 1), ("stride", 1), ("padding", 0), ("dilation", 1))


def run_conv(args: argparse.Namespace) -> int:
    """Print the explanation; with --png also draw it. Everything that can be checked
    (values, the picture's size, where it goes) is checked before anything is printed."""
    from numbacnn.shapes import explain_conv

    for option, minimum in CONV_OPTIONS:
        value = getattr(args, option)
        if min(value if isinstance(value, tuple) else (value,)) < minimum:
            raise UsageError(f"{option} must be >= {minimum} on both axes, got {_format_value(value)}",
                             f"--{option}", f"use --{option} {minimum} or more")
    explanation = explain_conv(args.input, args.kernel, args.stride, args.padding, args.dilation)
    png = None
    if args.png is not None:
        from numbacnn import viz

        try:
            viz.check_slide_drawable(explanation)
        except viz.PictureError as exc:
            raise UsageError(exc.what, f"--png {args.png}",
                             f"at most {viz.MAX_SLIDE_CELLS} cells per side; leave out --png, or draw a smaller "
                             f"--input / --padding: the arithmetic is the same at any size") from exc
        try:
            png = viz.png_path(args.png, viz.SLIDE_FILE_NAME)
        except viz.PictureError as exc:
            raise UsageError(exc.what, f"--png {args.png}", exc.todo) from exc
    print(explain_conv_text(explanation))
    if png is not None:
        from numbacnn import viz

        try:
            written = viz.draw_conv_slide(explanation, png)
        except ImportError as exc:
            raise UsageError("cannot draw the picture: matplotlib is not installed", f"--png {args.png}",
                             viz.VIZ_INSTALL_HINT) from exc
        except OSError as exc:
            raise OutputError(f"cannot write the picture: {exc.strerror or exc}", f"--png {png}",
                              "choose a writable folder") from exc
        print(f"\nwrote {written}")
    return EXIT_OK if min(explanation.output_size) >= 1 else EXIT_IMPOSSIBLE


def _format_value(value: int | tuple[int, int]) -> str:
    return f"{value[0]},{value[1]}" if isinstance(value, tuple) else str(value)


# --------------------------------------------------------------------------- #
# explain model
# --------------------------------------------------------------------------- #


def _largest_factor(args: argparse.Namespace) -> str:
    """The option (with its value) that grows the parameter count most over Tiny
    VGG's defaults: filters (squared in the convolutions), classes, or the image
    size and padding (the classifier's input grows with their square)."""
    from numbacnn.models import tiny_vgg_sizes

    final = tiny_vgg_sizes(args.image_size, args.kernel_size, args.padding, strict=False, stride=args.stride)[-1][1]
    growth = {f"--filters {args.filters}": (args.filters / 10) ** 2, f"--num-classes {args.num_classes}":
              args.num_classes / 10, f"--image-size {args.image_size} / --padding {args.padding}": (final / 13) ** 2}
    return max(growth, key=growth.get)


def run_model(args: argparse.Namespace) -> int:
    from numbacnn.models import tiny_vgg, tiny_vgg_parameter_count, tiny_vgg_sizes
    from numbacnn.report import describe_layers, format_layer_table
    from numbacnn.train.memory import available_memory_bytes, format_bytes

    settings = dict(in_channels=args.in_channels, num_classes=args.num_classes, image_size=args.image_size,
                    filters=args.filters, kernel_size=args.kernel_size, padding=args.padding, stride=args.stride)
    for name, value in settings.items():
        minimum = 0 if name == "padding" else 1
        if value < minimum:
            option = f"--{name.replace('_', '-')}"
            raise UsageError(f"{name.replace('_', ' ')} must be >= {minimum}, got {value}", option,
                             f"use {option} {minimum} or more")
    input_shape = (1, args.in_channels, args.image_size, args.image_size)
    try:
        # O(1) in the values: sizes and parameter count from the shapes, nothing built
        parameters = tiny_vgg_parameter_count(**settings)
    except ValueError as exc:
        print(f"Tiny VGG: {', '.join(f'{k}={v}' for k, v in settings.items())}")
        print(f"impossible: {exc}")
        return EXIT_IMPOSSIBLE
    needed = 4 * parameters  # float32 weights
    available = available_memory_bytes()
    if available is not None and needed > MEMORY_SHARE * available:
        raise ResourceError(f"the model would have {parameters:,} parameters ({format_bytes(needed)} as "
                            f"float32), more than {MEMORY_SHARE:.0%} of the {format_bytes(available)} of memory "
                            f"available", _largest_factor(args), "choose smaller values")
    print(f"Tiny VGG: {', '.join(f'{k}={v}' for k, v in settings.items())}")
    # strict=False builds an asymmetric slide too, so the table can show where it
    # happens; the sizes were checked above
    model = tiny_vgg(**settings, strict=False)
    described = describe_layers(model, input_shape)
    print(format_layer_table(described, input_shape))
    if not all(layer.symmetric for layer in described):
        # The asymmetric layers are explained above; say only what building it takes.
        try:
            tiny_vgg_sizes(args.image_size, args.kernel_size, args.padding, strict=True, stride=args.stride)
        except ValueError:
            print("\ntiny_vgg refuses this combination; tiny_vgg(..., strict=False) builds it anyway, and the "
                  "layers flagged above then warn with HyperparameterWarning on their first forward.")
            return EXIT_IMPOSSIBLE
        print("\nThe slides flagged above skip only zero padding, never an input pixel: tiny_vgg builds this "
              "combination (a strided conv that skips its last padding row/column is PyTorch's and ResNet's "
              "usual downsampling conv).")
    return EXIT_OK


# --------------------------------------------------------------------------- #
# explain report
# --------------------------------------------------------------------------- #


def run_report(args: argparse.Namespace) -> int:
    from numbacnn.device import DeviceError, resolve_device
    from numbacnn.report import report_from_checkpoint
    from numbacnn.report.page import check_report_folder

    check_report_folder(args.out, f"--out {args.out}")  # before any loading
    try:
        device = resolve_device(args.device)
    except DeviceError as exc:
        raise UsageError(str(exc).rstrip("."), f"--device {args.device}", "use --device cpu") from exc
    # errors (checkpoint, image, folder) are numbacnn errors naming the file; cli.main
    # prints them as one line
    report = report_from_checkpoint(args.checkpoint, args.image, args.out, invert=args.invert, device=device)
    from numbacnn.errors import printable  # a class name with a newline or a non-UTF-8 byte stays one line

    print(f"predicted: {printable(report.predicted_class)} ({report.probabilities[report.predicted]:.1%})")
    for layer in report.layers:
        channels, height, width = layer.shape
        print(f"  {layer.explainer_name:<11} {layer.kind:<10} {f'{channels}x{height}x{width}':<9} -> {layer.image}")
    print(f"wrote {report.index} (open it in a browser; {len(report.images)} images beside it)")
    return EXIT_OK
