"""Layers and containers: ``Module``, ``Parameter``, ``Sequential``, ``Conv2d``,
``ReLU``, ``MaxPool2d``, ``Flatten``, ``Linear`` and ``summary``.

Example
-------
>>> import numpy as np
>>> from numbacnn import nn
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3, rng=0), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10, rng=1))
>>> y = model(np.zeros((2, 1, 8, 8), np.float32))       # forward, caches for backward
>>> gx = model.backward(np.ones_like(y))                 # input gradient; params' .grad filled
"""

from numbacnn.nn.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, as_rng
from numbacnn.nn.module import Module, Parameter
from numbacnn.nn.sequential import Sequential
from numbacnn.nn.summary import leaf_layers, summary

__all__ = ["Conv2d", "Flatten", "Linear", "MaxPool2d", "Module", "Parameter", "ReLU", "Sequential",
           "as_rng", "leaf_layers", "summary"]
from numbacnn.nn.activation import LeakyReLU  # noqa: E402
from numbacnn.nn.dropout import Dropout  # noqa: E402
from numbacnn.nn.normalization import BatchNorm2d  # noqa: E402
from numbacnn.nn.pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d  # noqa: E402
__all__ += ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "BatchNorm2d", "Dropout", "LeakyReLU"]  # noqa: E305
