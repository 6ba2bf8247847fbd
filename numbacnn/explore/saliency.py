"""Saliency: the gradient of every class score with respect to the input image,
through numbacnn's own backward kernels (``Module.backward``).

The model runs as in eval mode (batch norm with its running statistics, dropout
off), so the gradient is that of the logits the page shows. Conv2d, ReLU,
MaxPool2d, Flatten and Linear behave the same in training and eval mode; they are
put in training mode for one forward only so they keep their input for
``backward``. BatchNorm2d's layer backward is the training-mode gradient (batch
statistics), so its eval-mode gradient comes from ``functional.batch_norm_backward``
with ``training=False``; an eval-mode Dropout is the identity both ways.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numbacnn import functional as F
from numbacnn.device import to_device, to_host
from numbacnn.nn import BatchNorm2d, Dropout, Module, leaf_layers


def input_gradients(model: Module, x: Any, device: str = "cpu") -> np.ndarray:
    """d logit_k / d x for every class k, for one normalised image.

    Parameters
    ----------
    model : Module
        A (nested) Sequential whose last layer gives the K logits.
    x : float array (1, C, H, W)
        The normalised image (what :func:`numbacnn.explore.collect.collect_image` keeps).

    Returns
    -------
    np.ndarray (K, C, H, W), the model's dtype
        Row k is the gradient of logit k. The K gradients come from one forward and
        one backward over a batch of K copies of the image, seeded with the identity.
    """
    x = np.asarray(to_host(x))
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"input_gradients: x must be one image (1, C, H, W), got shape {x.shape}")
    layers = [layer for _, layer in leaf_layers(model)]
    model.eval()
    # the class count is the width of the logits; one cheap eval forward finds it
    probe = to_device(x, device)
    for layer in layers:
        probe = layer.forward(probe)
    classes = int(probe.shape[-1])
    batch = to_device(np.ascontiguousarray(np.repeat(x, classes, axis=0)), device)
    inputs = []
    try:
        for layer in layers:
            eval_only = isinstance(layer, (BatchNorm2d, Dropout))
            layer.train(not eval_only)  # keep the input for backward (see the module docstring)
            inputs.append(batch)
            batch = layer.forward(batch)
        grad = to_device(np.eye(classes, dtype=x.dtype), device)
        for layer, layer_input in zip(reversed(layers), reversed(inputs)):
            if isinstance(layer, Dropout):
                continue
            if isinstance(layer, BatchNorm2d):
                grad, _, _ = F.batch_norm_backward(
                    grad, layer_input, layer.running_mean, layer.running_var,
                    None if layer.weight is None else layer.weight.data, training=False, eps=layer.eps)
                continue
            grad = layer.backward(grad)
    finally:
        model.eval()
        for parameter in model.parameters():
            parameter.zero_grad()  # the parameter gradients the backward accumulated are not wanted
    return np.asarray(to_host(grad)).copy()


def saliency_bytes(gradients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The page's saliency maps: per class, the largest |gradient| over channels,
    scaled to 0..255 by that class's own maximum.

    Returns
    -------
    (uint8 array (K, H, W), float64 array (K,))
        The quantised maps and each class's maximum |gradient| (the 255 of its scale).
    """
    magnitude = np.abs(np.asarray(gradients, dtype=np.float64)).max(axis=1)
    peaks = magnitude.reshape(magnitude.shape[0], -1).max(axis=1)
    scale = np.where(peaks > 0, 255.0 / np.where(peaks > 0, peaks, 1.0), 0.0)
    quantised = np.rint(magnitude * scale[:, None, None]).astype(np.uint8)
    return quantised, peaks


__all__ = ["input_gradients", "saliency_bytes"]
