"""Which kernel runs: for each layer (or fused group) of a model, the kernels that run
forward and backward on a device for an input shape, where they are (file:line) and
why that one. What ``numbacnn info --kernels`` prints.

The answer comes from the same rules the code runs: ``nn/fusion.plan`` (which layers
are fused), ``numbacnn.fused.fast_path`` (whether a fused group takes the CPU fast
path) and the ``choose_*`` functions of ``kernels/cpu/conv.py`` (which convolution
variant the functional ops pick). ``tests/test_kernel_choices.py`` counts the kernel
calls of a real training step and holds them equal to this list.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from numbacnn.device import backend
from numbacnn.fused import FastPath, fast_path
from numbacnn.nn import (BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential)
from numbacnn.nn.fusion import FusedChain, group_norm, group_pool, plan
from numbacnn.report.layers import explainer_names

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # above numbacnn/


@dataclass(frozen=True)
class KernelChoice:
    """One kernel that runs for one layer or fused group.

    Attributes
    ----------
    layers : str
        The layer's CNN Explainer name and dotted name, e.g. ``"conv_1_1 (features.0)"``;
        a fused group lists its layers joined by `` + ``.
    names : tuple of str
        The dotted names of those layers, e.g. ``("features.0", "features.1")``.
    direction : str
        ``"forward"``, ``"grad-input"``, ``"grad-weight"``, ``"grad-bias"``, or
        ``"backward"`` (an elementwise or pooling layer's one backward kernel).
    kernel : str
        ``module.function`` inside ``numbacnn/kernels/<device>/``, e.g.
        ``"conv_rows.conv_rows_kernel"``; ``"-"`` where no kernel runs (a reshape).
    location : str
        ``path:line`` of the kernel's definition (a factory's, for kernels built per
        shape), relative to the repository root.
    why : str
        The rule's reason, e.g. ``"3x3, stride 1, 10 filters: fused conv+ReLU+pool rows"``.
    """

    layers: str
    names: tuple
    direction: str
    kernel: str
    location: str
    why: str


def where(function: Any) -> str:
    """``path:line`` of a Python or Numba function's definition (repository-relative)."""
    function = getattr(function, "py_func", function)  # a Numba dispatcher's Python function
    function = getattr(function, "__wrapped__", function)  # a factory under functools.lru_cache
    path = inspect.getsourcefile(function)
    lines, line = inspect.getsourcelines(function)
    line += next(i for i, text in enumerate(lines) if text.lstrip().startswith("def "))  # past the decorators
    return f"{os.path.relpath(path, _ROOT)}:{line}"


def _kernel(module_name: str, function_name: str, device: str) -> tuple[str, str]:
    """(``module.function``, location) of a backend kernel."""
    module = getattr(backend(device), module_name)
    return f"{module_name}.{function_name}", where(getattr(module, function_name))


def kernel_choices(model: Module, input_shape: Sequence[int], device: str = "cpu", dtype: Any = np.float32,
                   training: bool = True) -> list[KernelChoice]:
    """Every kernel a forward (and, with ``training``, a backward) of ``model`` runs.

    Parameters
    ----------
    model : Module
        A Sequential of layers (nested Sequentials allowed), e.g. ``tiny_vgg(...)``.
    input_shape : (N, C, H, W)
    device : "cpu" or "cuda"
    dtype : float32 or float64
    training : bool
        Include the backward kernels (the first layer skips its input gradient, as
        ``numbacnn train`` does).

    Returns
    -------
    list of KernelChoice, in the order the forward runs the layers.
    """
    leaves = _leaves(model)
    names = dict(zip((id(layer) for _, layer in leaves), explainer_names([layer for _, layer in leaves])))
    labels = {id(layer): f"{names[id(layer)]} ({name})" for name, layer in leaves}
    choices: list[KernelChoice] = []
    shape = tuple(int(s) for s in input_shape)
    first = True
    for steps in _sequentials(model):
        for step in steps:
            if isinstance(step, FusedChain):
                shape = _chain_choices(step, shape, device, dtype, training, first, labels, choices)
                first = False
                continue
            _layer_choices(step, shape, device, training, first, labels[id(step)], choices, dtype)
            shape = step.output_shape(shape)
            first = False
    return choices


def _leaves(model: Module) -> list[tuple[str, Module]]:
    return [(name, layer) for name, layer in model.named_modules() if not isinstance(layer, Sequential)]


