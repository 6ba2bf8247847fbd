"""Fully connected layer on CUDA: ``out = x @ w.T + b`` and its gradients.

Shapes::

    x    (N, IN)     input rows
    w    (OUT, IN)   weights, PyTorch layout
    b    (OUT,)      bias (zeros when the layer has none)
    out  (N, OUT)    output; dout is its gradient

All three products are tiled matrix products in shared memory, as in numba-cuda's
``test_matmul.py`` example: a (TPB, TPB) block computes a TPB x TPB tile of the
result, one element per thread, walking the reduction axis TPB at a time; each step
loads one tile of each operand (zeros past the edges), ``syncthreads()``, adds TPB
products, ``syncthreads()``. Each result element is summed by one thread in a fixed
order: deterministic. A tile stored transposed gets one padding column, so the
threads of a warp write to different shared-memory banks.

The bias gradient is ``conv2d_backward_bias`` on dout viewed as (N, OUT, 1, 1).
"""

from __future__ import annotations

from numba import cuda

from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured

TPB = 4 if SIMULATOR else 16  # threads per block along each axis = tile side
TPB_PADDED = TPB + 1           # row length of a tile stored transposed (one padding column)
LINEAR_MAX_BLOCKS = 2 if SIMULATOR else 65535


@cuda.jit
def linear_forward_kernel(out, x, w, b):
    # out (N, OUT) written; x (N, IN); w (OUT, IN); b (OUT,). Block (TPB, TPB): x -> o, y -> n.
    batch, out_features = out.shape
    in_features = x.shape[1]
    x_tile = cuda.shared.array((TPB, TPB), dtype=x.dtype)      # x_tile[row, k] = x[n0 + row, k0 + k]
    w_tile = cuda.shared.array((TPB, TPB_PADDED), dtype=w.dtype)  # w_tile[k, col] = w[o0 + col, k0 + k]
    zero = out.dtype.type(0)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tiles_o = (out_features + TPB - 1) // TPB
    tiles = ((batch + TPB - 1) // TPB) * tiles_o
    for tile in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):  # the same trip count for the whole block
        n0 = (tile // tiles_o) * TPB
        o0 = (tile % tiles_o) * TPB
        total = out.dtype.type(0)
        for k0 in range(0, in_features, TPB):
            k = k0 + tx
            x_tile[ty, tx] = x[n0 + ty, k] if n0 + ty < batch and k < in_features else zero
            w_tile[tx, ty] = w[o0 + ty, k] if o0 + ty < out_features and k < in_features else zero
            cuda.syncthreads()
            for j in range(TPB):
                total += x_tile[ty, j] * w_tile[j, tx]
            cuda.syncthreads()
        n = n0 + ty
        o = o0 + tx
        if n < batch and o < out_features:
            out[n, o] = total + b[o]


@cuda.jit
def linear_backward_input_kernel(dx, dout, w):
    # dx (N, IN) written; dout (N, OUT); w (OUT, IN). Block (TPB, TPB): x -> i, y -> n.
    batch, in_features = dx.shape
    out_features = dout.shape[1]
    dout_tile = cuda.shared.array((TPB, TPB), dtype=dout.dtype)  # dout_tile[row, k] = dout[n0 + row, k0 + k]
    w_tile = cuda.shared.array((TPB, TPB), dtype=w.dtype)        # w_tile[k, col] = w[k0 + k, i0 + col]
    zero = dx.dtype.type(0)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tiles_i = (in_features + TPB - 1) // TPB
    tiles = ((batch + TPB - 1) // TPB) * tiles_i
    for tile in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):
        n0 = (tile // tiles_i) * TPB
        i0 = (tile % tiles_i) * TPB
        total = dx.dtype.type(0)
        for k0 in range(0, out_features, TPB):
            k = k0 + tx
            dout_tile[ty, tx] = dout[n0 + ty, k] if n0 + ty < batch and k < out_features else zero
            k = k0 + ty
            w_tile[ty, tx] = w[k, i0 + tx] if k < out_features and i0 + tx < in_features else zero
            cuda.syncthreads()
            for j in range(TPB):
                total += dout_tile[ty, j] * w_tile[j, tx]
            cuda.syncthreads()
        n = n0 + ty
        i = i0 + tx
        if n < batch and i < in_features:
            dx[n, i] = total


@cuda.jit
def linear_backward_weight_kernel(dw, dout, x):
    # dw (OUT, IN) written; dout (N, OUT); x (N, IN). Block (TPB, TPB): x -> i, y -> o.
    out_features, in_features = dw.shape
    batch = dout.shape[0]
    dout_tile = cuda.shared.array((TPB, TPB_PADDED), dtype=dout.dtype)  # dout_tile[row, k] = dout[k0 + k, o0 + row]
    x_tile = cuda.shared.array((TPB, TPB), dtype=x.dtype)            # x_tile[k, col] = x[k0 + k, i0 + col]
    zero = dw.dtype.type(0)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tiles_i = (in_features + TPB - 1) // TPB
    tiles = ((out_features + TPB - 1) // TPB) * tiles_i
    for tile in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):
        o0 = (tile // tiles_i) * TPB
        i0 = (tile % tiles_i) * TPB
        total = dw.dtype.type(0)
        for k0 in range(0, batch, TPB):
            k = k0 + ty
            # read along OUT (coalesced), store transposed
            dout_tile[tx, ty] = dout[k, o0 + tx] if k < batch and o0 + tx < out_features else zero
            x_tile[ty, tx] = x[k, i0 + tx] if k < batch and i0 + tx < in_features else zero
            cuda.syncthreads()
            for j in range(TPB):
                total += dout_tile[ty, j] * x_tile[j, tx]
            cuda.syncthreads()
        o = o0 + ty
        i = i0 + tx
        if o < out_features and i < in_features:
            dw[o, i] = total


def _blocks(rows: int, cols: int) -> int:
    tiles = -(-rows // TPB) * -(-cols // TPB)
    return blocks_for(tiles, 1, LINEAR_MAX_BLOCKS)


def linear_forward(out, x, w, b) -> None:
    """out[n, o] = b[o] + sum_i x[n, i] * w[o, i]."""
    configured(linear_forward_kernel, _blocks(out.shape[0], out.shape[1]), (TPB, TPB))(out, x, w, b)


def linear_backward_input(dx, dout, w) -> None:
    """dx[n, i] = sum_o dout[n, o] * w[o, i]."""
    configured(linear_backward_input_kernel, _blocks(dx.shape[0], dx.shape[1]), (TPB, TPB))(dx, dout, w)


def linear_backward_weight(dw, dout, x) -> None:
    """dw[o, i] = sum_n dout[n, o] * x[n, i]."""
    configured(linear_backward_weight_kernel, _blocks(dw.shape[0], dw.shape[1]), (TPB, TPB))(dw, dout, x)
