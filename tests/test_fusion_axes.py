"""Every per-axis hyperparameter of every fused or fast path, through the public API.

A ``Sequential`` may run ``Conv2d -> ReLU (-> MaxPool2d)`` (and, when the fused wing
learns them, ``Conv2d -> BatchNorm2d -> ReLU (-> MaxPool2d)`` and whole Tiny VGG
blocks) as one fused group, choosing a fast kernel when the hyperparameters allow.
The choice looks at each axis separately, so a slip that reads one axis twice
(``stride[0]`` for the width stride, the height padding for the width border)
passes every test whose hyperparameters are the same on both axes. Here each case
differs between the axes: stride (1, 2) / (2, 1), padding (0, 1) / (1, 0) / (2, 1),
kernels (3, 5) / (5, 3), dilation (1, 2) / (2, 1), groups 2, no bias, batch 1, odd
sizes, 1 / 3 / 4 / 8 / 10 channels, float32 and float64.

Each case runs one training step (forward, a fixed output gradient, backward) three
ways and holds them equal:

- the ``Sequential`` (fused wherever it chooses to fuse),
- the same layers called one by one (each layer on its own never fuses; this does
  not rely on ``numbacnn.nn.fusion`` existing),
- the float64 NumPy reference of ``tests/reference.py``, layer by layer.

Compared: the output (shape first: a wrong eligibility decision shows as a wrong
shape), the input gradient, every parameter gradient, and BatchNorm's running
statistics.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import reference as ref
from helpers import DTYPES, assert_close, random_array
from numbacnn import nn

# fused vs layer by layer: the same arithmetic up to summation order
SAME_MATH_TOLERANCE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def _relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale else float(np.linalg.norm(a - b))


# --------------------------------------------------------------------------- cases
# (name, input shape (N, C, H, W), expected output shape, layers(dtype, rng))
# The expected output shapes are worked out by hand (not by numbacnn.shapes), so a
# path that computes a size from the wrong axis fails on the shape alone.


def _conv(c_in, c_out, kernel, **kw):
    return lambda dtype, rng: nn.Conv2d(c_in, c_out, kernel, dtype=dtype, rng=rng, **kw)


def _bn(c):
    return lambda dtype, rng: nn.BatchNorm2d(c, dtype=dtype)


def _relu():
    return lambda dtype, rng: nn.ReLU()


def _pool(kernel, **kw):
    return lambda dtype, rng: nn.MaxPool2d(kernel, **kw)


CASES = [
    # ---- Conv2d -> ReLU
    # the example: stride (1, 2) taken for (1, 1) gave (2, 8, 9, 11)
    ("CR stride (1,2)", (2, 3, 9, 11), (2, 8, 9, 6), [_conv(3, 8, 3, stride=(1, 2), padding=1), _relu()]),
    ("CR stride (2,1)", (2, 3, 11, 9), (2, 8, 6, 9), [_conv(3, 8, 3, stride=(2, 1), padding=1), _relu()]),
    ("CR padding (0,1)", (3, 1, 8, 9), (3, 4, 6, 9), [_conv(1, 4, 3, padding=(0, 1)), _relu()]),
    ("CR padding (1,0)", (3, 1, 9, 8), (3, 4, 9, 6), [_conv(1, 4, 3, padding=(1, 0)), _relu()]),
    ("CR padding (2,1)", (2, 4, 7, 10), (2, 10, 9, 10), [_conv(4, 10, 3, padding=(2, 1)), _relu()]),
    ("CR kernel (3,5)", (2, 3, 9, 12), (2, 8, 9, 12), [_conv(3, 8, (3, 5), padding=(1, 2)), _relu()]),
    ("CR kernel (5,3) pad (2,1)", (1, 4, 11, 7), (1, 4, 11, 7), [_conv(4, 4, (5, 3), padding=(2, 1)), _relu()]),
    # padding as large as the kernel's width: legal, never on the bordered fast path
    ("CR kernel (5,3) pad (2,3)", (2, 3, 9, 6), (2, 4, 9, 10), [_conv(3, 4, (5, 3), padding=(2, 3)), _relu()]),
    ("CR kernel (5,3) no pad", (2, 3, 11, 7), (2, 10, 7, 5), [_conv(3, 10, (5, 3)), _relu()]),
    ("CR dilation (1,2)", (2, 3, 9, 11), (2, 8, 9, 9), [_conv(3, 8, 3, padding=1, dilation=(1, 2)), _relu()]),
    ("CR dilation (2,1)", (2, 3, 11, 9), (2, 8, 9, 9), [_conv(3, 8, 3, padding=1, dilation=(2, 1)), _relu()]),
    ("CR groups 2", (2, 4, 9, 10), (2, 8, 9, 10), [_conv(4, 8, 3, padding=1, groups=2), _relu()]),
    # no bias, batch 1 and odd sizes in one case (each case compiles its own fused kernels:
    # 15-17 s of CI); the 10 -> 10 filters at padding (0, 1) of the batch-1 case it replaced
    # run in "block pads (1,0)/(0,1)"'s second conv, batch 1 in "CR kernel (5,3) pad (2,1)" too
    ("CR no bias batch 1 odd", (1, 8, 9, 11), (1, 10, 9, 9), [_conv(8, 10, 3, padding=(1, 0), bias=False),
                                                               _relu()]),
    ("CR 3 filters", (2, 3, 9, 11), (2, 3, 9, 6), [_conv(3, 3, 3, stride=(1, 2), padding=1), _relu()]),
    # ---- Conv2d -> ReLU -> MaxPool2d
    # the strided convs of "CR stride (1,2)" and "CR stride (2,1)" (same input, filters and
    # output size: the same compiled conv kernels, 33 s less CI), here followed by a pool
    ("CRP stride (1,2)", (2, 3, 9, 11), (2, 8, 4, 3), [_conv(3, 8, 3, stride=(1, 2), padding=1), _relu(),
                                                        _pool(2)]),
    ("CRP stride (2,1)", (2, 3, 11, 9), (2, 8, 3, 4), [_conv(3, 8, 3, stride=(2, 1), padding=1), _relu(),
                                                        _pool(2)]),
    ("CRP padding (0,1)", (2, 4, 10, 9), (2, 8, 4, 4), [_conv(4, 8, 3, padding=(0, 1)), _relu(), _pool(2)]),
    ("CRP padding (1,0)", (2, 4, 9, 10), (2, 8, 4, 4), [_conv(4, 8, 3, padding=(1, 0)), _relu(), _pool(2)]),
    ("CRP padding (2,1)", (1, 3, 8, 8), (1, 10, 5, 4), [_conv(3, 10, 3, padding=(2, 1)), _relu(), _pool(2)]),
    ("CRP kernel (3,5)", (2, 3, 10, 14), (2, 4, 4, 5), [_conv(3, 4, (3, 5)), _relu(), _pool(2)]),
    ("CRP kernel (5,3)", (2, 3, 14, 10), (2, 4, 7, 5), [_conv(3, 4, (5, 3), padding=(2, 1)), _relu(), _pool(2)]),
    ("CRP dilation (1,2)", (2, 3, 10, 12), (2, 8, 5, 5), [_conv(3, 8, 3, padding=1, dilation=(1, 2)), _relu(),
                                                          _pool(2)]),
    ("CRP groups 2 no bias", (1, 4, 9, 9), (1, 4, 4, 4), [_conv(4, 4, 3, padding=1, groups=2, bias=False),
                                                           _relu(), _pool(2)]),
    ("CRP pool (2,1)", (2, 3, 9, 9), (2, 8, 4, 9), [_conv(3, 8, 3, padding=1), _relu(), _pool((2, 1))]),
    ("CRP pool (1,2)", (2, 3, 9, 9), (2, 8, 9, 4), [_conv(3, 8, 3, padding=1), _relu(), _pool((1, 2))]),
    ("CRP pool (2,3) stride 2", (2, 3, 9, 11), (2, 8, 4, 5), [_conv(3, 8, 3, padding=1), _relu(),
                                                             _pool((2, 3), stride=2)]),
    ("CRP pool stride (2,1)", (2, 3, 9, 9), (2, 8, 4, 8), [_conv(3, 8, 3, padding=1), _relu(),
                                                           _pool(2, stride=(2, 1))]),
    ("CRP pool padding (0,1)", (2, 3, 8, 9), (2, 8, 4, 5), [_conv(3, 8, 3, padding=1), _relu(),
                                                            _pool(2, padding=(0, 1))]),
    ("CRP pool ceil odd", (2, 3, 9, 8), (2, 8, 4, 4), [_conv(3, 8, 3, padding=(0, 1)), _relu(),
                                                       _pool(2, ceil_mode=True)]),
    ("CRP pool ceil odd width", (1, 3, 8, 9), (1, 8, 4, 5), [_conv(3, 8, 3, padding=1), _relu(),
                                                             _pool(2, ceil_mode=True)]),
    # ---- Conv2d -> BatchNorm2d -> ReLU (-> MaxPool2d); the conv has no bias, as usual before a
    # batch norm (the batch mean cancels it: its gradient is zero up to rounding, no relative check)
    ("CBR stride (1,2)", (2, 3, 9, 11), (2, 8, 9, 6), [_conv(3, 8, 3, stride=(1, 2), padding=1, bias=False),
                                                        _bn(8), _relu()]),
    ("CBR padding (0,1) no bias", (2, 4, 8, 9), (2, 10, 6, 9), [_conv(4, 10, 3, padding=(0, 1), bias=False),
                                                                 _bn(10), _relu()]),
    ("CBRP kernel (3,5)", (2, 3, 10, 13), (2, 4, 5, 6), [_conv(3, 4, (3, 5), padding=(1, 2), bias=False), _bn(4),
                                                          _relu(), _pool(2)]),
    ("CBRP stride (2,1)", (2, 1, 13, 10), (2, 8, 3, 5), [_conv(1, 8, 3, stride=(2, 1), padding=1, bias=False),
                                                          _bn(8), _relu(), _pool(2)]),
    # ---- Tiny VGG blocks: conv -> ReLU -> conv -> ReLU -> pool; neighbouring groups hand
    # buffers to each other with borders of the next conv's padding, per axis
    ("block pads (1,0)/(0,1)", (2, 3, 12, 11), (2, 10, 5, 4), [
        _conv(3, 10, 3, padding=(1, 0)), _relu(), _conv(10, 10, 3, padding=(0, 1)), _relu(), _pool(2)]),
    ("block pads (0,1)/(1,0)", (1, 1, 11, 12), (1, 4, 4, 5), [
        _conv(1, 4, 3, padding=(0, 1)), _relu(), _conv(4, 4, 3, padding=(1, 0)), _relu(), _pool(2)]),
    ("two blocks (2,1) (5,3)", (2, 3, 10, 12), (2, 8, 3, 3), [
        _conv(3, 10, 3, padding=(2, 1)), _relu(), _conv(10, 10, 3, padding=1), _relu(), _pool(2),
        _conv(10, 8, (5, 3), padding=(2, 1)), _relu(), _conv(8, 8, (3, 5), padding=(1, 2)), _relu(), _pool(2)]),
    # 12 x 8 strided outputs: at 12 x 10 the gathered forward took 17-20 s to compile (LLVM
    # unrolls its 120-value plane loops; 96 values take 4.6 s), twice, in float64
    ("block stride (1,2) then pad (0,1)", (2, 3, 12, 16), (2, 8, 5, 4), [
        _conv(3, 8, 3, stride=(1, 2), padding=1), _relu(), _conv(8, 8, 3, padding=(0, 1)), _relu(), _pool(2)]),
    ("block BN pads (1,0)/(0,1)", (2, 3, 10, 11), (2, 8, 4, 4), [
        _conv(3, 8, 3, padding=(1, 0), bias=False), _bn(8), _relu(), _conv(8, 8, 3, padding=(0, 1), bias=False),
        _bn(8), _relu(), _pool(2)]),
]


# the seeds the cases had before "CR no bias" (seed 1012) and "CR batch 1 odd" (1013)
# became one case: the cases after it keep the data they were checked on
MERGED_CASE = 12


def _seed(case):
    index = CASES.index(case)
    return 1000 + index + (index > MERGED_CASE)


def _build(case, dtype):
    name, x_shape, out_shape, makers = case
    rng = np.random.default_rng(_seed(case))
    layers = [make(dtype, rng) for make in makers]
    for layer in layers:  # non-trivial affine BatchNorm parameters
        if isinstance(layer, nn.BatchNorm2d):
            layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.weight.shape)
            layer.bias.data[...] = rng.uniform(-0.5, 0.5, layer.bias.shape)
    x = random_array(rng, x_shape, dtype)
    return layers, x


def _gy(shape, dtype, seed=7):
    return random_array(np.random.default_rng(seed), shape, dtype)


def _named_grads(layers):
    grads = {}
    for i, layer in enumerate(layers):
        for pname in ("weight", "bias"):
            p = getattr(layer, pname, None)
            if p is not None and p.grad is not None:
                grads[f"{i}.{pname}"] = np.array(p.grad)
    return grads


def _buffers(layers):
    out = {}
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.BatchNorm2d):
            out[f"{i}.running_mean"] = np.array(layer.running_mean)
            out[f"{i}.running_var"] = np.array(layer.running_var)
    return out


def _sequential_step(layers, x, input_grad=True):
    model = nn.Sequential(*layers)
    model.zero_grad()
    y = np.array(model(x))
    gx = model.backward(_gy(y.shape, y.dtype), input_grad=input_grad)
    return y, None if gx is None else np.array(gx), _named_grads(layers), _buffers(layers)


def _one_by_one_step(layers, x, input_grad=True):
    """Each layer called on its own (never fused), then backward in reverse."""
    for layer in layers:
        layer.zero_grad()
    y = x
    for layer in layers:
        y = layer(y)
    y = np.array(y)
    g = _gy(y.shape, y.dtype)
    for i in range(len(layers) - 1, -1, -1):
        g = layers[i].backward(g, input_grad=input_grad or i > 0)
    return y, None if g is None else np.array(g), _named_grads(layers), _buffers(layers)


def _reference_step(layers, x):
    """The same step in float64 through tests/reference.py."""
    x = np.asarray(x, np.float64)
    inputs, bn_stats = [], {}
    for i, layer in enumerate(layers):
        inputs.append(x)
        if isinstance(layer, nn.Conv2d):
            bias = None if layer.bias is None else np.float64(layer.bias.data)
            x = ref.conv2d(x, np.float64(layer.weight.data), bias, layer.stride, layer.padding, layer.dilation,
                           layer.groups)
        elif isinstance(layer, nn.BatchNorm2d):
            x, mean, var = ref.batch_norm(x, np.zeros(x.shape[1]), np.ones(x.shape[1]),
                                          np.float64(layer.weight.data), np.float64(layer.bias.data), True,
                                          layer.momentum, layer.eps)
            bn_stats[f"{i}.running_mean"], bn_stats[f"{i}.running_var"] = mean, var
        elif isinstance(layer, nn.ReLU):
            x = ref.relu(x)
        elif isinstance(layer, nn.MaxPool2d):
            x = ref.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode)
        else:
            raise AssertionError(f"no reference for {type(layer).__name__}")
    y = x
    g = np.asarray(_gy(y.shape, layers[0].weight.dtype), np.float64)
    grads = {}
    for i in range(len(layers) - 1, -1, -1):
        layer, x_in = layers[i], inputs[i]
        if isinstance(layer, nn.Conv2d):
            g, gw, gb = ref.conv2d_backward(g, x_in, np.float64(layer.weight.data), layer.stride, layer.padding,
                                            layer.dilation, layer.groups)
            grads[f"{i}.weight"] = gw
            if layer.bias is not None:
                grads[f"{i}.bias"] = gb
        elif isinstance(layer, nn.BatchNorm2d):
            g, gw, gb = ref.batch_norm_backward(g, x_in, None, None, np.float64(layer.weight.data), True, layer.eps)
            grads[f"{i}.weight"], grads[f"{i}.bias"] = gw, gb
        elif isinstance(layer, nn.ReLU):
            g = ref.relu_backward(g, x_in)
        elif isinstance(layer, nn.MaxPool2d):
            g = ref.max_pool2d_backward(g, x_in, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                                        layer.ceil_mode)
    return y, g, grads, bn_stats


# Every case runs in float64 (the tight tolerance sees the most); these in float32 too.
# Each new (filters, kernel, size, border, dtype) compiles fused kernels (CI paid ~10 minutes
# for this file with 11 float32 cases), so float32 keeps one case of each fused kind:
# conv + ReLU, conv + ReLU + pool, and two groups handing buffers over.
FLOAT32_TOO = {"CR padding (0,1)", "CRP padding (1,0)", "block pads (1,0)/(0,1)"}  # fused, pooled, handed over
# whole blocks compile several fused kernels each: seconds on an idle machine, more beside others
SLOW = {"two blocks (2,1) (5,3)", "block stride (1,2) then pad (0,1)", "block pads (0,1)/(1,0)",
        "block BN pads (1,0)/(0,1)"}
PARAMS = [pytest.param(case, dtype, id=f"{case[0]}-{np.dtype(dtype).name}",
                       marks=[pytest.mark.slow] if case[0] in SLOW else [])
          for case in CASES for dtype in DTYPES if dtype == np.float64 or case[0] in FLOAT32_TOO]


@pytest.mark.filterwarnings("ignore::numbacnn.shapes.HyperparameterWarning")  # asymmetric slides on purpose
@pytest.mark.parametrize("case, dtype", PARAMS)
def test_sequential_equals_layers_one_by_one_and_reference(case, dtype):
    name, x_shape, out_shape, _ = case
    layers, x = _build(case, dtype)
    alone = copy.deepcopy(layers)  # same parameters and buffers, never put in a Sequential
    expected = _reference_step(layers, x)  # before any step changes the running statistics
    fused = _sequential_step(layers, x)
    unfused = _one_by_one_step(alone, x)
    dt = np.dtype(dtype)

    assert expected[0].shape == out_shape, f"the case's hand-worked shape is wrong: {expected[0].shape}"
    for what, result in (("Sequential", fused), ("layers one by one", unfused)):
        y, gx, grads, buffers = result
        assert y.shape == out_shape, f"{what}: output shape {y.shape}, expected {out_shape}"
        assert gx is not None and gx.shape == x.shape, f"{what}: input gradient shape"
        assert_close(y, expected[0], dt, f"{what} y")
        assert_close(gx, expected[1], dt, f"{what} gx")
        assert grads.keys() == expected[2].keys(), f"{what}: gradients of {sorted(grads)}"
        for pname, grad in grads.items():
            assert_close(grad, expected[2][pname], dt, f"{what} grad {pname}")
        for bname, value in buffers.items():
            assert_close(value, expected[3][bname], dt, f"{what} {bname}")

    tolerance = SAME_MATH_TOLERANCE[dt]
    for i, part in enumerate(("y", "gx")):
        assert _relative_error(fused[i], unfused[i]) <= tolerance, f"Sequential {part} differs from one by one"
    for pname in unfused[2]:
        assert _relative_error(fused[2][pname], unfused[2][pname]) <= tolerance, f"grad {pname}"


# float64 on the two blocks (5x3 and 3x5 kernels, handed over twice); float32 on the one
# block (two groups handing over, per-axis paddings) whose float32 kernels
# test_sequential_equals_layers_one_by_one_and_reference compiles already. The two blocks
# in float32 compiled kernels of their own: 60-80 s of CI.
REPEATED_STEPS_CASES = {np.float64: "two blocks (2,1) (5,3)", np.float32: "block pads (1,0)/(0,1)"}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::numbacnn.shapes.HyperparameterWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_repeated_steps_and_input_grad_false_on_per_axis_blocks(dtype):
    """A training loop's pattern: several steps (kept workspaces reused, borders must
    stay zero), a batch size that changes, the first conv skipping its input
    gradient; per-axis paddings so a border kept for the wrong axis shows."""
    case = next(c for c in CASES if c[0] == REPEATED_STEPS_CASES[dtype])
    layers, _ = _build(case, dtype)
    alone = copy.deepcopy(layers)
    rng = np.random.default_rng(3)
    model = nn.Sequential(*layers)
    for batch in (2, 1, 3, 3):
        x = random_array(rng, (batch,) + case[1][1:], dtype)
        model.zero_grad()
        y = np.array(model(x))
        assert model.backward(_gy(y.shape, y.dtype), input_grad=False) is None
        got = _named_grads(layers)
        y1, _, want, _ = _one_by_one_step(alone, x, input_grad=False)
        ry, _, rgrads, _ = _reference_step(alone, x)
        assert_close(y, ry, dtype, f"batch {batch} y")
        assert _relative_error(y, y1) <= SAME_MATH_TOLERANCE[np.dtype(dtype)]
        for pname in want:
            assert_close(got[pname], rgrads[pname], dtype, f"batch {batch} grad {pname}")
            assert _relative_error(got[pname], want[pname]) <= SAME_MATH_TOLERANCE[np.dtype(dtype)], pname


@pytest.mark.filterwarnings("ignore::numbacnn.shapes.HyperparameterWarning")
def test_eval_mode_forward_equals_layers_one_by_one_per_axis():
    """Eval mode (no caches, BatchNorm on its running statistics) on per-axis cases."""
    for name in ("CR stride (1,2)", "CRP padding (1,0)", "CBRP kernel (3,5)", "block pads (1,0)/(0,1)"):
        case = next(c for c in CASES if c[0] == name)
        layers, x = _build(case, np.float64)
        for layer in layers:
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean[...] = np.linspace(-0.5, 0.5, layer.num_features)
                layer.running_var[...] = np.linspace(0.5, 2.0, layer.num_features)
        alone = copy.deepcopy(layers)
        model = nn.Sequential(*layers).eval()
        y = np.array(model(x))
        z = x
        for layer in alone:
            z = layer.eval()(z)
        assert y.shape == case[2], name
        assert _relative_error(y, z) <= 1e-12, name
