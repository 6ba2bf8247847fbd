"""2-D convolution (cross-correlation) on CUDA: forward and the three gradients.

Shapes, for all four kernels::

    x    (N, C, H, W)             input
    w    (F, C // groups, KH, KW) filters
    b    (F,)                     bias (zeros when the layer has none)
    out  (N, F, OH, OW)           output; dout is its gradient

Input row ``ih`` seen by output row ``oh`` through kernel row ``kh`` is
``oh * stride_h - pad_h + kh * dilation_h`` (the same along the width). Taps that
fall into the zero padding are skipped, not multiplied by zero, exactly as on the
CPU (so an inf weight next to the border gives the same result on both).

- forward: the Tiny VGG path (dilation 1, groups 1, kernels up to 7x7, strides up
  to 2) stages one input channel's patch and a few filters' taps in shared-memory
  tiles; every other configuration uses a direct kernel, one output per thread.
- grad-input: a gather, each thread owns dx elements and sums over the output
  positions that read them (no atomics).
- grad-weight: one block per dw element, float64 partial sums (as on the CPU) and
  a fixed-order shared-memory reduction (``block_sum``): bitwise identical from
  run to run.
- grad-bias: ``channel_sums.py`` (several blocks per filter, float64 partial sums,
  fixed-order trees): bitwise identical from run to run too.

Kernels write every element of their output (dx and dw need not arrive zeroed).
"""

from __future__ import annotations

from numba import cuda, float64

from numbacnn.kernels.common import end_valid_output, first_valid_output
from numbacnn.kernels.cuda.channel_sums import channel_sums
from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured, launch_bounds
from numbacnn.kernels.cuda.reduce import block_sum

# ---- forward, tiled path (dilation 1, groups 1: the Tiny VGG layers) -------------
TILE = 4 if SIMULATOR else 16                 # a block computes a TILE x TILE output tile, one pixel per thread
FILTERS_PER_BLOCK = 2 if SIMULATOR else 8     # ... for this many filters, which share the input patch
MAX_TILED_KERNEL = 7                          # kernel sides up to this take the tiled path
MAX_TILED_STRIDE = 2                          # strides up to this take the tiled path
PATCH = (TILE - 1) * MAX_TILED_STRIDE + MAX_TILED_KERNEL  # side of the input patch tile in shared memory
FORWARD_MAX_BLOCKS = 2 if SIMULATOR else 65535
# Blocks of one SM that run the tiled forward at the same time: with one, the SM idles
# at every syncthreads while its only block loads tiles. Two blocks of 256 threads
# leave 65536 / 512 = 128 registers per thread; without the bound ptxas took 143
# (float32) and 165 (float64), i.e. one block per SM. tests/test_cuda_compile.py
# checks the figure and that nothing spills.
TILED_BLOCKS_PER_SM = 2
# shared memory per block: PATCH**2 + FILTERS_PER_BLOCK * MAX_TILED_KERNEL**2 elements
# (float64 on a GPU: 37*37*8 + 8*49*8 = 14 KB, well under the 48 KB static limit)

# ---- forward (general), grad-input: one output element per thread -----------------
DIRECT_THREADS = 8 if SIMULATOR else 256
DIRECT_MAX_BLOCKS = 2 if SIMULATOR else 65535

# ---- grad-weight: one block per output element -------------------------------------
REDUCE_THREADS = 4 if SIMULATOR else 256      # a power of two (tree reduction)
REDUCE_MAX_BLOCKS = 2 if SIMULATOR else 65535
# Resident blocks per SM asked of ptxas: the float64 sums took 84 registers (float32
# data), which left 2 blocks of 256 threads per SM where float32 sums (78) had 3.
WEIGHT_GRAD_BLOCKS_PER_SM = 3


# --------------------------------------------------------------------------- #
# forward
# --------------------------------------------------------------------------- #


