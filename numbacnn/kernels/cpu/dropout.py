"""Dropout on the CPU: multiply by a precomputed mask (0 or 1 / (1 - p)), flat views.

The mask is drawn on the host from a seeded ``numpy.random.Generator`` (see
``numbacnn/functional/dropout.py``), so forward and backward are the same product.
"""

from numba import njit, prange


@njit(parallel=True, cache=True)
def dropout_apply(out, x, mask):
    """out = x * mask elementwise; out, x, mask are 1-D of the same length."""
    for i in prange(x.shape[0]):
        out[i] = x[i] * mask[i]
