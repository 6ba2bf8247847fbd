"""A fused block's pool (with its ReLU) and the pool's backward with the images in the
vector lanes: the companions of ``conv_lanes.py``'s convolution kernels for a *lanes block*
(``fused/chain.py``), a block on maps so small that its whole forward and backward run
in the lanes layout, kept from one lanes block to the next. The ReLU alone and its
backward are the NCHW blocks' kernels (``bordered.py``) on the lanes viewed as rows of
W x N values (``fused/lanes_ops.py``): only the pool needs its own loops here, because
its windows pair neighbouring columns, which that view interleaves with the images.

Why: on a 4x4 map a fused block's kernels are short, and each strided LANES call paid
for its own transposes in and out (``conv_lanes.images_last`` / ``images_first``);
the stride-2 Tiny VGG's two 4x4 blocks ran about 20 kernels a step, half of them
copies. Kept in the lanes, a block reads its input where the previous block wrote it.

Layouts (``conv_lanes.py``'s): a map is (C, H, W, N), the batch innermost; a
*bordered* lanes buffer holds (C, H, W) at (top, left) with zeros around it, as the
NCHW bordered buffers do (``fused/buffers.py``), and is zeroed once, when allocated:
these kernels write interiors only.

The semantics are the NCHW kernels' (``bordered.py``, ``norm.py``), element for
element: the ReLU lets a NaN through (``not value <= 0``) and turns -0.0 into +0.0;
the 2x2 / stride-2 pool takes each window's first maximum in row-major order, a NaN
winning (``common.is_new_max``); the gradient reaches the window's maximum only where
the pooled value is > 0 (that value is the ReLU's output there).
"""

from numba import njit, prange

from numbacnn.kernels.common import is_new_max

# ``relu_pool_into_border``'s record of where each window's maximum is: 0..3 in row-major
# order (top-left, top-right, bottom-left, bottom-right), or NO_GRADIENT where the
# pooled value is not > 0 and no gradient passes.
NO_GRADIENT = 4


@njit(parallel=True, cache=True)
def relu_pool_into_border(out, which, z, top, left):
    """out's interior at (top, left), (F, OH // 2, OW // 2, N), = the 2x2 / stride-2 max
    pool of relu(z), z (F, OH, OW, N); which (same shape, int8) = where the window's first
    maximum is, 0..3, or ``NO_GRADIENT`` where the pooled value is not > 0. A last odd
    row or column is not pooled (floor). Parallel over (filter, pooled row)."""
    filters, pooled_height, pooled_width, batch = which.shape
    zero = out.dtype.type(0)
    for task in prange(filters * pooled_height):
        f = task // pooled_height
        i = task % pooled_height
        for j in range(pooled_width):
            for n in range(batch):
                best = z[f, 2 * i, 2 * j, n]
                k = 0
                value = z[f, 2 * i, 2 * j + 1, n]
                if is_new_max(value, best):
                    best = value
                    k = 1
                value = z[f, 2 * i + 1, 2 * j, n]
                if is_new_max(value, best):
                    best = value
                    k = 2
                value = z[f, 2 * i + 1, 2 * j + 1, n]
                if is_new_max(value, best):
                    best = value
                    k = 3
                # relu(max) is the max of the relus; where the max is > 0, the same element wins
                out[f, top + i, left + j, n] = best if not best <= 0 else zero
                which[f, i, j, n] = k if best > 0 else NO_GRADIENT


@njit(parallel=True, cache=True)
def pool_relu_backward_into_border(gz, gp, which, top, left, height, width):
    """The pool's backward times the ReLU mask: gz's interior at (top, left), (F, height,
    width, N), = gp (F, height // 2, width // 2, N) at each window's maximum where
    ``which`` (``relu_pool_into_border``'s) lets it through, 0 elsewhere (a last odd row
    or column too). Every interior element written. Parallel over (filter, row pair)."""
    filters, batch = gz.shape[0], gz.shape[3]
    pooled_height, pooled_width = gp.shape[1], gp.shape[2]
    zero = gz.dtype.type(0)
    for task in prange(filters * ((height + 1) // 2)):
        f = task // ((height + 1) // 2)
        i = task % ((height + 1) // 2)
        for r in range(2 * i, min(2 * i + 2, height)):
            for w in range(width):
                for n in range(batch):
                    value = zero
                    if i < pooled_height and w // 2 < pooled_width:
                        if which[f, i, w // 2, n] == (r - 2 * i) * 2 + w % 2:
                            value = gp[f, i, w // 2, n]
                    gz[f, top + r, left + w, n] = value
