"""Per-channel sums on CUDA over x viewed as (N, C, L), in float64, by many blocks per channel.

Used by batch norm (``norm.py``: the batch mean, the squared deviations, the two
sums of the backward) and by the conv / linear bias gradient (``conv.py``: dout
viewed as (N, F, OH * OW)): layers with few channels (Tiny VGG: 10) and many values
per channel (batch 64 at 28 x 28: 50176).

One block per channel would keep 10 SMs of a GPU busy (an H100 has 132). So each
channel's ``count = N * L`` values are cut into ``parts`` consecutive chunks
(:func:`parts_per_channel`), and one block of ``REDUCE_THREADS`` threads sums one
(channel, part) chunk into ``partials[c, p]`` (float64, (C, parts)): its threads
stride through the chunk (consecutive threads read consecutive elements: coalesced),
add in float64 registers, and a fixed-order shared-memory tree
(``reduce.block_sum``) gives the chunk's sum. A second, tiny kernel with one thread
per channel then adds the ``parts <= MAX_PARTS`` partials of its channel in order
(C * parts additions in all). Nothing depends on timing (no atomics): the sums are
the same bit for bit on every run; they depend on ``parts``, which depends only on
the shape. Sums are float64 whatever x's dtype, as on the CPU.

Under the simulator the blocks are tiny and the parts small (``launch.py``), so the
tests' small shapes still cut channels into several parts, the last one shorter.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, float64

from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured
from numbacnn.kernels.cuda.memory import empty
from numbacnn.kernels.cuda.reduce import block_sum

# ---- partial sums: one block per (channel, part) ----------------------------------
REDUCE_THREADS = 4 if SIMULATOR else 256      # a power of two (tree reduction)
REDUCE_MAX_BLOCKS = 2 if SIMULATOR else 65535
# How many parts a channel is cut into: enough blocks in all to fill the GPU
# (132 SMs on an H100, several blocks each), ...
PARTS_TARGET_BLOCKS = 8 if SIMULATOR else 1024
# ... but every thread still gets a few values to add before the tree (a block whose
# threads each add one value spends its time in the tree and the launch) ...
MIN_ITEMS_PER_THREAD = 2 if SIMULATOR else 4
# ... and the finishing thread of a channel adds at most this many partials.
MAX_PARTS = 8 if SIMULATOR else 64

# ---- finishing a channel (C * parts additions): one thread per channel --------------
CHANNEL_THREADS = 4 if SIMULATOR else 64
CHANNEL_MAX_BLOCKS = 2 if SIMULATOR else 1024


def parts_per_channel(channels: int, count: int) -> int:
    """Number of chunks each channel's ``count`` values are cut into (one block each).

    About ``PARTS_TARGET_BLOCKS / channels``, at most ``MAX_PARTS``, and few enough
    that every part holds at least ``REDUCE_THREADS * MIN_ITEMS_PER_THREAD`` values
    (a channel with fewer is one part). Depends on the shape only, so the same shape
    always sums in the same order.
    """
    wanted = blocks_for(PARTS_TARGET_BLOCKS, max(int(channels), 1), MAX_PARTS)
    filled = max(1, int(count) // (REDUCE_THREADS * MIN_ITEMS_PER_THREAD))
    return min(wanted, filled)


def partial_blocks(channels: int, parts: int) -> int:
    """Grid of the partial-sum kernels: one block per (channel, part), capped (grid stride)."""
    return blocks_for(channels * parts, 1, REDUCE_MAX_BLOCKS)


def channel_blocks(channels: int) -> int:
    """Grid of the finishing kernels: one thread per channel."""
    return blocks_for(channels, CHANNEL_THREADS, CHANNEL_MAX_BLOCKS)


@cuda.jit
def channel_sum_kernel(partials, x):
    # partials (C, parts) float64 written, one block per element; x (N, C, L)
    n_, c_, l_ = x.shape
    parts = partials.shape[1]
    count = n_ * l_
    chunk = (count + parts - 1) // parts
    partial = cuda.shared.array(REDUCE_THREADS, dtype=float64)
    thread = cuda.threadIdx.x
    for task in range(cuda.blockIdx.x, c_ * parts, cuda.gridDim.x):  # the same trip count for the whole block
        c = task // parts
        p = task % parts
        total = 0.0
        for k in range(p * chunk + thread, min((p + 1) * chunk, count), REDUCE_THREADS):
            total += float(x[k // l_, c, k % l_])  # float(): float64 also under the simulator (NumPy scalars)
        partial[thread] = total
        block_sum(partial, thread)
        if thread == 0:  # only thread 0 reads partial[0]: the next task's writes wait at block_sum's barrier
            partials[c, p] = partial[0]


@cuda.jit
def channel_total_kernel(out, partials):
    # out (C,) written (its own dtype); partials (C, parts) float64 from channel_sum_kernel
    for c in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        total = 0.0
        for p in range(partials.shape[1]):
            total += partials[c, p]
        out[c] = total


def channel_partial_sums(x):
    """partials (C, parts) float64 of x (N, C, L): chunk sums, ``parts_per_channel`` per channel."""
    n_, c_, l_ = x.shape
    parts = parts_per_channel(c_, n_ * l_)
    partials = empty((c_, parts), np.float64)
    configured(channel_sum_kernel, partial_blocks(c_, parts), REDUCE_THREADS)(partials, x)
    return partials


def channel_sums(out, x) -> None:
    """out[c] = sum of x[:, c, :] over N and L, added in float64; out (C,), x (N, C, L)."""
    partials = channel_partial_sums(x)
    configured(channel_total_kernel, channel_blocks(out.shape[0]), CHANNEL_THREADS)(out, partials)
