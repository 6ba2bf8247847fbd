"""Block-wide reductions in shared memory, in a fixed order (deterministic).

Each thread first writes its partial result to ``partial[thread]``; the tree then
halves the active threads at every step, so thread 0 ends up holding the total.
The order of additions depends only on the block size, never on timing, so the
result is bitwise identical from run to run (no atomics).

Every thread of the block must call these functions (they contain
``cuda.syncthreads()``); ``partial`` is a shared array whose length is a power of two.
"""

from numba import cuda

from numbacnn.kernels.common import is_new_max


@cuda.jit(device=True)
def block_sum(partial, thread):
    """partial[0] = sum of partial[:]; partial is (threads_per_block,) in shared memory."""
    cuda.syncthreads()
    stride = partial.shape[0] // 2
    while stride > 0:
        if thread < stride:
            partial[thread] += partial[thread + stride]
        cuda.syncthreads()
        stride //= 2


@cuda.jit(device=True)
def block_max(partial, thread):
    """partial[0] = max of partial[:], where a NaN wins (``is_new_max``), as on the CPU."""
    cuda.syncthreads()
    stride = partial.shape[0] // 2
    while stride > 0:
        if thread < stride:
            other = partial[thread + stride]
            if is_new_max(other, partial[thread]):
                partial[thread] = other
        cuda.syncthreads()
        stride //= 2