def _sequentials(model: Module) -> list[list]:
    """The fusion plans of the innermost Sequentials, in forward order."""
    if not isinstance(model, Sequential):
        return [[model]]
    children = list(model)
    if children and all(isinstance(child, Sequential) for child in children):
        return [steps for child in children for steps in _sequentials(child)]
    return [plan(children)]


def _add(choices: list, label: str, direction: str, device: str, module: str, function: str, why: str) -> None:
    kernel, location = _kernel(module, function, device)
    choices.append(KernelChoice(label, _names(label), direction, kernel, location, why))


def _fft_size(block: Any, shape: tuple, path: FastPath) -> int:
    """N of the FFT a fast stride-1 block's forward and grad-input take (``conv_tuning.fft_size_for``), or 0."""
    filters, channels, kernel_h, kernel_w = block.weight_shape
    return backend("cpu").conv_tuning.fft_size_for(filters, channels, kernel_h, kernel_w, shape[2], shape[3],
                                                   *path.pad, shape[0])


def _fft_choices(choices: list, label: str, direction: str, device: str, n: int, what: str) -> None:
    """The three kernels of a conv by FFT (``kernels/cpu/conv_fft.py``)."""
    _add(choices, label, direction, device, "conv_fft", "spectra",
         f"{what}: {n}x{n} FFTs of the planes (and of the wrapped kernels), the images in the vector lanes")
    _add(choices, label, direction, device, "conv_fft", "products",
         "per frequency, kernel spectra times plane spectra summed over the channels")
    _add(choices, label, direction, device, "conv_fft", "planes", "the inverse FFTs, cropped, into the output")


def _names(label: str) -> tuple:
    """("features.0", "features.1") from "conv_1_1 (features.0) + relu_1_1 (features.1)"."""
    return tuple(part.split(" (")[1].rstrip(")") for part in label.split(" + "))


