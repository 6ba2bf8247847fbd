"""numbacnn: readable Numba kernels for convolutional networks, on CPU and CUDA.

Public surface::

    import numbacnn
    import numbacnn.functional as F

    numbacnn.set_default_device("auto")     # "cpu", "cuda" or "auto"
    x = numbacnn.to_device(images)          # NumPy -> default device
    y = F.conv2d(x, w, b, padding=1)        # runs where x lives
    numbacnn.to_host(y)                     # -> NumPy
"""

import os as _os

# Numba's OpenMP threading layer makes idle workers spin for a long time (libgomp's
# default) after each parallel loop. numbacnn launches many short parallel kernels per
# training step; on a machine where anything else runs, spinning workers steal the
# cores those kernels need, and one step took 30x longer (456 ms instead of 14 ms,
# measured on 2 cores with two busy processes). A short spin keeps the idle-machine
# speed and degrades gracefully under load. Set before Numba loads libgomp; a value
# the user set wins, and so does OMP_WAIT_POLICY (libgomp lets GOMP_SPINCOUNT
# override it, so setting ours would silently ignore the user's policy).
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from numbacnn import _environment  # noqa: E402  (before Numba is imported: its cache and thread settings)

_environment.prepare_numba()

from numbacnn._version import __version__  # noqa: E402
from numbacnn.device import (  # noqa: E402
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
from numbacnn.shapes import HyperparameterWarning  # noqa: E402
from numbacnn import functional, models, nn, optim  # noqa: E402

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
