"""Model builders: ``tiny_vgg``, the network CNN Explainer visualises."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from numbacnn.nn import BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, as_rng
from numbacnn.shapes import explain_conv

TINY_VGG_POOL = 2  # CNN Explainer's max pools are 2x2 with stride 2


def tiny_vgg_sizes(image_size: int, kernel_size: int = 3, padding: int = 0,
                   strict: bool = True, stride: int = 1) -> list[tuple[str, int]]:
    """Spatial size after each stage of Tiny VGG, checking every slide.

    With ``strict=False`` an asymmetric slide is allowed (the floor drops border
    pixels, as PyTorch does silently); only an output below 1x1 is an error.
    ``stride`` is every convolution's (the pools keep 2x2 / stride 2): each conv
    then divides the size by about ``stride``, so six halvings (stride 2) need an
    input of at least 64 pixels at Tiny VGG's depth.

    Returns
    -------
    list of (layer name, output size)
        e.g. ``[("conv_1_1", 62), ("conv_1_2", 60), ("max_pool_1", 30), ...]`` for 64.

    Raises
    ------
    ValueError
        A layer's output would be smaller than 1x1, or a kernel does not slide
        symmetrically over its input (border pixels silently dropped); the message
        is :func:`numbacnn.shapes.explain_conv`'s, with the layer named.
    """
    size = image_size
    sizes = []
    plan = [("conv_1_1", kernel_size, stride, padding), ("conv_1_2", kernel_size, stride, padding),
            ("max_pool_1", TINY_VGG_POOL, TINY_VGG_POOL, 0),
            ("conv_2_1", kernel_size, stride, padding), ("conv_2_2", kernel_size, stride, padding),
            ("max_pool_2", TINY_VGG_POOL, TINY_VGG_POOL, 0)]
    for name, k, s, p in plan:
        explanation = explain_conv(size, k, s, p)
        fits = min(explanation.output_size) >= 1
        if not fits or (strict and not explanation.symmetric):
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
        When False, build a model whose kernels slide asymmetrically (its layers
        then warn with ``HyperparameterWarning`` on the first forward) instead of
        refusing it; a combination whose output is below 1x1 is refused either way.
    stride : int
        Of every convolution (default 1, CNN Explainer's); the 2x2 max pools keep
        stride 2. A larger stride shrinks every layer faster: on 28x28 Fashion-MNIST
        stride 2 leaves nothing for the second block's pool (refused as impossible).
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
        The combination does not fit (output below 1x1) or a kernel does not slide
        symmetrically while ``strict`` (see :func:`tiny_vgg_sizes`).
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
    final = tiny_vgg_sizes(image_size, kernel_size, padding, strict, stride)[-1][1]
    rng = as_rng(seed)

    def conv(cin: int) -> Conv2d:
        return Conv2d(cin, filters, kernel_size, stride=stride, padding=padding, dtype=dtype, device=device,
                      rng=rng)

    def block(cin: int) -> list:
        # Conv -> (BatchNorm) -> ReLU; without batch norm exactly CNN Explainer's layers
        bn = [BatchNorm2d(filters, dtype=dtype, device=device)] if batch_norm else []
        return [conv(cin), *bn, ReLU()]

    features = Sequential(
        *block(in_channels), *block(filters), MaxPool2d(TINY_VGG_POOL),
        *block(filters), *block(filters), MaxPool2d(TINY_VGG_POOL),
    )
    linear = Linear(filters * final * final, num_classes, dtype=dtype, device=device, rng=rng)
    # the dropout generator is seeded from the same rng, after the weights (same weights as without it)
    drop = [Dropout(float(dropout), seed=np.random.default_rng(rng.integers(2**63)))] if dropout > 0 else []
    classifier = Sequential(Flatten(), *drop, linear)
    return Sequential(OrderedDict([("features", features), ("classifier", classifier)]))


MODELS = {"tiny_vgg": tiny_vgg}

__all__ = ["MODELS", "tiny_vgg", "tiny_vgg_sizes"]