def _chain_choices(chain: FusedChain, shape: tuple, device: str, dtype: Any, training: bool, first: bool,
                   labels: dict, choices: list) -> tuple:
    blocks = chain.blocks()
    bias_dtypes = [dtype if group[0].bias is not None else None for group in chain.groups]
    paths, block_shape = [], shape  # each block asked on its own input shape, as the chain does
    for group, block, bias_dtype in zip(chain.groups, blocks, bias_dtypes):
        # a frozen batch norm (the layer in eval mode, its conv training: fine-tuning)
        # under a training step: the chain's rule for it, as the chain asks it
        norm = group_norm(group)
        frozen_norm = training and norm is not None and group[0].training and not norm.uses_batch_stats()
        paths.append(fast_path(block, block_shape, dtype, dtype, bias_dtype, device, frozen_norm))
        block_shape = group[0].output_shape(block_shape)
        if group_pool(group) is not None:
            block_shape = group_pool(group).output_shape(block_shape)
    for i, (group, block, path) in enumerate(zip(chain.groups, blocks, paths)):
        label = " + ".join(labels[id(layer)] for layer in group)
        conv = group[0]
        filters, channels, kernel_h, kernel_w = block.weight_shape
        size = f"{kernel_h}x{kernel_w}, stride 1, {filters} filters"
        if isinstance(path, FastPath) and path.lanes:
            lanes = [isinstance(p, FastPath) and p.lanes for p in paths]
            _lanes_block_choices(group, path, device, training, first and i == 0, label, choices,
                                 previous_lanes=i > 0 and lanes[i - 1], next_lanes=i + 1 < len(blocks) and lanes[i + 1],
                                 masked=i > 0 and blocks[i - 1].pool is None, last=i + 1 == len(blocks))
            shape = path.out_shape
        elif isinstance(path, FastPath) and path.stride != (1, 1):
            _strided_block_choices(group, path, shape, device, training, first and i == 0, label, choices,
                                   copy_input=i == 0 or not isinstance(paths[i - 1], FastPath),
                                   masked=i > 0 and blocks[i - 1].pool is None,
                                   last=i + 1 == len(blocks),
                                   next_fast=i + 1 < len(blocks) and isinstance(paths[i + 1], FastPath),
                                   dtype=dtype)
            shape = path.out_shape
        elif isinstance(path, FastPath):
            pooled = block.pool is not None
            norm = group_norm(group)
            winograd = _winograd_note(kernel_h, kernel_w, path.y_shape, channels, dtype)
            batch_stats = norm is not None and (training or not norm.track_running_stats)
            if i == 0 or not isinstance(paths[i - 1], FastPath):
                _add(choices, label, "forward", device, "bordered", "copy_into_border_kernel",
                     "the input into the zero-bordered buffer the row kernel reads")
            what = "conv+ReLU+2x2 pool" if pooled else "conv+ReLU"
            if batch_stats:
                _add(choices, label, "forward", device, "conv_rows", "conv_rows_kernel",
                     f"{size}: conv rows into z, the batch norm's input (MODE_BIAS)" + winograd)
                _add(choices, label, "forward", device, "norm", "batch_norm_stats_planes",
                     "z's batch statistics, planes summed vectorised")
                if pooled:
                    _add(choices, label, "forward", device, "norm", "batch_norm_relu_pool2x2_kernel",
                         "normalise + ReLU + 2x2 pool with indices, into the next block's buffer")
                else:
                    _add(choices, label, "forward", device, "norm", "batch_norm_relu_kernel",
                         "normalise + ReLU into the next block's bordered input")
            else:
                folded = " (the batch norm's running statistics folded into the weights)" if norm is not None else ""
                fft = _fft_size(block, shape, path)
                if fft:
                    _fft_choices(choices, label, "forward", device, fft, f"{size}: the conv by FFT" + folded)
                    _relu_pool_choices(choices, label, device, pooled, _RELU_BY_NORMALISE)
                elif side_by_side(path.y_shape, dtype):
                    _add(choices, label, "forward", device, "conv_rows", "conv_rows_kernel",
                         f"{size}: {path.y_shape[3]}-column rows, the images side by side in one row (MODE_RELU)"
                         + folded)
                    _add(choices, label, "forward", device, "conv_small_maps", "unpack_relu_pool_kernel",
                         f"each image's outputs out of the packed rows{', 2x2-pooled with indices' if pooled else ''}")
                else:
                    _add(choices, label, "forward", device, "conv_rows", "conv_rows_kernel",
                         (f"{size}: fused {what} rows (MODE_RELU_POOL)" if pooled else
                          f"{size}: fused {what} rows (MODE_RELU)") + winograd + folded)
            if training:
                next_fast = i + 1 < len(blocks) and isinstance(paths[i + 1], FastPath)
                _output_gradient_choices(choices, label, device, pooled=pooled, last=i + 1 == len(blocks),
                                         next_fast=next_fast, batch_norm=norm is not None)
                # (only without batch norm: listed after its backward's place, the order is the chain's;
                # a stride-1 NCHW next block writes this copy itself, a strided or lanes one does not)
                next_writes_copy = next_fast and paths[i + 1].stride == (1, 1) and not paths[i + 1].lanes
                if not pooled and path.pad == (0, 0) and (kernel_h, kernel_w) == (3, 3) and not next_writes_copy \
                        and norm is None:
                    _add(choices, label, "backward", device, "bordered", "copy_interior_kernel",
                         "the gradient again, bordered by 1, for the whole-plane grad-weight")
                if backend("cpu").conv.lanes_weight_gradient_at_stride_1(path.y_shape[0], path.y_shape[3]):
                    _add(choices, label, "grad-weight", device, "conv_lanes", "weight_gradient_lanes_kernel",
                         f"{size}: {path.y_shape[3]}-column output rows, the {path.y_shape[0]} images in the "
                         "vector lanes, float64 across rows and images")
                    _add(choices, label, "grad-bias", device, "conv", "conv2d_backward_bias",
                         "float64 partial sums")
                elif (kernel_h, kernel_w) == (3, 3) and path.pad in ((0, 0), (1, 1)):
                    _add(choices, label, "grad-weight", device, "conv_weight_grad", "weight_bias_gradient_3x3_kernel",
                         "3x3 with padding 0 or 1: whole planes as single dot products, with the bias")
                elif winograd:
                    _add(choices, label, "grad-weight", device, "conv_weight_grad", "weight_gradient_winograd_kernel",
                         f"{size}: whole transformed planes" + winograd + ", bias in the same pass")
                else:
                    by_planes = backend("cpu").conv_tuning.weight_gradient_by_planes(kernel_h, kernel_w)
                    _add(choices, label, "grad-weight", device, "conv_weight_grad", "weight_gradient_kernel",
                         f"{size}: {'whole planes, kernel rows looped' if by_planes else 'row dot products'}, "
                         "bias in the same pass")
                if not (first and i == 0):
                    masked = i > 0 and blocks[i - 1].pool is None
                    in_height = shape[2]
                    fft = _fft_size(block, shape, path)
                    if fft:
                        _fft_choices(choices, label, "grad-input", device, fft,
                                     "the flipped-kernel correlation by FFT"
                                     + (", times the previous ReLU's mask" if masked else ""))
                    elif channels >= backend("cpu").conv_tuning.MIN_FILTERS and side_by_side(shape, dtype):
                        _add(choices, label, "grad-input", device, "conv_rows", "conv_rows_kernel",
                             f"flipped-kernel rows, {shape[3]}-column rows with the images side by side")
                        _add(choices, label, "grad-input", device, "conv_small_maps", "unpack_masked_kernel",
                             "each image's gradient out of the packed rows"
                             + (", times the previous ReLU's mask" if masked else ""))
                    elif channels >= backend("cpu").conv_tuning.MIN_FILTERS and in_height >= 2:
                        _add(choices, label, "grad-input", device, "conv_rows", "conv_rows_kernel",
                             "flipped-kernel rows" + (" times the previous ReLU's mask (MODE_MASK)" if masked
                                                      else " (MODE_BIAS)")
                             + _winograd_note(kernel_h, kernel_w, shape, filters, dtype))
                    else:
                        _add(choices, label, "grad-input", device, "conv", "conv2d_backward_input_general",
                             f"{channels} input channels (the row kernels need "
                             f"{backend('cpu').conv_tuning.MIN_FILTERS} or more)")
            shape = path.out_shape
        else:
            why = f"composed ops ({path})"  # each layer's own kernels, labelled by layer
            _conv_choices(conv, shape, device, training, first and i == 0, labels[id(conv)], choices, why,
                          dtype=dtype)
            shape = conv.output_shape(shape)
            if group_norm(group) is not None:
                _layer_choices(group_norm(group), shape, device, training, False, labels[id(group_norm(group))],
                               choices, dtype)
            relu_label = labels[id(group[2 if group_norm(group) is not None else 1])]
            _add(choices, relu_label, "forward", device, "activation", "relu_forward", "ReLU of the composed group")
            if training:
                _add(choices, relu_label, "backward", device, "activation", "relu_backward", "ReLU mask")
            if block.pool is not None:
                pool = group_pool(group)
                _pool_choices(pool, shape, device, training, labels[id(pool)], choices)
                shape = pool.output_shape(shape)
    return shape