@cuda.jit(**launch_bounds(TILE * TILE, TILED_BLOCKS_PER_SM))
def conv2d_forward_tiled_kernel(out, x, w, b, stride_h, stride_w, pad_h, pad_w):
    # out (N, F, OH, OW); x (N, C, H, W); w (F, C, KH, KW) with KH, KW <= MAX_TILED_KERNEL;
    # b (F,); stride_h, stride_w <= MAX_TILED_STRIDE. Block: (TILE, TILE) threads.
    batch, out_channels, out_height, out_width = out.shape
    in_channels, in_height, in_width = x.shape[1], x.shape[2], x.shape[3]
    kernel_height, kernel_width = w.shape[2], w.shape[3]
    # patch[r, s] = x[n, c, row0 + r, col0 + s] (0 outside the image)
    patch = cuda.shared.array((PATCH, PATCH), dtype=x.dtype)
    # taps[i, kh, kw] = w[f0 + i, c, kh, kw]
    taps = cuda.shared.array((FILTERS_PER_BLOCK, MAX_TILED_KERNEL, MAX_TILED_KERNEL), dtype=w.dtype)
    total = cuda.local.array(FILTERS_PER_BLOCK, dtype=out.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    thread = ty * TILE + tx
    zero = out.dtype.type(0)
    tiles_w = (out_width + TILE - 1) // TILE
    tiles_h = (out_height + TILE - 1) // TILE
    filter_groups = (out_channels + FILTERS_PER_BLOCK - 1) // FILTERS_PER_BLOCK
    patch_height = (TILE - 1) * stride_h + kernel_height
    patch_width = (TILE - 1) * stride_w + kernel_width
    kernel_taps = kernel_height * kernel_width
    tiles = batch * filter_groups * tiles_h * tiles_w
    for tile in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):  # the same trip count for the whole block
        n = tile // (filter_groups * tiles_h * tiles_w)
        rest = tile % (filter_groups * tiles_h * tiles_w)
        f0 = (rest // (tiles_h * tiles_w)) * FILTERS_PER_BLOCK
        rest = rest % (tiles_h * tiles_w)
        oh0 = (rest // tiles_w) * TILE
        ow0 = (rest % tiles_w) * TILE
        oh = oh0 + ty
        ow = ow0 + tx
        row0 = oh0 * stride_h - pad_h
        col0 = ow0 * stride_w - pad_w
        # taps of this thread's pixel that land inside the image (padding is skipped)
        top = oh * stride_h - pad_h
        left = ow * stride_w - pad_w
        kh_begin = first_valid_output(-top, 0, 1)
        kh_end = end_valid_output(in_height, -top, 0, 1, kernel_height)
        kw_begin = first_valid_output(-left, 0, 1)
        kw_end = end_valid_output(in_width, -left, 0, 1, kernel_width)
        for i in range(FILTERS_PER_BLOCK):
            total[i] = b[f0 + i] if f0 + i < out_channels else zero
        for c in range(in_channels):
            for k in range(thread, patch_height * patch_width, TILE * TILE):
                r = k // patch_width
                s = k % patch_width
                ih = row0 + r
                iw = col0 + s
                if 0 <= ih < in_height and 0 <= iw < in_width:
                    patch[r, s] = x[n, c, ih, iw]
                else:
                    patch[r, s] = 0
            for k in range(thread, FILTERS_PER_BLOCK * kernel_taps, TILE * TILE):
                i = k // kernel_taps
                kh = (k % kernel_taps) // kernel_width
                kw = k % kernel_width
                if f0 + i < out_channels:
                    taps[i, kh, kw] = w[f0 + i, c, kh, kw]
                else:
                    taps[i, kh, kw] = 0
            cuda.syncthreads()
            if oh < out_height and ow < out_width:
                for kh in range(kh_begin, kh_end):
                    r = ty * stride_h + kh
                    for kw in range(kw_begin, kw_end):
                        value = patch[r, tx * stride_w + kw]
                        for i in range(FILTERS_PER_BLOCK):
                            total[i] += taps[i, kh, kw] * value
            cuda.syncthreads()  # the next channel overwrites the tiles
        if oh < out_height and ow < out_width:
            for i in range(FILTERS_PER_BLOCK):
                if f0 + i < out_channels:
                    out[n, f0 + i, oh, ow] = total[i]


@cuda.jit
def conv2d_forward_direct_kernel(out, x, w, b, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups):
    # out (N, F, OH, OW); x (N, C, H, W); w (F, C // groups, KH, KW); b (F,)
    batch, out_channels, out_height, out_width = out.shape
    in_height, in_width = x.shape[2], x.shape[3]
    group_in_channels, kernel_height, kernel_width = w.shape[1], w.shape[2], w.shape[3]
    group_out_channels = out_channels // groups
    for index in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        ow = index % out_width
        oh = (index // out_width) % out_height
        f = (index // (out_width * out_height)) % out_channels
        n = index // (out_width * out_height * out_channels)
        first_in_channel = (f // group_out_channels) * group_in_channels
        top = oh * stride_h - pad_h
        left = ow * stride_w - pad_w
        # the taps that land inside the image, once per pixel (padding is skipped):
        # the valid-output helpers with the roles of output index and tap swapped
        kh_begin = first_valid_output(-top, 0, dilation_h)
        kh_end = end_valid_output(in_height, -top, 0, dilation_h, kernel_height)
        kw_begin = first_valid_output(-left, 0, dilation_w)
        kw_end = end_valid_output(in_width, -left, 0, dilation_w, kernel_width)
        total = b[f]
        for c in range(group_in_channels):
            for kh in range(kh_begin, kh_end):
                ih = top + kh * dilation_h
                for kw in range(kw_begin, kw_end):
                    total += w[f, c, kh, kw] * x[n, first_in_channel + c, ih, left + kw * dilation_w]
        out[n, f, oh, ow] = total


def uses_tiled_forward(w_shape: tuple, stride_h: int, stride_w: int, dilation_h: int, dilation_w: int,
                       groups: int) -> bool:
    """True when conv2d_forward takes the shared-memory tiled path for these hyperparameters."""
    return (groups == 1 and dilation_h == 1 and dilation_w == 1
            and w_shape[2] <= MAX_TILED_KERNEL and w_shape[3] <= MAX_TILED_KERNEL
            and stride_h <= MAX_TILED_STRIDE and stride_w <= MAX_TILED_STRIDE)


def conv2d_forward(out, x, w, b, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups) -> None:
    """out[n, f] = b[f] + sum over c, kh, kw of w[f, c, kh, kw] * x[n, c_in, ih, iw]."""
    batch, out_channels, out_height, out_width = out.shape
    if uses_tiled_forward(w.shape, stride_h, stride_w, dilation_h, dilation_w, groups):
        tiles = (batch * -(-out_channels // FILTERS_PER_BLOCK)
                 * -(-out_height // TILE) * -(-out_width // TILE))
        blocks = blocks_for(tiles, 1, FORWARD_MAX_BLOCKS)
        configured(conv2d_forward_tiled_kernel, blocks, (TILE, TILE))(out, x, w, b, stride_h, stride_w, pad_h, pad_w)
    else:
        blocks = blocks_for(out.size, DIRECT_THREADS, DIRECT_MAX_BLOCKS)
        configured(conv2d_forward_direct_kernel, blocks, DIRECT_THREADS)(
            out, x, w, b, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups)


# --------------------------------------------------------------------------- #
# gradient with respect to the input
# --------------------------------------------------------------------------- #


@cuda.jit
def conv2d_backward_input_kernel(dx, dout, w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups):
    # dx (N, C, H, W) written; dout (N, F, OH, OW); w (F, C // groups, KH, KW)
    batch, in_channels, in_height, in_width = dx.shape
    out_channels, out_height, out_width = dout.shape[1], dout.shape[2], dout.shape[3]
    group_in_channels, kernel_height, kernel_width = w.shape[1], w.shape[2], w.shape[3]
    group_out_channels = out_channels // groups
    for index in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        iw = index % in_width
        ih = (index // in_width) % in_height
        c_in = (index // (in_width * in_height)) % in_channels
        n = index // (in_width * in_height * in_channels)
        group = c_in // group_in_channels
        c = c_in % group_in_channels
        total = dx.dtype.type(0)
        for f in range(group * group_out_channels, (group + 1) * group_out_channels):
            for kh in range(kernel_height):
                row = ih + pad_h - kh * dilation_h  # = oh * stride_h for the output row that reads ih
                if row < 0:
                    break  # larger kh only go further up
                if row % stride_h != 0 or row // stride_h >= out_height:
                    continue
                oh = row // stride_h
                for kw in range(kernel_width):
                    col = iw + pad_w - kw * dilation_w
                    if col < 0:
                        break
                    if col % stride_w != 0 or col // stride_w >= out_width:
                        continue
                    total += w[f, c, kh, kw] * dout[n, f, oh, col // stride_w]
        dx[n, c_in, ih, iw] = total


def conv2d_backward_input(dx, dout, w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups) -> None:
    """dx[n, c_in, ih, iw] = sum of w[f, c, kh, kw] * dout[n, f, oh, ow] over the taps that read it."""
    blocks = blocks_for(dx.size, DIRECT_THREADS, DIRECT_MAX_BLOCKS)
    configured(conv2d_backward_input_kernel, blocks, DIRECT_THREADS)(
        dx, dout, w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups)


# --------------------------------------------------------------------------- #
# gradients with respect to the weights and the bias
# --------------------------------------------------------------------------- #


@cuda.jit(**launch_bounds(REDUCE_THREADS, WEIGHT_GRAD_BLOCKS_PER_SM))
def conv2d_backward_weight_kernel(dw, dout, x, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups):
    # dw (F, C // groups, KH, KW) written, one block per element; dout (N, F, OH, OW); x (N, C, H, W)
    out_channels, group_in_channels, kernel_height, kernel_width = dw.shape
    batch, out_height, out_width = dout.shape[0], dout.shape[2], dout.shape[3]
    in_height, in_width = x.shape[2], x.shape[3]
    group_out_channels = out_channels // groups
    partial = cuda.shared.array(REDUCE_THREADS, dtype=float64)  # float64 partial sums, as on the CPU
    thread = cuda.threadIdx.x
    for index in range(cuda.blockIdx.x, dw.size, cuda.gridDim.x):  # the same trip count for the whole block
        kw = index % kernel_width
        kh = (index // kernel_width) % kernel_height
        c = (index // (kernel_width * kernel_height)) % group_in_channels
        f = index // (kernel_width * kernel_height * group_in_channels)
        c_in = (f // group_out_channels) * group_in_channels + c
        row_offset = kh * dilation_h
        col_offset = kw * dilation_w
        # output positions whose tap (kh, kw) lands inside the image
        oh_begin = first_valid_output(pad_h, row_offset, stride_h)
        oh_end = end_valid_output(in_height, pad_h, row_offset, stride_h, out_height)
        ow_begin = first_valid_output(pad_w, col_offset, stride_w)
        ow_end = end_valid_output(in_width, pad_w, col_offset, stride_w, out_width)
        rows = max(oh_end - oh_begin, 0)
        cols = max(ow_end - ow_begin, 0)
        total = 0.0
        # consecutive threads take consecutive output columns: coalesced reads; float(): float64 products
        # and sums (a product of two float32 values is exact in float64), also under the simulator
        for k in range(thread, batch * rows * cols, REDUCE_THREADS):
            n = k // (rows * cols)
            oh = oh_begin + (k // cols) % rows
            ow = ow_begin + k % cols
            total += float(dout[n, f, oh, ow]) * float(x[n, c_in, oh * stride_h - pad_h + row_offset,
                                                          ow * stride_w - pad_w + col_offset])
        partial[thread] = total
        block_sum(partial, thread)
        if thread == 0:
            dw[f, c, kh, kw] = partial[0]


def conv2d_backward_weight(dw, dout, x, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups) -> None:
    """dw[f, c, kh, kw] = sum over n, oh, ow of dout[n, f, oh, ow] * x[n, c_in, ih, iw]."""
    blocks = blocks_for(dw.size, 1, REDUCE_MAX_BLOCKS)
    configured(conv2d_backward_weight_kernel, blocks, REDUCE_THREADS)(
        dw, dout, x, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups)


def conv2d_backward_bias(db, dout) -> None:
    """db[f] = sum over n, oh, ow of dout[n, f, oh, ow], added in float64 (as on the CPU).

    dout viewed as (N, F, OH * OW) goes through ``channel_sums``: several blocks per
    filter (a layer has few filters and many values per filter), fixed-order trees.
    """
    batch, out_channels, out_height, out_width = dout.shape
    channel_sums(db, dout.reshape(batch, out_channels, out_height * out_width))
