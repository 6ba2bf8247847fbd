"""Launch helpers shared by the CUDA kernels: the simulator switch and grid sizes.

Every kernel in this package loops over its work items with a *grid stride*
(``for item in range(first, count, step)``), so any grid size is correct and the
launch configuration is only a performance choice. On a GPU the grids are large
(one work item per thread or block). Under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) every CUDA thread is a Python thread, so there the
blocks are tiny and the grids capped at a couple of blocks: the same kernels, the
same code paths, but seconds instead of minutes in the test suite.
"""

from __future__ import annotations

import numba

# configured launchers, kernel[grid, block], by (kernel, grid, block): see configured()
_CONFIGURED: dict = {}
_CONFIGURED_LIMIT = 4096  # distinct (kernel, grid, block) kept; past it the cache starts over

# True when numba.cuda is the simulator (read once, when this module is imported)
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)


def blocks_for(work_items: int, items_per_block: int, max_blocks: int) -> int:
    """Number of blocks: enough for ``work_items`` at ``items_per_block`` each,
    at most ``max_blocks`` (the kernels' grid-stride loops cover the rest), at least 1."""
    needed = -(-int(work_items) // int(items_per_block))
    return max(1, min(int(max_blocks), needed))


def launch_bounds(max_threads_per_block: int, min_blocks_per_sm: int) -> dict:
    """``cuda.jit`` options that promise ptxas at most ``max_threads_per_block`` threads
    per block and ask for registers few enough that ``min_blocks_per_sm`` blocks fit
    on one SM (CUDA's ``__launch_bounds__``). Empty under the simulator, which has
    no such option (and no registers)."""
    if SIMULATOR:
        return {}
    return {"launch_bounds": (int(max_threads_per_block), int(min_blocks_per_sm))}


def configured(kernel, grid, block):
    """``kernel[grid, block]``, made once per (kernel, grid, block) and then reused.

    numba-cuda builds a launch configuration on every ``kernel[grid, block]``: it
    normalises the dimensions, looks up the stream and, for grids under 128 blocks,
    goes through Python's warnings machinery (a low-occupancy warning). A training
    step launches the same kernels on the same shapes every time, so the configured
    launcher is kept (issue 12: launch configurations once per shape). Measured
    without a GPU: 0.9 us -> 0.1 us per launch, small beside the argument handling of
    the launch itself (tens of microseconds, not addressed here).
    """
    key = (kernel, grid, block)
    launcher = _CONFIGURED.get(key)
    if launcher is None:
        if len(_CONFIGURED) >= _CONFIGURED_LIMIT:
            _CONFIGURED.clear()
        launcher = _CONFIGURED[key] = kernel[grid, block]
    return launcher