def _winograd_note(kernel_h: int, kernel_w: int, out_shape: tuple, channels: int, dtype: Any) -> str:
    """", by 1-D Winograd F(m, KH) ..." when a stride-1 correlation with output (N, F,
    OH, OW) and ``channels`` input channels sums by Winograd
    (``conv_tuning.winograd_outputs``, as ``fused/bordered_ops.py`` asks it), else ""."""
    outputs = backend("cpu").conv_tuning.winograd_outputs(kernel_h, kernel_w, out_shape[2], out_shape[3],
                                                          np.dtype(dtype).itemsize, channels)
    if not outputs:
        return ""
    return (f", by 1-D Winograd F({outputs}, {kernel_h}) down the columns "
            f"({outputs + kernel_h - 1} multiply-adds per {outputs} rows, not {outputs * kernel_h})")


def side_by_side(map_shape: tuple, dtype: Any) -> bool:
    """Whether a fused stride-1 conv whose output (or, for its grad-input, whose input)
    is ``map_shape`` (N, C, H, W) packs the images side by side: the rule
    ``bordered_ops`` asks, ``conv_small_maps.packs_images``."""
    n, _, height, width = map_shape
    return backend("cpu").conv_small_maps.packs_images(width, height, n, np.dtype(dtype).itemsize)


