"""Kernel backends, one sub-package per device, each with the same function names.

``kernels/cpu`` holds ``@njit(parallel=True, cache=True)`` loops; ``kernels/cuda``
holds ``@cuda.jit`` kernels and their launch configuration. Kernels never validate
and never allocate: ``numbacnn.functional`` does both, then calls them with
preallocated outputs first, inputs next, hyperparameters last.
"""

# Before any kernel compiles: a kernel compiled in this process runs the same code as
# the same kernel loaded from the disk cache (bit-identical first and later runs).
from numbacnn.kernels.linking import use_own_linked_copies  # noqa: E402

use_own_linked_copies()

# A damaged entry in the on-disk cache compiles again instead of stopping the run.
from numbacnn.kernels.disk_cache import treat_damaged_entries_as_misses  # noqa: E402

treat_damaged_entries_as_misses()
