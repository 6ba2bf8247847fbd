"""A run of consecutive ``Conv2d (-> BatchNorm2d) -> ReLU (-> MaxPool2d)`` blocks executed as one op.

:class:`BlockChain` is what ``numbacnn.nn.Sequential`` sees (through
``nn/fusion.py``): ``forward(x, params, training)`` and ``backward(gy, input_grad)``,
device-agnostic. Inside, each block runs one of two ways, decided for each input
shape and mode by the one rule ``eligibility.fast_path``:

- **composed**: the ops of ``numbacnn/functional/fused.py``, which *are* the
  definition (``conv2d_relu(x) = relu(conv2d(x))``); any device, any hyperparameters;
- **fast** (CPU, Tiny VGG's shapes): the bordered-buffer ops of ``bordered_ops.py``
  on :class:`~numbacnn.fused.buffers.BlockBuffers` kept between steps.

What neighbours share is handed over as values, inside this one object:

- forward: a fast block writes its output straight into the interior of the next
  fast block's padded input (its ``out_border`` is the next block's padding), so the
  next block reads it with no copy;
- backward: a block whose input came from a ReLU (the previous block has no pool)
  returns its input gradient already multiplied by that ReLU's mask
  (:class:`Handoff` ``masked``), and the previous block skips its ReLU backward; a
  fast block writes that gradient straight into the previous fast block's bordered
  output gradient (``in_place``), and into its second, 1-bordered copy where there is
  one (``by_1_written``).

A block with batch norm keeps its conv output z (the batch norm's input) in training:
forward, the conv, the batch statistics of z, then normalise + ReLU (+ pool) into the
next block's input; backward, the gradient at the ReLU input goes through the batch
norm's backward into the conv's bordered output gradient (``BlockBuffers.gconv``);
with a pool, one kernel takes the pooled gradient through the pool, the ReLU mask and
the batch norm (``norm.batch_norm_pool2x2_backward_bordered_kernel``), and the
gradient at the ReLU input is never stored. In eval mode with running statistics the
batch norm is folded into the conv's weights and the block runs as one without it.

A strided block (``fast_path``: a GATHERED or PHASES forward) runs the backend's
strided kernels, chosen as for the functional conv2d, on the same buffers: its conv
reads the bordered input with padding 0 and writes a plain z, which the batch norm
blocks' normalise + ReLU (+ pool) kernels read, with scale 1 and shift 0 when there is
no batch norm (with neither batch norm nor pool, a ReLU kernel of its own); its
backward reads a plain output gradient and hands its input gradient over through the
previous ReLU's mask.

A lanes block (``fast_path``: small maps at a large batch, no batch norm) runs with
the images in the vector lanes (``lanes_ops.py`` on :class:`LanesBuffers`): its input
transposed in (unless the previous lanes block left its output there, bordered by this
block's padding), the LANES conv at its stride, ReLU (+ pool) into the next lanes
block's padded input or back to an NCHW buffer; backward, the conv output's gradient
in the lanes (written, masked, by the next lanes block, or brought in), grad-weight,
bias and grad-input, the input gradient handed to a previous lanes block in the lanes
(``Handoff.in_lanes``) or back to NCHW through the previous ReLU's mask.

What leaves the chain is plain: the forward's output is an interior view of a
buffer (copied by the outermost Sequential), the backward's input gradient is never
masked. Parameter gradients are returned, one (gw, gb) per block, for the layers to
accumulate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

import numbacnn.functional as F
import numbacnn.functional.fused as FF
from numbacnn.device import device_of
from numbacnn.fused import bordered_ops as ops
from numbacnn.fused import lanes_ops
from numbacnn.fused.buffers import BlockBuffers, LanesBuffers
from numbacnn.fused.eligibility import ConvBlock, FastPath, fast_path
from numbacnn.workspace import Workspaces


@dataclass
class NormParams:
    """A block's batch norm for one step.

    ``weight``, ``bias``: (F,) or None (no affine: 1 and 0); ``running_mean``,
    ``running_var``: (F,) or None (no running statistics); ``batch_stats``: normalise
    with this batch's statistics (training, or no running statistics), else with the
    running ones; ``momentum``: the running statistics' update weight this step
    (used when ``batch_stats`` and there are running statistics, as ``F.batch_norm``)."""

    weight: Any
    bias: Any
    running_mean: Any
    running_var: Any
    batch_stats: bool
    momentum: float


# (weight (F, C // groups, KH, KW), bias (F,) or None, NormParams or None)
Params = tuple[Any, Any, "NormParams | None"]


@dataclass
class Handoff:
    """What a block's backward hands to the block before it.

    ``grad``: the gradient with respect to the block's input (None without
    ``input_grad``); ``masked``: already multiplied by the previous block's ReLU mask;
    ``by_1_written``: it was also written into the previous block's 1-bordered copy of
    its output gradient (``BlockBuffers.gz_by_1``); ``in_lanes``: for a previous lanes
    block, ``grad`` is in the lanes (C, H, W, N), or, None, the previous block's own
    gradient buffer (``LanesBuffers.gz_t``) already holds it, masked."""

    grad: Any
    masked: bool = False
    by_1_written: bool = False
    in_lanes: bool = False


@dataclass
class _Saved:
    """What one block's backward needs from its training forward."""

    x: Any                               # the block's input
    buffers: BlockBuffers | LanesBuffers | None = None  # fast: its buffers (x_padded is the padded input)
    x_padded: Any = None
    y: Any = None                        # composed: the ReLU output (mask, pool input)
    indices: Any = None                  # composed with a pool: the argmax indices
    z: Any = None                        # batch norm: its input, the conv output
    mean: Any = None                     # fast batch norm: the batch statistics (F,), float64
    invstd: Any = None
    x_t: Any = None                      # lanes: the padded input in the lanes (its own, or the previous block's output)