def _conv_choices(conv: Conv2d, shape: tuple, device: str, training: bool, first: bool, label: str, choices: list,
                  context: str = "", *, dtype: Any, fused: bool = False) -> None:
    """The functional conv2d's kernels (``kernels/<device>/conv.py``); its stride-1 fast
    path sums by 1-D Winograd where the fused groups would (``_correlate``,
    ``conv2d_backward_weight``). ``fused``: a strided block of the fused wing
    (``bordered_ops.strided_conv2d_backward``), which computes a bias gradient for every
    block, with or without bias, in the gathered grad-weight's pass where that runs."""
    filters, channels, kernel_h, kernel_w = conv.weight.shape
    (stride_h, stride_w), (dilation_h, dilation_w) = conv.stride, conv.dilation
    out_shape = conv.output_shape(shape)
    prefix = f"{context}; " if context else ""

    def with_context(why: str) -> str:
        return context if context and why in context else prefix + why

    def by_winograd(out: tuple, count: int, what: str) -> str:
        """The why of a stride-1 correlation (output ``out``, ``count`` input channels)
        that sums by 1-D Winograd, "" where the rule says no."""
        note = _winograd_note(kernel_h, kernel_w, out, count, dtype)
        return note and prefix + (f"{kernel_h}x{kernel_w}, stride 1, {what}: the fused groups' "
                                  f"kernel, the layer's sizes compiled in{note}")
    if device != "cpu":
        for direction, function in (("forward", "conv2d_forward"), ("grad-input", "conv2d_backward_input"),
                                    ("grad-weight", "conv2d_backward_weight"), ("grad-bias", "conv2d_backward_bias")):
            if direction == "forward" or (training and not (first and direction == "grad-input")):
                _add(choices, label, direction, device, "conv", function, prefix + "the CUDA kernel")
        return
    cpu_conv = backend("cpu").conv
    variant, why = cpu_conv.choose_forward(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w,
                                           conv.groups, out_shape[2], channels, shape[0], out_shape[3])
    if variant == cpu_conv.GATHERED:  # strided, few channels: taps gathered
        _add(choices, label, "forward", device, "conv_gathered", "gathered_forward_kernel", with_context(why))
    elif variant == cpu_conv.LANES:  # strided, narrow rows: the images in the vector lanes
        _add(choices, label, "forward", device, "conv_lanes", "forward_lanes_kernel", with_context(why))
    elif variant == cpu_conv.PHASES:  # strided: the fused groups' row kernel over the phases
        _add(choices, label, "forward", device, "conv_rows", "conv_rows_kernel", with_context(why))
    elif variant == cpu_conv.FAST and (winograd_why := by_winograd(out_shape, channels, f"{filters} filters")):
        _add(choices, label, "forward", device, "conv_rows", "conv_rows_kernel", winograd_why)
    elif variant == cpu_conv.FAST:
        _add(choices, label, "forward", device, "conv_rows", "correlation_kernel", with_context(why))
    else:
        _add(choices, label, "forward", device, "conv", "conv2d_forward_general", with_context(why))
    if not training:
        return
    if not first:
        input_channels = f"{channels * conv.groups} input channels, the flipped kernel"
        pad = conv.padding if not isinstance(conv.padding, str) else (0, 0)
        variant, why = cpu_conv.choose_backward_input(channels * conv.groups, kernel_h, kernel_w, stride_h, stride_w,
                                                      pad[0], pad[1], dilation_h, dilation_w, conv.groups, shape[2],
                                                      shape[0], out_shape[3])
        if variant == cpu_conv.LANES:
            _add(choices, label, "grad-input", device, "conv_lanes", "grad_input_lanes_kernel", with_context(why))
        elif variant == cpu_conv.PHASES:
            _add(choices, label, "grad-input", device, "conv_rows", "conv_rows_kernel", with_context(why))
        elif variant == cpu_conv.FAST and (winograd_why := by_winograd(shape, filters, input_channels)):
            # the forward correlation of the gradient (F channels) with the flipped kernel, C outputs
            _add(choices, label, "grad-input", device, "conv_rows", "conv_rows_kernel", winograd_why)
        elif variant == cpu_conv.FAST:
            _add(choices, label, "grad-input", device, "conv_rows", "correlation_kernel", with_context(why))
        else:
            _add(choices, label, "grad-input", device, "conv", "conv2d_backward_input_general", with_context(why))
    variant, why = cpu_conv.choose_backward_weight(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h,
                                                   dilation_w, conv.groups, shape[0], out_shape[3], channels)
    bias_in_weight_pass = fused and variant == cpu_conv.GATHERED
    if variant == cpu_conv.GATHERED:
        _add(choices, label, "grad-weight", device, "conv_gathered", "gathered_weight_gradient_3x3_kernel",
             with_context(why) + (", with the bias" if bias_in_weight_pass else ""))
    elif variant == cpu_conv.LANES:
        _add(choices, label, "grad-weight", device, "conv_lanes", "weight_gradient_lanes_kernel", with_context(why))
    elif variant == cpu_conv.FAST and (winograd_why := by_winograd(out_shape, channels, f"{filters} filters")):
        _add(choices, label, "grad-weight", device, "conv_weight_grad", "weight_gradient_winograd_kernel",
             winograd_why)
    elif variant in (cpu_conv.FAST, cpu_conv.PHASES):
        _add(choices, label, "grad-weight", device, "conv_weight_grad", "weight_gradient_kernel", with_context(why))
    else:
        _add(choices, label, "grad-weight", device, "conv", "conv2d_backward_weight_general", with_context(why))
    if bias_in_weight_pass:
        return
    if conv.bias is not None:
        _add(choices, label, "grad-bias", device, "conv", "conv2d_backward_bias", prefix + "float64 partial sums")
    elif fused:
        _add(choices, label, "grad-bias", device, "conv", "conv2d_backward_bias",
             f"{context}; computed for every block (unused without bias)")


