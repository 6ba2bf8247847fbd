"""CNN Explainer's three hyperparameter lessons, printed and drawn.

1. Padding: zero padding keeps the borders and the spatial size.
2. Kernel size: small kernels shrink a layer slowly, so networks can be deeper.
3. Stride: large strides shrink outputs fast, and the kernel must slide over the
   input symmetrically, or border pixels are silently dropped.

    python examples/explain_hyperparameters.py            # pictures in runs/lessons/
    python examples/explain_hyperparameters.py --no-png   # text only (no matplotlib needed)

The same explanations from the command line:
``numbacnn explain conv --input 7 --kernel 3 --stride 3 --png slide.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from numbacnn.shapes import conv_output_size, explain_conv


def show(title: str, explanation, png: Path | None) -> None:
    """Print one configuration's arithmetic and verdict; draw it when asked."""
    from numbacnn.viz import coverage_counts  # NumPy only; matplotlib is needed for drawing

    counts = coverage_counts(explanation)
    pad_h, pad_w = explanation.padding
    in_h, in_w = explanation.input_size
    corner, centre = counts[pad_h, pad_w], counts[pad_h + in_h // 2, pad_w + in_w // 2]
    print(f"  {title}")
    print(f"    height: {explanation.arithmetic[0]}")
    print(f"    the input's corner pixel is read by {corner} kernel position(s), its centre pixel by {centre}")
    print(f"    {'symmetric' if explanation.symmetric else explanation.message}")
    if png is not None:
        from numbacnn.viz import draw_conv_slide

        print(f"    drawn: {draw_conv_slide(explanation, png)}")


def layers_until_small(image_size: int, kernel_size: int, smallest: int = 3) -> list[int]:
    """Sizes after each unpadded stride-1 convolution until the map is below ``smallest``."""
    sizes = [image_size]
    while conv_output_size(sizes[-1], kernel_size) >= smallest:
        sizes.append(conv_output_size(sizes[-1], kernel_size))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/lessons", help="folder for the PNGs")
    parser.add_argument("--no-png", action="store_true", help="print only")
    args = parser.parse_args()
    out = None if args.no_png else Path(args.out)

    def png(name: str) -> Path | None:
        return None if out is None else out / f"{name}.png"

    print("Lesson 1, padding: a 3x3 kernel on a 7x7 input")
    show("no padding: the output shrinks, and border pixels count for less",
         explain_conv(7, 3, padding=0), png("1_padding_0"))
    show("padding 1: the output keeps the input's size, and border pixels are read more often",
         explain_conv(7, 3, padding=1), png("1_padding_1"))

    print("\nLesson 2, kernel size: how many unpadded stride-1 layers fit before a 64x64 map is below 3x3")
    for kernel in (3, 5, 7, 11):
        sizes = layers_until_small(64, kernel)
        print(f"  {kernel}x{kernel} kernels: {len(sizes) - 1:2d} layers  ({' -> '.join(map(str, sizes))})")

    print("\nLesson 3, stride: a 3x3 kernel on a 7x7 input")
    show("stride 2: positions 0, 2, 4 end exactly at the last row", explain_conv(7, 3, stride=2), png("3_stride_2"))
    show("stride 3: the last row and column are never read", explain_conv(7, 3, stride=3), png("3_stride_3"))
    fixed = explain_conv(7, 3, stride=3, padding=explain_conv(7, 3, stride=3).suggested_paddings[0])
    show(f"stride 3 with the suggested padding {fixed.padding[0]}", fixed, png("3_stride_3_fixed"))


if __name__ == "__main__":
    main()
