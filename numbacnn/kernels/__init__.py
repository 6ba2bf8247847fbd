"""Kernel backends, one sub-package per device, each with the same function names.

``kernels/cpu`` holds ``@njit(parallel=True, cache=True)`` loops; ``kernels/cuda``
holds ``@cuda.jit`` kernels and their launch configuration. Kernels never validate
and never allocate: ``numbacnn.functional`` does both, then calls them with
preallocated outputs first, inputs next, hyperparameters last.
"""