def _output_gradient_choices(choices: list, label: str, device: str, *, pooled: bool, last: bool, next_fast: bool,
                             batch_norm: bool) -> None:
    """The kernels that bring a fast block's output gradient to its conv (``BlockChain._backward_fast``):
    the pool's backward, or the ReLU mask where no next fast block wrote its gradient
    already masked, then the batch norm's backward (one kernel with the pool's)."""
    if pooled and batch_norm:
        _add(choices, label, "backward", device, "norm", "batch_norm_pool2x2_backward_bordered_kernel",
             "2x2 pool backward from the saved indices, times the ReLU mask, and the batch norm's backward, "
             "in one kernel, into the conv's output gradient buffer")
        return
    if pooled:
        _add(choices, label, "backward", device, "bordered", "max_pool2x2_relu_backward_kernel",
             "2x2 pool backward from the saved indices, times the ReLU mask")
    elif last:
        _add(choices, label, "backward", device, "bordered", "relu_mask_bordered_kernel",
             "ReLU mask into the block's gradient buffer")
    elif not next_fast:
        _add(choices, label, "backward", device, "bordered", "copy_into_border_kernel",
             "the composed next block's masked gradient into the block's gradient buffer")
    if batch_norm:
        _add(choices, label, "backward", device, "norm", "batch_norm_backward_bordered_kernel",
             "the batch norm's backward into the conv's output gradient buffer")


_RELU_BY_NORMALISE = "ReLU (the normalise kernel with scale 1, shift 0)"


def _relu_pool_choices(choices: list, label: str, device: str, pooled: bool, pooled_what: str) -> None:
    """A plain conv output's ReLU (+ pool) into the next block's buffer
    (``bordered_ops.relu_pool_padded``): with a pool, the batch norm blocks' kernel doing
    ``pooled_what`` + the pool; without, the ReLU kernel."""
    if pooled:
        _add(choices, label, "forward", device, "norm", "batch_norm_relu_pool2x2_kernel",
             f"{pooled_what} + 2x2 pool with indices, into the next block's buffer")
    else:
        _add(choices, label, "forward", device, "bordered", "relu_into_border_kernel",
             "ReLU into the next block's bordered input, the row width compiled in")


def _strided_block_choices(group: tuple, path: FastPath, shape: tuple, device: str, training: bool, first: bool,
                           label: str, choices: list, *, copy_input: bool, masked: bool, last: bool,
                           next_fast: bool, dtype: Any) -> None:
    """A strided block on the fast path (``fused/chain.py``, ``BlockChain._conv_strided_fast``
    and ``_backward_strided``): the backend's strided conv kernels, as the functional
    conv2d's, on the bordered buffers, then the batch norm blocks' normalise + ReLU
    (+ pool) kernels (scale 1 and shift 0 without batch norm), or, with neither batch
    norm nor pool, the ReLU into the next block's buffer."""
    conv, norm = group[0], group_norm(group)
    pooled = group_pool(group) is not None
    batch_stats = norm is not None and (training or not norm.track_running_stats)
    if copy_input:
        _add(choices, label, "forward", device, "bordered", "copy_into_border_kernel",
             "the input into the zero-bordered buffer the strided kernels read")
    context = "a strided block on the fast path, padding 0 on the bordered input"
    # ops.strided_conv2d_relu_padded: without batch statistics (a batch norm in eval is folded) and pool
    relu_inside = not batch_stats and not pooled and _gathered(conv, shape)
    if relu_inside:
        context += ", the ReLU written by the forward into the next block's bordered input"
    _conv_choices(conv, shape, device, training, first, label, choices, context, dtype=dtype, fused=True)
    if batch_stats:
        _add(choices, label, "forward", device, "norm", "batch_norm_stats_planes",
             "z's batch statistics, planes summed vectorised")
    if batch_stats and not pooled:
        _add(choices, label, "forward", device, "norm", "batch_norm_relu_kernel",
             "normalise + ReLU into the next block's bordered input")
    elif not relu_inside:
        _relu_pool_choices(choices, label, device, pooled, "normalise + ReLU" if norm is not None
                           else _RELU_BY_NORMALISE)
    if not training:
        return
    _output_gradient_choices(choices, label, device, pooled=pooled, last=last, next_fast=next_fast,
                             batch_norm=norm is not None)
    if masked and not first:
        _add(choices, label, "grad-input", device, "bordered", "relu_mask_bordered_kernel",
             "times the previous ReLU's mask, read from this block's padded input")


