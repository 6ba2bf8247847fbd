"""Scalar helpers shared by the CPU and CUDA kernels.

Written once with ``@numba.jit`` so both ``@njit`` and ``@cuda.jit`` code can call
them (Numba compiles them for whichever target calls).
"""

import math

import numba


@numba.jit(nopython=True, inline="always")
def window_start(out_index, stride, pad):
    """First input index covered by output position ``out_index`` (may be < 0)."""
    return out_index * stride - pad


@numba.jit(nopython=True, inline="always")
def first_valid_output(pad, offset, stride):
    """Smallest output index o >= 0 with ``o*stride - pad + offset >= 0``.

    ``offset`` is the kernel tap's position inside the window (``k * dilation``).
    """
    need = pad - offset
    if need <= 0:
        return 0
    return (need + stride - 1) // stride


@numba.jit(nopython=True, inline="always")
def end_valid_output(in_size, pad, offset, stride, out_size):
    """One past the largest output index o with ``o*stride - pad + offset < in_size``."""
    limit = in_size + pad - offset  # need o*stride < limit
    if limit <= 0:
        return 0
    end = (limit + stride - 1) // stride
    return min(end, out_size)


@numba.jit(nopython=True, inline="always")
def is_new_max(value, best):
    """Max-pooling's comparison: strictly greater keeps the *first* maximum in
    row-major order; a NaN always wins and then stays (as in PyTorch), so a NaN in
    the window shows up in the output."""
    return value > best or math.isnan(value)
