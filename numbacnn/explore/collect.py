"""Every number the explore page shows for one image, computed by numbacnn's kernels.

The page draws every layer's maps. To keep it small, a map that the page can
rebuild *exactly* from an earlier one is not embedded: a ReLU (``x > 0 ? x : 0``), a
max pool (the largest value of each window) and an eval-mode batch norm
(``x * scale + shift`` per channel, in float64 as numbacnn's kernel does, then rounded
to the maps' dtype) right after a stored or rebuilt map. :func:`derivable` reproduces the page's rule
in NumPy and the page data embeds a layer only when that rule does not give the
kernel's output bit for bit for every image (so the page never shows a number the
kernels did not compute).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from numbacnn.data import Normalizer
from numbacnn.device import to_device, to_host
from numbacnn.nn import BatchNorm2d, Conv2d, MaxPool2d, Module, ReLU, leaf_layers
from numbacnn.report.activations import MAP_LAYERS, layer_activations, softmax
from numbacnn.report.layers import describe_layers
from numbacnn.shapes import same_padding

# How the page rebuilds a layer's maps from its input layer's maps (see the module docstring).
DERIVE_RELU, DERIVE_MAX_POOL, DERIVE_BATCH_NORM = "relu", "max_pool", "batch_norm"
# Layers whose output the page can rebuild from, besides the drawn ones.
SOURCE_LAYERS = MAP_LAYERS + (BatchNorm2d,)


@dataclass
class PageLayer:
    """One leaf layer as the page shows it.

    Attributes
    ----------
    index : int
        Position among the model's leaf layers (forward order).
    name, explainer_name, kind : str
        ``features.0``, ``conv_1_1``, ``Conv2d`` (as ``numbacnn explain model``).
    output_shape : tuple of int
        (C, H, W) or (features,), batch axis removed.
    parameters : int
        Trainable scalars.
    symmetric : bool
        False when its kernel leaves border rows/columns uncovered.
    has_maps : bool
        Conv2d, BatchNorm2d, ReLU, MaxPool2d: spatial maps the overview draws.
    input_index : int
        The leaf layer whose output this layer reads; -1 for the image.
    hyper : dict
        ``kernel``, ``stride``, ``padding``, ``dilation`` (each (h, w)) for Conv2d / MaxPool2d.
    derive : str or None
        ``"relu"`` / ``"max_pool"`` / ``"batch_norm"`` when the page may rebuild the
        maps from the input layer's; decided by
        :func:`numbacnn.explore.page.build_page_data` after checking every image.
    affine : dict
        BatchNorm2d only: ``scale`` and ``shift`` (float64, (C,)), the per-channel
        ``x * scale + shift`` its eval-mode kernel applies.
    """

    index: int
    name: str
    explainer_name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int
    symmetric: bool
    has_maps: bool
    input_index: int
    hyper: dict[str, tuple[int, int]] = field(default_factory=dict)
    derive: str | None = None
    affine: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ImageRecord:
    """One image through the model.

    Attributes
    ----------
    pixels : uint8 array (C, H, W)
        The image as the model's input size (before normalisation).
    input : float array (C, H, W)
        The normalised input the first convolution reads (the model's dtype).
    maps : dict leaf index -> float array (C, H, W)
        Every Conv2d / ReLU / MaxPool2d output, from :func:`layer_activations`.
    logits : float array (K,)
    probabilities : float64 array (K,)
    label : int or None
        The true class when known (test-set images).
    source : str
        Where the image came from (file name, or ``test image 17``).
    """

    pixels: np.ndarray
    input: np.ndarray
    maps: dict[int, np.ndarray]
    logits: np.ndarray
    probabilities: np.ndarray
    label: int | None
    source: str
    saliency: np.ndarray | None = None  # (K, C, H, W) input gradients, filled by explore.run


def describe_page_layers(model: Module, input_shape: tuple[int, int, int]) -> list[PageLayer]:
    """The model's leaf layers for a (C, H, W) input, with what the page needs to draw them."""
    described = describe_layers(model, input_shape)
    layers = [layer for _, layer in leaf_layers(model)]
    page_layers = []
    for index, (layer, d) in enumerate(zip(layers, described)):
        hyper = {}
        if isinstance(layer, (Conv2d, MaxPool2d)):
            hyper = {key: tuple(int(v) for v in getattr(layer, attr)) for key, attr in
                     (("kernel", "kernel_size"), ("stride", "stride"), ("dilation", "dilation"))}
            hyper["padding"] = _top_left_padding(layer)
        derive, affine = None, {}
        previous = layers[index - 1] if index else None
        if isinstance(layer, ReLU) and isinstance(previous, SOURCE_LAYERS):
            derive = DERIVE_RELU
        elif (isinstance(layer, MaxPool2d) and isinstance(previous, SOURCE_LAYERS)
              and hyper["dilation"] == (1, 1)):
            derive = DERIVE_MAX_POOL
        if isinstance(layer, BatchNorm2d) and layer.track_running_stats:
            affine = batch_norm_affine(layer)  # the elementary view shows it; the rebuild uses it
            derive = DERIVE_BATCH_NORM if isinstance(previous, SOURCE_LAYERS) else None
        page_layers.append(PageLayer(
            index=index, name=d.name, explainer_name=d.explainer_name, kind=d.kind,
            output_shape=tuple(int(s) for s in d.output_shape[1:]), parameters=int(d.parameters),
            symmetric=bool(d.symmetric), has_maps=isinstance(layer, SOURCE_LAYERS), input_index=index - 1,
            hyper=hyper, derive=derive, affine=affine))
    return page_layers


def batch_norm_affine(layer: BatchNorm2d) -> dict[str, np.ndarray]:
    """The eval-mode batch norm as ``x * scale + shift`` per channel, in float64 exactly as
    numbacnn's CPU kernel forms them (``kernels/cpu/norm.py``: invstd from the running
    variance, scale = invstd * weight, shift = bias - mean * scale)."""
    channels = layer.num_features
    mean = np.asarray(to_host(layer.running_mean), dtype=np.float64)
    var = np.asarray(to_host(layer.running_var), dtype=np.float64)
    weight = np.ones(channels) if layer.weight is None else np.asarray(to_host(layer.weight.data), np.float64)
    bias = np.zeros(channels) if layer.bias is None else np.asarray(to_host(layer.bias.data), np.float64)
    invstd = 1.0 / (var + layer.eps) ** 0.5
    scale = invstd * weight
    return {"scale": scale, "shift": bias - mean * scale}


def _top_left_padding(layer: Conv2d | MaxPool2d) -> tuple[int, int]:
    """The (top, left) zero padding of a layer; Conv2d's ``"same"`` / ``"valid"`` resolved
    as the functional ops do (the extra row/column of an even "same" span goes after)."""
    padding = layer.padding
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        return tuple(same_padding(k, d)[0] for k, d in zip(layer.kernel_size, layer.dilation))
    return tuple(int(p) for p in padding)


def _padded_for_pool(x: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)


def derived_maps(rule: str, source: np.ndarray, hyper: dict[str, tuple[int, int]],
                 output_shape: tuple[int, ...], affine: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The page's rebuild of a layer's maps from its input maps (C, H, W), in NumPy.

    ``relu``: ``x > 0 ? x : 0``; ``max_pool``: the largest value of each window
    (padding never wins). The page's JavaScript (``static/overview.js``,
    ``deriveMaps``) does the same in the same dtype.
    """
    if rule == DERIVE_RELU:
        return np.where(source > 0, source, np.zeros((), source.dtype))
    if rule == DERIVE_BATCH_NORM:
        rebuilt = (source.astype(np.float64) * affine["scale"][:, None, None] + affine["shift"][:, None, None])
        return rebuilt.astype(source.dtype)
    if rule == DERIVE_MAX_POOL:
        (kh, kw), (sh, sw) = hyper["kernel"], hyper["stride"]
        padded = _padded_for_pool(source, hyper["padding"])
        windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))
        _, oh, ow = output_shape
        return windows[:, ::sh, ::sw][:, :oh, :ow].max(axis=(3, 4)).astype(source.dtype)
    raise ValueError(f"derived_maps: unknown rule {rule!r}")


def derivable(layer: PageLayer, records: list[ImageRecord]) -> bool:
    """True when the page's rule rebuilds ``layer``'s maps bit for bit from its
    input layer's maps for every image."""
    if layer.derive is None:
        return False
    for record in records:
        source = record.maps.get(layer.input_index)
        if source is None:
            return False
        rebuilt = derived_maps(layer.derive, source, layer.hyper, layer.output_shape, layer.affine)
        kernel = record.maps[layer.index]
        if rebuilt.shape != kernel.shape or rebuilt.tobytes() != kernel.tobytes():
            return False
    return True


def collect_image(model: Module, pixels: np.ndarray, normalizer: Normalizer, dtype: Any,
                  label: int | None = None, source: str = "", device: str = "cpu") -> ImageRecord:
    """Run one uint8 (C, H, W) image through ``model`` layer by layer (eval mode) and
    keep every map, the logits and the probabilities (see :class:`ImageRecord`)."""
    x = normalizer(pixels[None], dtype=dtype)
    activations, logits = layer_activations(model, to_device(x, device))
    map_indices = [i for i, (_, layer) in enumerate(leaf_layers(model)) if isinstance(layer, MAP_LAYERS)]
    maps = {index: activation.maps for index, activation in zip(map_indices, activations)}
    for index, (_, layer) in enumerate(leaf_layers(model)):
        if isinstance(layer, BatchNorm2d) and index - 1 in maps:
            # layer_activations keeps Conv2d / ReLU / MaxPool2d outputs; the page draws this one too
            maps[index] = np.asarray(to_host(layer.forward(to_device(maps[index - 1][None], device))))[0]
    return ImageRecord(pixels=np.ascontiguousarray(pixels, dtype=np.uint8), input=np.asarray(to_host(x))[0],
                       maps=maps, logits=logits, probabilities=softmax(logits), label=label, source=source)


def conv_parameters(model: Module) -> dict[int, dict[str, np.ndarray]]:
    """Weights (F, C/groups, KH, KW) and bias (F,) of every Conv2d, by leaf index, on the
    host (a conv without bias gets zeros: the elementary view adds "bias 0")."""
    found = {}
    for index, (_, layer) in enumerate(leaf_layers(model)):
        if isinstance(layer, Conv2d):
            weight = np.asarray(to_host(layer.weight.data))
            bias = (np.asarray(to_host(layer.bias.data)) if layer.bias is not None
                    else np.zeros(weight.shape[0], weight.dtype))
            found[index] = {"weight": weight, "bias": bias}
    return found


__all__ = ["DERIVE_BATCH_NORM", "DERIVE_MAX_POOL", "DERIVE_RELU", "batch_norm_affine", "ImageRecord", "PageLayer", "collect_image", "conv_parameters",
           "derivable", "derived_maps", "describe_page_layers"]