def _lanes_block_choices(group: tuple, path: FastPath, device: str, training: bool, first: bool, label: str,
                         choices: list, *, previous_lanes: bool, next_lanes: bool, masked: bool, last: bool) -> None:
    """A lanes block (``fused/chain.py``, ``BlockChain._forward_lanes`` and
    ``_backward_lanes``): the LANES conv kernels at the block's stride and the lanes
    ReLU / pool kernels, the maps kept in the lanes from one lanes block to the next
    (the transposes at the ends of a run, ``conv_lanes.images_last`` / ``images_first``,
    are named in the reasons, not listed)."""
    filters, _, kernel_h, kernel_w = group[0].weight.shape
    batch, _, _, out_width = path.y_shape
    pooled = group_pool(group) is not None
    stride = "x".join(str(s) for s in path.stride)
    size = (f"{kernel_h}x{kernel_w}, stride {stride}, {filters} filters, {out_width}-column output rows: "
            f"the {batch} images in the vector lanes")
    into = "" if previous_lanes else " (the input transposed into the lanes first)"
    _add(choices, label, "forward", device, "conv_lanes", "forward_lanes_kernel", f"{size}, a lanes block{into}")
    out = "into the next lanes block's padded input" if next_lanes else "then back to (N, C, H, W) for the next layer"
    if pooled:
        _add(choices, label, "forward", device, "lanes_blocks", "relu_pool_into_border",
             f"ReLU + 2x2 pool, each window's maximum kept, {out}")
    else:
        _add(choices, label, "forward", device, "bordered", "relu_into_border_kernel",
             f"ReLU {out} (the lanes viewed as rows of W x N values)")
    if not training:
        return
    if pooled:
        _add(choices, label, "backward", device, "lanes_blocks", "pool_relu_backward_into_border",
             "2x2 pool backward at each window's maximum, times the ReLU mask")
    elif last:
        _add(choices, label, "backward", device, "bordered", "relu_mask_bordered_kernel",
             "the ReLU mask (the output gradient transposed into the lanes first; the lanes viewed as rows)")
    elif not next_lanes:
        _add(choices, label, "backward", device, "bordered", "copy_into_border_kernel",
             "the next block's masked gradient, transposed into the lanes (the lanes viewed as rows)")
    _add(choices, label, "grad-weight", device, "conv_lanes", "weight_gradient_lanes_kernel",
         f"{size}, float64 across rows and images")
    _add(choices, label, "grad-bias", device, "conv", "conv2d_backward_bias",
         "float64 partial sums over the bordered gradient buffer, the lanes viewed as rows of images")
    if first:
        return
    _add(choices, label, "grad-input", device, "conv_lanes", "grad_input_lanes_kernel",
         "each input element's phase taps summed" + ("" if previous_lanes else ", then back to (N, C, H, W)"))
    if previous_lanes and masked:
        _add(choices, label, "grad-input", device, "bordered", "relu_mask_bordered_kernel",
             "times the previous block's ReLU mask, into its gradient buffer (the lanes viewed as rows)")
    elif masked:
        _add(choices, label, "grad-input", device, "bordered", "relu_mask_bordered_kernel",
             "times the previous ReLU's mask")


def _gathered(conv: Conv2d, shape: tuple) -> bool:
    """Whether a strided conv's forward gathers its taps (``conv.GATHERED``)."""
    cpu_conv = backend("cpu").conv
    filters, channels, kernel_h, kernel_w = conv.weight.shape
    out_shape = conv.output_shape(shape)
    variant, _ = cpu_conv.choose_forward(filters, kernel_h, kernel_w, *conv.stride, *conv.dilation, conv.groups,
                                         out_shape[2], channels, shape[0], out_shape[3])
    return variant == cpu_conv.GATHERED


def _pool_choices(pool: MaxPool2d, shape: tuple, device: str, training: bool, label: str, choices: list) -> None:
    plain = (pool.kernel_size == (2, 2) and pool.stride == (2, 2) and pool.padding == (0, 0)
             and pool.dilation == (1, 1) and not (pool.ceil_mode and (shape[2] % 2 or shape[3] % 2)))
    if device == "cpu" and plain:
        _add(choices, label, "forward", device, "pool", "max_pool2x2_forward", "2x2, stride 2: one pass per row")
        if training:
            _add(choices, label, "backward", device, "pool", "max_pool2x2_backward", "2x2, stride 2")
    else:
        _add(choices, label, "forward", device, "pool", "max_pool2d_forward_general" if device == "cpu" else
             "max_pool2d_forward", "general windows")
        if training:
            _add(choices, label, "backward", device, "pool", "max_pool2d_backward_general" if device == "cpu" else
                 "max_pool2d_backward", "general windows")


