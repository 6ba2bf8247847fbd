"""Model builders: ``tiny_vgg``, the network CNN Explainer visualises."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from numbacnn.nn import BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, as_rng
from numbacnn.shapes import explain_conv

TINY_VGG_POOL = 2  # CNN Explainer's max pools are 2x2 with stride 2


# What tiny_vgg's ``stride`` means, stored beside it in checkpoints: until this rule,
# the stride applied to all four convolutions (checkpoints with stride != 1 from then
# describe another model and are refused by load_checkpoint).
STRIDE_RULE = "first convolution of each block"


def drops_input_pixels(explanation) -> bool:
    """True when a slide leaves real input rows or columns uncovered (their pixels
    never reach the output), False when it covers every input pixel and at most
    skips the last padding row/column.

    The floor in ``(n + 2p - k) / s + 1`` drops the bottom/right remainder of the
    padded input, bottom padding first: 28x28 with a 3x3 kernel, padding 1 and
    stride 2 gives 14x14 and skips only the last padding row and column (PyTorch's
    and ResNet's usual downsampling conv), whereas padding 0 drops input row 27.
    """
    return any(u > p for u, p in zip(explanation.uncovered, explanation.padding))


def tiny_vgg_sizes(image_size: int, kernel_size: int = 3, padding: int = 0,
                   strict: bool = True, stride: int = 1) -> list[tuple[str, int]]:
    """Spatial size after each stage of Tiny VGG, checking every slide.

    ``stride`` is the stride of each block's first convolution (conv_1_1 and
    conv_2_1, the block's downsampling conv as in ResNet); the second convolution
    of each block keeps stride 1 and the pools 2x2 / stride 2. On 28x28 with a 3x3
    kernel and padding 1, stride 2 goes 28 -> 14 -> 14 -> 7 -> 4 -> 4 -> 2.

    With ``strict`` (the default) a slide that leaves input pixels uncovered is
    refused (CNN Explainer's symmetric-slide lesson); a strided conv that covers
    every input pixel and skips only its last padding row/column is accepted (see
    :func:`drops_input_pixels`). With ``strict=False`` only an output below 1x1 is
    an error (the floor then drops border pixels, as PyTorch does silently).

    Returns
    -------
    list of (layer name, output size)
        e.g. ``[("conv_1_1", 62), ("conv_1_2", 60), ("max_pool_1", 30), ...]`` for 64.

    Raises
    ------
    ValueError
        A layer's output would be smaller than 1x1, or (``strict``) a kernel leaves
        input pixels uncovered; the message is
        :func:`numbacnn.shapes.explain_conv`'s, with the layer named.
    """
    size = image_size
    sizes = []
    plan = [("conv_1_1", kernel_size, stride, padding), ("conv_1_2", kernel_size, 1, padding),
            ("max_pool_1", TINY_VGG_POOL, TINY_VGG_POOL, 0),
            ("conv_2_1", kernel_size, stride, padding), ("conv_2_2", kernel_size, 1, padding),
            ("max_pool_2", TINY_VGG_POOL, TINY_VGG_POOL, 0)]
    for name, k, s, p in plan:
        explanation = explain_conv(size, k, s, p)
        fits = min(explanation.output_size) >= 1
        if not fits or (strict and drops_input_pixels(explanation)):
            stride_text = f", stride={stride}" if stride != 1 else ""
            raise ValueError(
                f"tiny_vgg(image_size={image_size}, kernel_size={kernel_size}, padding={padding}{stride_text}): "
                f"layer {name} gets a {size}x{size} input: {explanation.message}"
            )
        size = explanation.output_size[0]
        sizes.append((name, size))
    return sizes


def tiny_vgg_parameter_count(in_channels: int = 3, num_classes: int = 10, image_size: int = 64, filters: int = 10,
                             kernel_size: int = 3, padding: int = 0, stride: int = 1) -> int:
    """Trainable scalars :func:`tiny_vgg` would allocate, from the shapes alone
    (O(1): nothing is built), so callers can refuse a model that cannot fit in
    memory before trying (19,920 at the defaults).

    Raises ValueError as :func:`tiny_vgg_sizes` (``strict=False``) when a layer's
    output would be below 1x1.
    """
    final = tiny_vgg_sizes(image_size, kernel_size, padding, strict=False, stride=stride)[-1][1]
    taps = kernel_size * kernel_size
    convolutions = filters * (in_channels * taps + 1) + 3 * filters * (filters * taps + 1)
    return convolutions + num_classes * (filters * final * final + 1)


def tiny_vgg(in_channels: int = 3, num_classes: int = 10, image_size: int = 64, filters: int = 10,
             kernel_size: int = 3, padding: int = 0, dtype: Any = np.float32, device: str | None = None,
             seed: int | np.random.Generator | None = 0, strict: bool = True, stride: int = 1,
             batch_norm: bool = False, dropout: float = 0.0) -> Sequential:
    """CNN Explainer's Tiny VGG: (conv-relu-conv-relu-maxpool) x 2, flatten, linear.

    At the defaults the sizes go 64 -> 62 -> 60 -> 30 -> 28 -> 26 -> 13 and the model
    has 19,920 parameters. Names match this PyTorch model, so state dicts map 1:1::

        torch.nn.Sequential(OrderedDict(
            features=torch.nn.Sequential(conv, ReLU, conv, ReLU, MaxPool2d(2),
                                         conv, ReLU, conv, ReLU, MaxPool2d(2)),
            classifier=torch.nn.Sequential(Flatten(), Linear(filters*s*s, num_classes))))

    i.e. ``features.{0,2,5,7}.{weight,bias}`` and ``classifier.1.{weight,bias}``.

    Parameters
    ----------
    in_channels : int
        1 for Fashion-MNIST / MNIST, 3 for colour images.
    num_classes : int
    image_size : int
        Input height = width.
    filters : int
        Channels of every convolution.
    kernel_size, padding : int
        Of every convolution.
    dtype : float32 or float64
    device : str or None
        Where the parameters live (default: the default device).
    seed : int, Generator or None
        Seeds the PyTorch-style initialisation; the same seed gives the same weights.
    strict : bool
        When False, build a model whose kernels leave input pixels uncovered (its
        layers then warn with ``HyperparameterWarning`` on the first forward)
        instead of refusing it; a combination whose output is below 1x1 is refused
        either way. A strided conv that only skips its last padding row/column is
        accepted in both modes and does not warn for ``image_size``.
    stride : int
        Of each block's first convolution (``features.0`` and ``features.5``, the
        downsampling conv as in ResNet; default 1, CNN Explainer's); the second conv
        of each block keeps stride 1 and the 2x2 max pools stride 2. On 28x28
        Fashion-MNIST, 3x3 kernels with padding 1 and stride 2 go
        28 -> 14 -> 14 -> 7 -> 4 -> 4 -> 2 (250 features for the classifier
        instead of 490). Checkpoints store this rule (``STRIDE_RULE``): before it,
        the stride applied to all four convolutions.
    batch_norm : bool
        Insert ``BatchNorm2d(filters)`` after every convolution (before its ReLU):
        ``features`` then goes conv, bn, relu, conv, bn, relu, pool, ..., i.e.
        ``features.{0,3,7,10}`` are the convolutions and ``features.{1,4,8,11}`` the
        batch norms (weight, bias, running_mean, running_var, num_batches_tracked).
    dropout : float in [0, 1)
        When > 0, ``Dropout(dropout)`` before the classifier's Linear, which becomes
        ``classifier.2``. Its mask generator is seeded from ``seed``.

    Returns
    -------
    Sequential
        Input (N, in_channels, image_size, image_size) -> logits (N, num_classes).

    Raises
    ------
    ValueError
        The combination does not fit (output below 1x1) or a kernel leaves input
        pixels uncovered while ``strict`` (see :func:`tiny_vgg_sizes`).
    """
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                        ("image_size", image_size), ("filters", filters), ("kernel_size", kernel_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"tiny_vgg: {name} must be a positive int, got {value!r}")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"tiny_vgg: stride must be a positive int, got {stride!r}")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"tiny_vgg: padding must be an int >= 0, got {padding!r}")
    if not isinstance(batch_norm, (bool, np.bool_)):
        raise TypeError(f"tiny_vgg: batch_norm must be True or False, got {batch_norm!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)) or not 0 <= dropout < 1:
        raise ValueError(f"tiny_vgg: dropout must be a probability 0 <= p < 1, got {dropout!r}")
    sizes = tiny_vgg_sizes(image_size, kernel_size, padding, strict, stride)
    final = sizes[-1][1]
    rng = as_rng(seed)

    conv_inputs = {name: size for (name, _), size in zip(sizes, [image_size] + [s for _, s in sizes[:-1]])}

    def conv(cin: int, name: str) -> Conv2d:
        s = stride if name.endswith("_1") else 1  # each block's first conv downsamples
        layer = Conv2d(cin, filters, kernel_size, stride=s, padding=padding, dtype=dtype, device=device, rng=rng)
        if not drops_input_pixels(explain_conv(conv_inputs[name], kernel_size, s, padding)):
            # accepted above: skipping only the last padding row/column is no lesson to warn
            # about at this input size (other sizes are still checked on their first forward)
            layer._checked_sizes.add((conv_inputs[name], conv_inputs[name]))
        return layer

    def block(cin: int, name: str) -> list:
        # Conv -> (BatchNorm) -> ReLU; without batch norm exactly CNN Explainer's layers
        bn = [BatchNorm2d(filters, dtype=dtype, device=device)] if batch_norm else []
        return [conv(cin, name), *bn, ReLU()]

    features = Sequential(
        *block(in_channels, "conv_1_1"), *block(filters, "conv_1_2"), MaxPool2d(TINY_VGG_POOL),
        *block(filters, "conv_2_1"), *block(filters, "conv_2_2"), MaxPool2d(TINY_VGG_POOL),
    )
    linear = Linear(filters * final * final, num_classes, dtype=dtype, device=device, rng=rng)
    # the dropout generator is seeded from the same rng, after the weights (same weights as without it)
    drop = [Dropout(float(dropout), seed=np.random.default_rng(rng.integers(2**63)))] if dropout > 0 else []
    classifier = Sequential(Flatten(), *drop, linear)
    return Sequential(OrderedDict([("features", features), ("classifier", classifier)]))


MODELS = {"tiny_vgg": tiny_vgg}

__all__ = ["MODELS", "STRIDE_RULE", "drops_input_pixels", "tiny_vgg", "tiny_vgg_sizes"]
