"""Device allocation for the CUDA backend: ``empty`` and ``zeros``.

``zeros`` fills on the device with a kernel: no host array is made or copied.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for

# fill: a grid-stride loop over the flat array
FILL_THREADS = 8 if SIMULATOR else 256
FILL_MAX_BLOCKS = 2 if SIMULATOR else 1024


@cuda.jit
def fill_kernel(out, value):
    # out (n,): a flat view; value: a scalar cast to out's dtype
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = value


def empty(shape: tuple, dtype: np.dtype):
    """Uninitialised C-contiguous device array."""
    return cuda.device_array(tuple(shape), dtype=np.dtype(dtype))


def zeros(shape: tuple, dtype: np.dtype):
    """Zero-filled C-contiguous device array (filled on the device)."""
    out = cuda.device_array(tuple(shape), dtype=np.dtype(dtype))
    if out.size:
        flat = out.reshape(-1)
        fill_kernel[blocks_for(flat.shape[0], FILL_THREADS, FILL_MAX_BLOCKS), FILL_THREADS](flat, 0)
    return out
