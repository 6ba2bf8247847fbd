"""numbacnn: readable Numba kernels for convolutional networks, on CPU and CUDA.

Public surface::

    import numbacnn
    import numbacnn.functional as F

    numbacnn.set_default_device("auto")     # "cpu", "cuda" or "auto"
    x = numbacnn.to_device(images)          # NumPy -> default device
    y = F.conv2d(x, w, b, padding=1)        # runs where x lives
    numbacnn.to_host(y)                     # -> NumPy
"""

from numbacnn._version import __version__
from numbacnn.device import (
    DeviceError,
    cuda_available,
    device,
    device_of,
    get_default_device,
    set_default_device,
    synchronize,
    to_device,
    to_host,
)
from numbacnn.shapes import HyperparameterWarning
from numbacnn import functional, models, nn, optim

__all__ = [
    "__version__",
    "DeviceError",
    "HyperparameterWarning",
    "cuda_available",
    "device",
    "device_of",
    "functional",
    "models",
    "nn",
    "optim",
    "get_default_device",
    "set_default_device",
    "synchronize",
    "to_device",
    "to_host",
]
