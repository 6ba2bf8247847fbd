"""Activations: one image through a model, one leaf layer at a time, keeping every
Conv2d / ReLU / MaxPool2d output (what the report draws), and the softmax of the
logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from numbacnn.device import to_host
from numbacnn.nn import Conv2d, MaxPool2d, Module, ReLU, leaf_layers
from numbacnn.report.layers import explainer_names

# Layers whose outputs are spatial maps worth drawing, as in CNN Explainer's overview.
MAP_LAYERS = (Conv2d, ReLU, MaxPool2d)


@dataclass
class LayerActivation:
    """One layer's output for one image.

    Attributes
    ----------
    name, explainer_name, kind : str
        As in :class:`LayerDescription`.
    maps : float array (C, H, W)
        The layer's output for the image (batch axis removed), on the host.
    """

    name: str
    explainer_name: str
    kind: str
    maps: np.ndarray


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed stably in float64."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def layer_activations(model: Module, x: Any) -> tuple[list[LayerActivation], np.ndarray]:
    """Run ``model`` on a batch of one, one leaf layer at a time, in eval mode.

    Parameters
    ----------
    model : Module
        A (nested) Sequential.
    x : array (1, C, H, W)
        The normalised image, on the model's device.

    Returns
    -------
    (list of LayerActivation, logits)
        Every Conv2d / ReLU / MaxPool2d output (host arrays), and the final output
        as a host array of shape (classes,).
    """
    if len(x.shape) != 4 or x.shape[0] != 1:
        raise ValueError(f"layer_activations: x must be one image (1, C, H, W), got shape {tuple(x.shape)}")
    model.eval()  # nothing is cached for a backward pass that will never come
    layers = leaf_layers(model)
    names = explainer_names([layer for _, layer in layers])
    recorded = []
    for (name, layer), explainer_name in zip(layers, names):
        x = layer.forward(x)
        if isinstance(layer, MAP_LAYERS):
            recorded.append(LayerActivation(name, explainer_name, type(layer).__name__, np.asarray(to_host(x))[0]))
    return recorded, np.asarray(to_host(x)).reshape(-1)


__all__ = ["LayerActivation", "MAP_LAYERS", "layer_activations", "softmax"]
