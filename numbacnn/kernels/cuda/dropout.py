"""Dropout on CUDA: multiply by a precomputed mask (0 or 1 / (1 - p)), flat views.

The mask is drawn on the host from a seeded ``numpy.random.Generator`` (see
``numbacnn/functional/dropout.py``), so forward and backward are the same product
and the CPU and CUDA results agree bit for bit. Elementwise, one element per
thread per grid-stride step (as ``activation.py``).
"""

from __future__ import annotations

from numba import cuda

from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured

THREADS = 8 if SIMULATOR else 256
MAX_BLOCKS = 2 if SIMULATOR else 4096


@cuda.jit
def dropout_apply_kernel(out, x, mask):
    # out, x, mask (L,): flat views of the same length
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = x[i] * mask[i]


def dropout_apply(out, x, mask) -> None:
    """out = x * mask elementwise (the mask holds 0 or 1 / (1 - p))."""
    configured(dropout_apply_kernel, blocks_for(x.shape[0], THREADS, MAX_BLOCKS), THREADS)(out, x, mask)
