"""Device allocation for the CUDA backend: ``empty``, ``zeros`` and the caching pool.

Every device array numbacnn makes goes through a :class:`DevicePool` (one per CUDA
context on a GPU, ``POOL`` in the simulator):
a block freed by Python (the last view of an array is collected) goes back to a
free list keyed by its rounded size, and the next request of that size gets it
back instead of a new ``cudaMalloc``. A training step asks for the same sizes
every time, so after the first step it allocates nothing.

- On a GPU the pool sits under Numba through numba-cuda's External Memory
  Management (EMM) plugin interface (:class:`PooledMemoryManager`, installed when
  this backend is imported): every ``cuda.device_array`` and ``cuda.to_device``
  then draws from it, numbacnn's own outputs and the uploaded batches alike.
  Why a pool of our own rather than RMM's or CuPy's: no extra dependency (both
  are large CUDA packages), and numbacnn needs only this (one stream, sizes that
  repeat exactly). Set ``NUMBACNN_CUDA_POOL=0`` (or Numba's
  ``NUMBA_CUDA_MEMORY_MANAGER``) to keep Numba's own allocator.
- Numba's simulator has no EMM, so there ``empty`` takes its host buffers from the
  same pool class; this is what lets a simulator test count allocations.

Reusing a block at once is safe because numbacnn queues every kernel and copy on
the default stream: work that still reads the old array runs before work that
writes the new one (the rule PyTorch's caching allocator follows per stream).

``zeros`` fills on the device with a kernel: no host array is made or copied.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import defaultdict
from typing import Any, Callable

import numpy as np
from numba import cuda

from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured

# fill: a grid-stride loop over the flat array
FILL_THREADS = 8 if SIMULATOR else 256
FILL_MAX_BLOCKS = 2 if SIMULATOR else 1024

# block sizes are rounded up to this many bytes (cudaMalloc's own alignment is 256),
# so arrays whose sizes differ by a few elements share a free list
POOL_ROUNDING = 512
CUDA_ERROR_OUT_OF_MEMORY = 2  # CUresult of a failed cuMemAlloc


class DevicePool:
    """A caching allocator: free lists of blocks keyed by rounded size.

    Parameters
    ----------
    raw_alloc : callable(nbytes) -> block
        Makes a new block (``cudaMalloc`` on a GPU, a host buffer in the simulator).
    raw_free : callable(block) -> None
        Gives a block back for good (``empty_cache``, or when ``raw_alloc`` ran out
        of memory and is retried after emptying the cache).

    Attributes
    ----------
    allocations : int
        Blocks made by ``raw_alloc`` (each one a ``cudaMalloc`` on a GPU).
    reuses : int
        Requests served from a free list.
    bytes_in_use, bytes_cached : int
        Bytes held by live arrays / kept in the free lists.
    """

    def __init__(self, raw_alloc: Callable[[int], Any], raw_free: Callable[[Any], None]) -> None:
        self._raw_alloc = raw_alloc
        self._raw_free = raw_free
        self._free: dict[int, list] = defaultdict(list)
        # a re-entrant lock: a block can come back (a finalizer run by the garbage
        # collector) in the middle of an acquire on the same thread
        self._lock = threading.RLock()
        self.allocations = 0
        self.reuses = 0
        self.bytes_in_use = 0
        self.bytes_cached = 0
        self.generation = 0  # bumped by reset()

    @staticmethod
    def rounded(nbytes: int) -> int:
        """Size of the block that serves a request of ``nbytes`` (at least one rounding unit)."""
        return max(1, -(-int(nbytes) // POOL_ROUNDING)) * POOL_ROUNDING

    def acquire(self, nbytes: int) -> tuple[Any, int]:
        """A block of at least ``nbytes`` bytes and its size; reused when one is free."""
        size = self.rounded(nbytes)
        with self._lock:
            free = self._free.get(size)
            if free:
                block = free.pop()
                self.reuses += 1
                self.bytes_cached -= size
                self.bytes_in_use += size
                return block, size
        try:
            block = self._raw_alloc(size)
        except MemoryError:
            raise
        except Exception as exc:  # CUDA out of memory: give the cached blocks back and retry once
            code = getattr(exc, "code", None)  # numba's CudaAPIError carries the CUresult
            if not ((code is not None and int(code) == CUDA_ERROR_OUT_OF_MEMORY) or "OUT_OF_MEMORY" in str(exc)):
                raise
            self.empty_cache()
            block = self._raw_alloc(size)
        with self._lock:
            self.allocations += 1
            self.bytes_in_use += size
        return block, size

    def release(self, block: Any, size: int, generation: int | None = None) -> None:
        """Put a block (from :meth:`acquire`) back on its free list. A block acquired
        before the last :meth:`reset` (``generation`` older than the pool's) is only
        forgotten: its memory went with the context that owned it."""
        with self._lock:
            self.bytes_in_use -= size
            if generation is not None and generation != self.generation:
                return
            self._free[size].append(block)
            self.bytes_cached += size

    def reset(self) -> None:
        """The context is being reset: free the cached blocks and forget those in use."""
        self.empty_cache()
        with self._lock:
            self.generation += 1
            self.bytes_in_use = 0

    def empty_cache(self) -> None:
        """Give every cached (free) block back to the device."""
        with self._lock:
            blocks = [b for free in self._free.values() for b in free]
            self._free.clear()
            self.bytes_cached = 0
        for block in blocks:
            self._raw_free(block)

    def stats(self) -> dict[str, int]:
        """``allocations``, ``reuses``, ``bytes_in_use``, ``bytes_cached`` as a dict."""
        with self._lock:
            return {"allocations": self.allocations, "reuses": self.reuses,
                    "bytes_in_use": self.bytes_in_use, "bytes_cached": self.bytes_cached}


if SIMULATOR:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    POOL = DevicePool(lambda nbytes: np.empty(nbytes, np.uint8), lambda block: None)

    def _pooled_array(shape: tuple, dtype: np.dtype):
        # The block goes back to the pool when the last view of the array dies. NumPy
        # points every view (reshape, slice) at the nearest base that owns its data or
        # has another type, so each array gets a fresh view of the block of its own type
        # (_Lease): every later view keeps that lease alive, and the lease's finalizer
        # returns the block once none is left.
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        block, size = POOL.acquire(nbytes)
        lease = block.view(_Lease)
        weakref.finalize(lease, POOL.release, block, size)
        flat = np.asarray(lease[:nbytes]).view(dtype)
        return FakeCUDAArray(flat.reshape(shape))

    class _Lease(np.ndarray):
        """A view of a pool block that marks one array's use of it (see _pooled_array)."""

    POOL_ENABLED = True
else:
    from numba.cuda import GetIpcHandleMixin, HostOnlyCUDAMemoryManager, MemoryInfo, MemoryPointer
    from numba.cuda.cudadrv.driver import driver

    _MANAGERS: "weakref.WeakSet" = weakref.WeakSet()  # for pool_stats()

    class PooledMemoryManager(GetIpcHandleMixin, HostOnlyCUDAMemoryManager):
        """numba-cuda EMM plugin whose device allocations come from a :class:`DevicePool`.

        One pool per context (a pointer belongs to one device). Host (pinned, mapped)
        allocations stay with ``HostOnlyCUDAMemoryManager``. Shaped after the plugin
        example in Numba's EMM documentation
        (https://numba.readthedocs.io/en/stable/cuda/external-memory.html).
        """

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.pool = DevicePool(lambda nbytes: driver.cuMemAlloc(nbytes), lambda block: driver.cuMemFree(block))
            _MANAGERS.add(self)

        def memalloc(self, size: int):
            pool = self.pool
            block, rounded = pool.acquire(size)
            generation = pool.generation

            def release() -> None:  # called when the last array using this pointer is collected
                pool.release(block, rounded, generation)

            return MemoryPointer(weakref.proxy(self.context), block, size, finalizer=release)

        def initialize(self) -> None:
            # as Numba's own manager does: size the queue of pending host-memory frees
            # (pinned and mapped allocations stay with HostOnlyCUDAMemoryManager)
            from numba.cuda.cudadrv.driver import _SizeNotSet

            if self.deallocations.memory_capacity == _SizeNotSet:
                self.deallocations.memory_capacity = self.get_memory_info().total

        def get_memory_info(self):
            free, total = driver.cuMemGetInfo()
            return MemoryInfo(free=free, total=total)

        def reset(self) -> None:
            super().reset()
            self.pool.reset()

        @property
        def interface_version(self) -> int:
            return 1

    def _pooled_array(shape: tuple, dtype: np.dtype):
        return cuda.device_array(shape, dtype=dtype)

    # Installed before numbacnn makes its first CUDA array (numbacnn.device imports
    # this backend before any upload); a context created earlier keeps Numba's manager.
    import numba

    POOL_ENABLED = (os.environ.get("NUMBACNN_CUDA_POOL", "1") != "0"
                    and getattr(numba.config, "CUDA_MEMORY_MANAGER", "default") == "default")
    if POOL_ENABLED:
        cuda.set_memory_manager(PooledMemoryManager)


@cuda.jit
def fill_kernel(out, value):
    # out (n,): a flat view; value: a scalar cast to out's dtype
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = value


def empty(shape: tuple, dtype: np.dtype):
    """Uninitialised C-contiguous device array, from the pool."""
    return _pooled_array(tuple(int(s) for s in shape), np.dtype(dtype))


def zeros(shape: tuple, dtype: np.dtype):
    """Zero-filled C-contiguous device array (from the pool, filled on the device)."""
    out = empty(shape, dtype)
    if out.size:
        flat = out.reshape(-1)
        configured(fill_kernel, blocks_for(flat.shape[0], FILL_THREADS, FILL_MAX_BLOCKS), FILL_THREADS)(flat, 0)
    return out


def pool_stats() -> dict[str, int]:
    """The pools' counters: ``allocations`` (each a ``cudaMalloc`` on a GPU), ``reuses``,
    ``bytes_in_use``, ``bytes_cached``; on a GPU summed over the contexts. Without the
    EMM plugin (disabled, or a context made before numbacnn's CUDA backend was
    imported) they stay at zero."""
    if SIMULATOR:
        return POOL.stats()
    total = {"allocations": 0, "reuses": 0, "bytes_in_use": 0, "bytes_cached": 0}
    for manager in list(_MANAGERS):
        for key, value in manager.pool.stats().items():
            total[key] += value
    return total
