"""Numba's CUDA simulator made fast and race-free, in this process: called by
conftest.py for the test processes, and by ``simulator_site/sitecustomize.py`` for
child processes a test starts under the simulator (benchmarks/gpu_check.sh --tiny).

- The simulator runs each CUDA thread as a Python thread and implements
  ``syncthreads()`` by polling; with the default 5 ms GIL switch interval every
  barrier costs milliseconds. A short interval makes the CUDA tests ~10x faster
  (gpu_check.sh --tiny's Python part: 70 s -> 13 s).
- numba-cuda's simulator makes a block's shared array on the first call of
  ``cuda.shared.array`` by any of its threads, in ``FakeCUDAShared.array``, with no lock:
  https://github.com/NVIDIA/numba-cuda/blob/v0.30.4/numba_cuda/numba/cuda/simulator/kernelapi.py#L112-L136
  Two threads of one block that both find no array there each make one, and the
  first keeps writing to an array no other thread reads (seen once as a wrong first
  block in test_conv2d_cuda_matches_cpu; the short switch interval makes such a
  switch likely). :func:`locked_shared_array` is the same method with the lookup
  under a lock.

Only for ``NUMBA_ENABLE_CUDASIM=1`` (the caller checks): it imports the simulator.
"""

import sys
import threading
import traceback

from numba.cuda.simulator import kernelapi

SWITCH_INTERVAL_S = 1e-4

_shared_array_lock = threading.Lock()
unlocked_shared_array = getattr(kernelapi.FakeCUDAShared.array, "unlocked", kernelapi.FakeCUDAShared.array)


def locked_shared_array(self, shape, dtype, alignment=None):
    if alignment is not None or shape == 0:  # errors and dynamic shared memory: unchanged
        return unlocked_shared_array(self, shape, dtype, alignment)
    if isinstance(dtype, kernelapi.types.Type):
        dtype = kernelapi.numpy_support.as_dtype(dtype)
    # arrays are told apart by the calling source line, as in the original
    caller = traceback.extract_stack(sys._getframe())[-2][0:2]
    with _shared_array_lock:
        result = self._allocations.get(caller)
        if result is None:
            result = kernelapi.np.empty(shape, dtype)
            self._allocations[caller] = result
    return result


locked_shared_array.unlocked = unlocked_shared_array


def prepare() -> None:
    """The short switch interval and the locked shared arrays; idempotent."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if not hasattr(kernelapi.FakeCUDAShared.array, "unlocked"):  # never a lock around a lock
        kernelapi.FakeCUDAShared.array = locked_shared_array