class BlockChain:
    """Consecutive Conv2d (-> BatchNorm2d) -> ReLU (-> MaxPool2d) blocks run as one op.

    Parameters
    ----------
    blocks : sequence of ConvBlock
        What each block computes (hyperparameters, weight shape), in order.
    """

    def __init__(self, blocks: Sequence[ConvBlock]) -> None:
        self.blocks = tuple(blocks)
        self._workspaces = Workspaces()  # each block's BlockBuffers or LanesBuffers, by block, mode and shape
        self._saved: list[_Saved | None] = [None] * len(self.blocks)
        self._fast: list[BlockBuffers | LanesBuffers | None] = [None] * len(self.blocks)  # last forward's fast buffers

    # ------------------------------------------------------------------ forward
    def forward(self, x: Any, params: Sequence[Params], training: Sequence[bool]) -> Any:
        """x (N, C, H, W) -> the last block's output; keeps what backward needs for the
        blocks in training mode."""
        device, dtype = device_of(x), x.dtype
        choice = self._choose(0, tuple(x.shape), dtype, params, training, device)
        for i, block in enumerate(self.blocks):
            w, b, norm = params[i]
            if isinstance(choice, FastPath):
                following = None
                if i + 1 < len(self.blocks):
                    following = self._choose(i + 1, choice.out_shape, dtype, params, training, device)
                out_border = following.pad if isinstance(following, FastPath) else (0, 0)
                if choice.lanes:  # x is None when the previous lanes block kept its output in the lanes
                    out_lanes = isinstance(following, FastPath) and following.lanes
                    x = self._forward_lanes(i, x, w, b, choice, out_border, out_lanes, training[i])
                else:
                    x = self._forward_fast(i, x, w, b, norm, choice, out_border, training[i])
                choice = following
            else:
                x = self._forward_composed(i, x, w, b, norm, training[i])
                self._fast[i] = None
                if i + 1 < len(self.blocks):
                    choice = self._choose(i + 1, tuple(x.shape), x.dtype, params, training, device)
        return x

    def _choose(self, i: int, shape: tuple, dtype: Any, params: Sequence[Params], training: Sequence[bool],
                device: str) -> FastPath | str:
        """Block i's fast path for an input of this shape and dtype, in the block's mode
        (training, batch norm statistics), or why it runs composed."""
        w, b, norm = params[i]
        frozen_norm = training[i] and norm is not None and not norm.batch_stats
        return fast_path(self.blocks[i], shape, np.dtype(dtype), np.dtype(w.dtype),
                         None if b is None else np.dtype(b.dtype), device, frozen_norm)

    def _forward_composed(self, i: int, x: Any, w: Any, b: Any, norm: NormParams | None, training: bool) -> Any:
        block = self.blocks[i]
        conv_args = dict(stride=block.stride, padding=block.padding, dilation=block.dilation, groups=block.groups)
        if block.norm is not None:
            return self._forward_composed_norm(i, x, w, b, norm, training, conv_args)
        if block.pool is None:
            y = FF.conv2d_relu(x, w, b, **conv_args)
            out, indices = y, None
        else:
            pool = block.pool
            out, y, indices = FF.conv2d_relu_max_pool2d(
                x, w, b, **conv_args, pool_kernel_size=pool.kernel_size, pool_stride=pool.stride,
                pool_padding=pool.padding, pool_dilation=pool.dilation, ceil_mode=pool.ceil_mode)
        self._saved[i] = _Saved(x=x, y=y, indices=indices) if training else None
        return out

    def _forward_composed_norm(self, i: int, x: Any, w: Any, b: Any, norm: NormParams, training: bool,
                               conv_args: dict) -> Any:
        """conv2d, batch_norm, relu (, max_pool2d with indices): the layers' own ops."""
        block = self.blocks[i]
        z = F.conv2d(x, w, b, **conv_args)
        y = F.relu(F.batch_norm(z, norm.running_mean, norm.running_var, norm.weight, norm.bias, norm.batch_stats,
                                norm.momentum, block.norm.eps))
        out, indices = y, None
        if block.pool is not None:
            pool = block.pool
            out, indices = F.max_pool2d(y, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode,
                                        return_indices=True)
        self._saved[i] = _Saved(x=x, y=y, indices=indices, z=z) if training else None
        return out

    def _forward_fast(self, i: int, x: Any, w: Any, b: Any, norm: NormParams | None, fast: FastPath,
                      out_border: tuple[int, int], training: bool) -> Any:
        block = self.blocks[i]
        batch_stats = norm is not None and norm.batch_stats
        key = (tuple(x.shape), x.dtype.str, out_border, batch_stats)
        name = f"{i}:{'train' if training else 'eval'}"
        buffers = self._workspaces.get(name, key)
        if buffers is None:
            # one set per block and mode (an eval forward has no gradient buffers); a new
            # batch shape replaces it. What leaves the outermost Sequential is copied
            # there (numbacnn/workspace.py), so reusing buffers in eval mode is safe too.
            buffers = self._workspaces.keep(name, key, BlockBuffers(
                tuple(x.shape), x.dtype, block.weight_shape[2:], fast, out_border, block.pool is not None,
                training, batch_norm=norm is not None, batch_stats=batch_stats))
        previous = self._fast[i - 1] if i > 0 else None
        if previous is not None and x is previous.output[1] and previous.out_border == fast.pad:
            x_padded = previous.output[0]  # the previous block wrote its output into our padded input
        else:
            x_padded = buffers.x_padded
            ops.copy_into_border(x_padded, fast.pad, x)
        bias = b if b is not None else np.zeros(block.weight_shape[0], x.dtype)
        saved = _Saved(x=x, buffers=buffers, x_padded=x_padded)
        if batch_stats:
            self._conv_batch_norm_fast(block, x_padded, w, bias, norm, buffers, saved)
        else:
            if norm is not None:  # eval with running statistics: folded into the conv
                w, bias = self._folded(block, w, bias, norm)
            if fast.stride != (1, 1):
                self._conv_strided_fast(x_padded, w, bias, buffers)
            elif block.pool is None:
                ops.conv2d_relu_padded(x_padded, w, bias, buffers.y, buffers.out_border, padding=fast.pad)
            else:
                ops.conv2d_relu_padded(x_padded, w, bias, None, (0, 0), pooled=buffers.pooled,
                                       pooled_border=buffers.out_border, indices=buffers.indices, padding=fast.pad)
        self._fast[i] = buffers
        self._saved[i] = saved if training else None
        return buffers.output[1]

    def _forward_lanes(self, i: int, x: Any, w: Any, b: Any, fast: FastPath, out_border: tuple[int, int],
                       out_lanes: bool, training: bool) -> Any:
        """A lanes block: its input into the lanes (unless the previous lanes block left it
        there, in this block's padded layout), the conv, the ReLU (+ pool) into the next
        lanes block's padded input, or, at the end of a run of lanes blocks, back into
        an NCHW buffer bordered by out_border. Returns that NCHW output (None: kept in
        the lanes)."""
        block = self.blocks[i]
        # x is None when the input stays in the lanes: the previous lanes block's output shape
        x_shape = tuple(x.shape) if x is not None else self._fast[i - 1].out_shape
        key = ("lanes", x_shape, np.dtype(w.dtype).str, out_border, out_lanes)  # never a BlockBuffers' key
        name = f"{i}:{'train' if training else 'eval'}"
        buffers = self._workspaces.get(name, key)
        if buffers is None:
            buffers = self._workspaces.keep(name, key, LanesBuffers(
                x_shape, w.dtype, block.weight_shape[2:], fast, out_border, out_lanes, block.pool is not None,
                training))
        previous = self._fast[i - 1] if i > 0 else None
        saved = _Saved(x=x, buffers=buffers)
        if isinstance(previous, LanesBuffers) and previous.out_lanes:
            saved.x_t = previous.out_t  # the previous block's output, bordered by this block's padding
        else:
            saved.x_t = buffers.x_t
            if previous is not None and x is previous.output[1] and previous.out_border == fast.pad:
                saved.x_padded = previous.output[0]  # its border is the padding: the mask's input in backward
                lanes_ops.to_lanes(saved.x_t, saved.x_padded, (0, 0))
            else:
                lanes_ops.to_lanes(saved.x_t, x, fast.pad)
        bias = b if b is not None else np.zeros(block.weight_shape[0], w.dtype)
        lanes_ops.conv(buffers.z_t, saved.x_t, w, bias, fast.stride)
        lanes_ops.relu_pool(buffers.out_t, buffers.which, buffers.z_t, buffers.out_t_border)
        if not out_lanes:
            lanes_ops.from_lanes(buffers.output[1], buffers.out_t)
        self._fast[i] = buffers
        self._saved[i] = saved if training else None
        return buffers.output[1]

    def _conv_batch_norm_fast(self, block: ConvBlock, x_padded: Any, w: Any, bias: Any, norm: NormParams,
                              buffers: BlockBuffers, saved: _Saved) -> None:
        """A batch norm block on its batch's statistics: the conv into z, z's statistics
        (the running ones updated), then normalise + ReLU (+ pool) into the output."""
        ops.conv2d_padded(x_padded, w, bias, buffers.z, buffers.stride)
        update = norm.running_mean is not None
        saved.z = buffers.z
        saved.mean, saved.invstd = ops.batch_norm_statistics(
            buffers.z, norm.running_mean if update else None, norm.running_var if update else None, block.norm.eps,
            norm.momentum)
        scale, shift = ops.batch_norm_scale_shift(saved.mean, saved.invstd,
                                                  *self._affine(norm, block.weight_shape[0], w.dtype))
        ops.batch_norm_relu_padded(buffers.z, scale, shift, buffers.y, buffers.out_border, pooled=buffers.pooled,
                                   pooled_border=buffers.out_border, indices=buffers.indices)

    @staticmethod
    def _conv_strided_fast(x_padded: Any, w: Any, bias: Any, buffers: BlockBuffers) -> None:
        """A strided block without batch statistics: the backend's strided conv into z,
        then its ReLU (+ pool) into the output (``ops.relu_pool_padded``); without a pool,
        ``ops.strided_conv2d_relu_padded`` (a gathered forward writes the ReLU itself)."""
        if buffers.pooled is None:
            ops.strided_conv2d_relu_padded(x_padded, w, bias, buffers.z, buffers.y, buffers.out_border,
                                           buffers.stride)
            return
        ops.conv2d_padded(x_padded, w, bias, buffers.z, buffers.stride)
        ops.relu_pool_padded(buffers.z, buffers.y, buffers.out_border, pooled=buffers.pooled,
                             pooled_border=buffers.out_border, indices=buffers.indices)

    def _folded(self, block: ConvBlock, w: Any, bias: Any, norm: NormParams) -> tuple[Any, Any]:
        """The conv's (weight, bias) with the batch norm's running statistics folded in."""
        invstd = 1.0 / np.sqrt(norm.running_var.astype(np.float64) + block.norm.eps)
        scale, shift = ops.batch_norm_scale_shift(norm.running_mean.astype(np.float64), invstd,
                                                  *self._affine(norm, block.weight_shape[0], w.dtype))
        return ops.fold_batch_norm(w, bias, scale, shift)

    @staticmethod
    def _affine(norm: NormParams, channels: int, dtype: Any) -> tuple[Any, Any]:
        """The batch norm's (weight, bias), ones and zeros without affine."""
        if norm.weight is not None:
            return norm.weight, norm.bias
        return np.ones(channels, dtype), np.zeros(channels, dtype)

    # ----------------------------------------------------------------- backward
    def backward(self, gy: Any, params: Sequence[Params], input_grad: bool = True) -> tuple[Any, list]:
        """gy (the last block's output shape) -> (gx or None, [(gw, gb, gnorm) per block]).

        ``input_grad=False``: the first block skips its input gradient (a network's
        first convolution). gb is returned even for a block without bias (unused);
        gnorm is the batch norm's (gweight, gbias) (unused without affine), or None
        for a block without batch norm."""
        grads: list = [None] * len(self.blocks)
        handoff = Handoff(gy)
        for i, saved in enumerate(self._saved):  # before any work: a block hands its neighbours buffers
            if saved is None:
                raise RuntimeError(f"{self!r}.backward: no cached input for block {i}; call forward in training "
                                   "mode first")
        for i in range(len(self.blocks) - 1, -1, -1):
            saved = self._saved[i]
            mask_input = i > 0 and self.blocks[i - 1].pool is None  # x came out of a ReLU
            wants_input_grad = input_grad if i == 0 else True
            w, _, norm = params[i]
            previous = self._saved[i - 1].buffers if i > 0 and self._saved[i - 1] is not None else None
            if isinstance(saved.buffers, LanesBuffers):
                handoff, grads[i] = self._backward_lanes(saved, w, handoff, wants_input_grad, mask_input, previous)
            elif saved.buffers is not None:
                # a lanes block before this one takes its gradient plain (it has no NCHW gz)
                previous = previous if isinstance(previous, BlockBuffers) else None
                handoff, grads[i] = self._backward_fast(i, saved, w, norm, handoff, wants_input_grad, mask_input,
                                                        previous)
            else:
                handoff, grads[i] = self._backward_composed(i, saved, w, norm, handoff, wants_input_grad, mask_input)
            self._saved[i] = None  # spent, as the layers' caches
        return handoff.grad, grads

    def _backward_composed(self, i: int, saved: _Saved, w: Any, norm: NormParams | None, handoff: Handoff,
                           input_grad: bool, mask_input: bool) -> tuple[Handoff, tuple]:
        block = self.blocks[i]
        if block.pool is not None:
            pool = block.pool
            gz = FF.max_pool2d_relu_backward(handoff.grad, saved.indices, saved.y, pool.kernel_size, pool.stride,
                                             pool.padding, pool.dilation, pool.ceil_mode)
        elif handoff.masked:
            gz = handoff.grad
        else:
            gz = F.relu_backward(handoff.grad, saved.y)
        gnorm = None
        if block.norm is not None:  # gz is the batch norm output's gradient: through its backward
            gz, gnorm_w, gnorm_b = F.batch_norm_backward(gz, saved.z, norm.running_mean, norm.running_var,
                                                         norm.weight, norm.batch_stats, block.norm.eps)
            gnorm = (gnorm_w, gnorm_b)
        gx, gw, gb = FF.conv2d_backward_relu_mask(gz, saved.x, w, block.stride, block.padding, block.dilation,
                                                  block.groups, input_grad=input_grad, mask_input=mask_input)
        return Handoff(gx, masked=mask_input), (gw, gb, gnorm)

    def _backward_fast(self, i: int, saved: _Saved, w: Any, norm: NormParams | None, handoff: Handoff,
                       input_grad: bool, mask_input: bool, previous: BlockBuffers | None) -> tuple[Handoff, tuple]:
        buffers = saved.buffers
        gy = np.asarray(handoff.grad)
        weight = self._affine(norm, w.shape[0], w.dtype)[0] if buffers.batch_norm else None
        gnorm = None
        if buffers.batch_norm and self.blocks[i].pool is not None:
            # pool backward, ReLU mask and batch norm backward in one kernel: the batch
            # norm output's gradient (zero but at the windows' maxima) is never stored
            gnorm = ops.batch_norm_pool_backward_padded(buffers.gconv, buffers.gconv_border,
                                                        gy.reshape(buffers.pooled_shape), buffers.indices,
                                                        buffers.pooled, buffers.out_border, saved.z, saved.mean,
                                                        saved.invstd, weight, also=buffers.gconv_by_1)
        else:
            self._output_gradient_into_gz(self.blocks[i].pool is not None, buffers, gy, handoff)
            if buffers.batch_norm:  # buffers.gz is the batch norm output's gradient: through its backward
                gnorm = ops.batch_norm_backward_padded(buffers.gconv, buffers.gconv_border, buffers.gz, saved.z,
                                                       saved.mean, saved.invstd, weight, also=buffers.gconv_by_1)
        gconv, gconv_border = buffers.gconv, buffers.gconv_border
        if buffers.stride != (1, 1):
            return self._backward_strided(saved, w, gnorm, input_grad, mask_input, previous)
        common = dict(gz_bordered_by_1=buffers.gconv_by_1)
        x_padded, pad = saved.x_padded, buffers.pad
        if not input_grad:
            gw, gb = ops.conv2d_backward_padded(gconv, gconv_border, x_padded, w, pad, **common)
            return Handoff(None), (gw, gb, gnorm)
        if mask_input and previous is not None:
            # straight into the previous block's bordered output gradient, through its ReLU mask
            gw, gb = ops.conv2d_backward_padded(gconv, gconv_border, x_padded, w, pad, gx=previous.gz,
                                                gx_border=previous.gz_border, mask=x_padded, mask_border=pad,
                                                gx_also=previous.gz_by_1, gx_also_border=(1, 1), **common)
            return Handoff(previous.gz_view, masked=True, by_1_written=previous.gz_by_1 is not None), (gw, gb, gnorm)
        gw, gb = ops.conv2d_backward_padded(gconv, gconv_border, x_padded, w, pad, gx=buffers.gx,
                                            mask=x_padded if mask_input else None, mask_border=pad, **common)
        return Handoff(buffers.gx, masked=mask_input), (gw, gb, gnorm)

    @staticmethod
    def _output_gradient_into_gz(pooled: bool, buffers: BlockBuffers, gy: Any, handoff: Handoff) -> None:
        """The block's output gradient gy into buffers.gz (the ReLU input's gradient):
        the pool's backward through the ReLU mask, or the mask alone, or nothing where
        the next block already wrote it there masked."""
        # buffers.gz_by_1 (3x3 without padding) holds the same gradient with another
        # border; the kernels that write buffers.gz write it too where they can
        by_1_written = handoff.by_1_written
        if pooled:
            ops.max_pool2d_relu_backward_padded(buffers.gz, buffers.gz_border, gy.reshape(buffers.pooled_shape),
                                                buffers.indices, buffers.pooled, buffers.out_border,
                                                also=buffers.gz_by_1, also_border=(1, 1))
            by_1_written = True
        elif handoff.masked:
            if gy is not buffers.gz_view:  # handed over by a composed block
                ops.copy_into_border(buffers.gz, buffers.gz_border, gy.reshape(buffers.y_shape))
                by_1_written = False
        else:
            ops.relu_backward_padded(buffers.gz, buffers.gz_border, gy.reshape(buffers.y_shape), buffers.y_view)
            by_1_written = False
        if buffers.gz_by_1 is not None and not by_1_written:
            ops.copy_interior(buffers.gz_by_1, (1, 1), buffers.gz, buffers.gz_border)

    @staticmethod
    def _backward_strided(saved: _Saved, w: Any, gnorm: Any, input_grad: bool, mask_input: bool,
                          previous: BlockBuffers | None) -> tuple[Handoff, tuple]:
        """A strided block's conv backward (its gconv is plain): the backend's strided
        kernels, then the input gradient through the previous block's ReLU mask, read
        from this block's padded input, straight into the previous block's bordered
        output gradient where that block is fast."""
        buffers, x_padded = saved.buffers, saved.x_padded
        gx = buffers.gx if input_grad else None
        gw, gb = ops.strided_conv2d_backward(buffers.gconv, x_padded, w, buffers.stride, buffers.pad, gx)
        if not input_grad:
            return Handoff(None), (gw, gb, gnorm)
        if mask_input and previous is not None:
            ops.relu_backward_padded(previous.gz, previous.gz_border, gx, x_padded, y_border=buffers.pad)
            return Handoff(previous.gz_view, masked=True), (gw, gb, gnorm)
        if mask_input:
            ops.relu_backward_padded(gx, (0, 0), gx, x_padded, y_border=buffers.pad)
        return Handoff(gx, masked=mask_input), (gw, gb, gnorm)

    @staticmethod
    def _backward_lanes(saved: _Saved, w: Any, handoff: Handoff, input_grad: bool, mask_input: bool,
                        previous: Any) -> tuple[Handoff, tuple]:
        """A lanes block's backward: its output gradient into the lanes (unless the next
        lanes block wrote it there), through the pool and the ReLU mask into the conv
        output's gradient, then the LANES grad-weight, bias and grad-input. The input
        gradient goes to a previous lanes block in the lanes (through its ReLU mask when
        it has no pool), else back to NCHW: into the previous fast block's bordered
        output gradient through its ReLU's mask, or plain."""
        buffers = saved.buffers
        if not (handoff.in_lanes and handoff.grad is None):  # else: written, masked, by the next lanes block
            gy_t = handoff.grad
            if not handoff.in_lanes:
                gy_t = buffers.gy_t
                lanes_ops.to_lanes(gy_t, np.asarray(handoff.grad).reshape(buffers.out_shape), (0, 0))
            lanes_ops.output_gradient(buffers.gz_t, gy_t, buffers.z_t, buffers.which, buffers.gz_border,
                                      masked=handoff.masked)
        gw, gb = lanes_ops.weight_bias_gradient(buffers.gz_t, buffers.gz_border, saved.x_t, w, buffers.stride)
        if not input_grad:
            return Handoff(None), (gw, gb, None)
        lanes_ops.input_gradient(buffers.dx_t, buffers.gz_t, w, buffers.stride, buffers.pad)
        if isinstance(previous, LanesBuffers):
            if previous.has_pool:  # its pool's backward reads the gradient in the lanes
                return Handoff(buffers.dx_t, in_lanes=True), (gw, gb, None)
            # its ReLU's backward, into its gradient buffer
            lanes_ops.output_gradient(previous.gz_t, buffers.dx_t, previous.z_t, None, previous.gz_border)
            return Handoff(None, masked=True, in_lanes=True), (gw, gb, None)
        lanes_ops.from_lanes(buffers.gx, buffers.dx_t)
        if not mask_input:
            return Handoff(buffers.gx), (gw, gb, None)
        # the previous block's ReLU output is this block's input: its padded buffer, or x itself
        y, y_border = (saved.x_padded, buffers.pad) if saved.x_padded is not None else (saved.x, None)
        if isinstance(previous, BlockBuffers):
            ops.relu_backward_padded(previous.gz, previous.gz_border, buffers.gx, y, y_border=y_border)
            return Handoff(previous.gz_view, masked=True), (gw, gb, None)
        ops.relu_backward_padded(buffers.gx, (0, 0), buffers.gx, y, y_border=y_border)
        return Handoff(buffers.gx, masked=True), (gw, gb, None)