def _layer_choices(layer: Module, shape: tuple, device: str, training: bool, first: bool, label: str,
                   choices: list, dtype: Any) -> None:
    if isinstance(layer, Conv2d):
        _conv_choices(layer, shape, device, training, first, label, choices, dtype=dtype)
    elif isinstance(layer, ReLU):
        _add(choices, label, "forward", device, "activation", "relu_forward", "elementwise")
        if training:
            _add(choices, label, "backward", device, "activation", "relu_backward", "elementwise")
    elif isinstance(layer, MaxPool2d):
        _pool_choices(layer, shape, device, training, label, choices)
    elif isinstance(layer, Linear):
        _add(choices, label, "forward", device, "linear", "linear_forward", "matrix product")
        if training:
            if not first:
                _add(choices, label, "grad-input", device, "linear", "linear_backward_input", "matrix product")
            _add(choices, label, "grad-weight", device, "linear", "linear_backward_weight", "matrix product")
            if layer.bias is not None:
                _add(choices, label, "grad-bias", device, "conv", "conv2d_backward_bias",
                     "the gradient viewed as (N, OUT, 1, 1)")
    elif isinstance(layer, BatchNorm2d):
        # the batch's statistics in a training step, or without running statistics; a
        # layer in eval mode while the step trains (frozen, fine-tuning) uses its running ones
        batch_stats = not layer.track_running_stats or (training and layer.training)
        _add(choices, label, "forward", device, "norm", "batch_norm_stats",
             "per-channel batch statistics" if batch_stats else "1 / sqrt(running variance + eps) per channel")
        _add(choices, label, "forward", device, "norm", "batch_norm_forward", "normalise, scale, shift")
        if training:
            _add(choices, label, "backward", device, "norm", "batch_norm_backward",
                 "per channel" if device == "cpu" else "(channel, part) block sums, then per element")
    elif isinstance(layer, Dropout):
        _add(choices, label, "forward", device, "dropout", "dropout_apply", "mask from a seeded generator")
        if training:
            _add(choices, label, "backward", device, "dropout", "dropout_apply", "the same mask")
    elif isinstance(layer, Flatten):
        choices.append(KernelChoice(label, _names(label), "forward", "-", "-", "a reshape: no kernel"))
    else:
        choices.append(KernelChoice(label, _names(label), "forward", "-", "-",
                                    f"{type(layer).__name__}: not catalogued"))


def forward_kernel_sources(model: Module, input_shape: Sequence[int], dtype: Any = np.float32) -> dict[str, str]:
    """{dotted layer name: "module.function at path:line"} of the main forward kernel of
    each layer on the CPU (the one computing its output; a fused group's layers share
    it): what ``numbacnn explore`` links each layer to."""
    sources: dict[str, str] = {}
    for choice in kernel_choices(model, input_shape, "cpu", dtype, training=False):
        if choice.kernel == "-" or choice.kernel.startswith("bordered."):
            continue  # a reshape, or a copy into a bordered buffer
        for name in choice.names:
            sources[name] = f"{choice.kernel} at {choice.location}"
    return sources


def format_kernel_choices(choices: Sequence[KernelChoice]) -> str:
    """The table ``numbacnn info --kernels`` prints: for each layer or fused group, each
    pass's kernel, its file:line and why. The layer column gives CNN Explainer's names on
    the group's first row and the dotted names (``features.0``) on its second."""
    groups: list[list[KernelChoice]] = []
    for choice in choices:
        if groups and groups[-1][0].layers == choice.layers:
            groups[-1].append(choice)
        else:
            groups.append([choice])
    rows = [("layer", "pass", "kernel", "where", "why")]
    for group in groups:
        explainer = " + ".join(part.split(" (")[0] for part in group[0].layers.split(" + "))
        dotted = "(" + ", ".join(group[0].names) + ")"
        labels = [explainer, dotted] + [""] * len(group)
        for label, c in zip(labels, group):
            rows.append((label, c.direction, c.kernel.split(".")[-1], c.location, c.why))
        if len(group) == 1:
            rows.append((dotted, "", "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([row[0].ljust(widths[0]), *(row[i].ljust(widths[i]) for i in (1, 2, 3)),
                                row[4]]).rstrip() for row in rows)
