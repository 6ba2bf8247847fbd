"""Conv2d -> BatchNorm2d -> ReLU (-> MaxPool2d) as one fused block (issue 18, item 1).

The batch norm kernels of the fused wing (``kernels/cpu/norm.py``'s fast variants)
against the definition kernels and the float64 reference (tests/reference.py); then
whole Sequentials, fused against the same layers run one by one (``fusion.disabled()``)
in training (outputs, every gradient, running statistics, batch counts, several steps)
and in eval mode, where the running statistics are folded into the conv; and finite
differences through a fused float64 block. tests/test_fusion_axes.py adds per-axis
hyperparameters (strides, rectangular kernels) with batch norm.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import reference as ref
from helpers import random_array
from numbacnn import nn
from numbacnn.fused import FastPath, fast_path
from numbacnn.kernels.cpu import bordered
from numbacnn.kernels.cpu import norm as kernels
from numbacnn.models import tiny_vgg
from numbacnn.nn import fusion
from numbacnn.nn.fusion import FusedChain

# fused vs one by one: the batch sums run in another order (planes vectorised)
FUSED_TOLERANCE = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 3e-4}


def _relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale else float(np.linalg.norm(a - b))


def _statistics(z, eps):
    mean = z.astype(np.float64).mean(axis=(0, 2, 3))
    return mean, 1.0 / np.sqrt(z.astype(np.float64).var(axis=(0, 2, 3)) + eps)


# --------------------------------------------------------------------------- kernels

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 4, 5, 7), (1, 1, 2, 2), (2, 3, 28, 28)])
def test_plane_statistics_match_the_definition_and_float64(dtype, shape):
    rng = np.random.default_rng(1)
    z = (rng.standard_normal(shape) * 3 + 5).astype(dtype)  # an offset: the two-pass variance matters
    eps, momentum = 1e-5, 0.1
    running = [rng.uniform(-1, 1, shape[1]).astype(dtype), rng.uniform(0.5, 2, shape[1]).astype(dtype)]
    mean, invstd = np.empty(shape[1]), np.empty(shape[1])
    fast_running = [r.copy() for r in running]
    kernels.batch_norm_stats_planes(mean, invstd, *fast_running, z.reshape(shape[0], shape[1], -1), eps, momentum,
                                    True)
    definition_mean, definition_invstd = np.empty(shape[1]), np.empty(shape[1])
    definition_running = [r.copy() for r in running]
    kernels.batch_norm_stats(definition_mean, definition_invstd, *definition_running,
                             z.reshape(shape[0], shape[1], -1), eps, momentum, True, True)
    _, new_mean, new_var = ref.batch_norm(z, *[r.astype(np.float64) for r in running], None, None, True, momentum,
                                          eps)
    expected_mean, expected_invstd = _statistics(z, eps)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(invstd, expected_invstd, rtol=1e-10)
    np.testing.assert_allclose(mean, definition_mean, rtol=1e-12, atol=1e-12)
    tolerance = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fast_running[0], new_mean, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(fast_running[1], new_var, rtol=tolerance)
    # without update the running statistics are not touched
    untouched = [r.copy() for r in running]
    kernels.batch_norm_stats_planes(mean, invstd, *untouched, z.reshape(shape[0], shape[1], -1), eps, momentum,
                                    False)
    assert all(np.array_equal(a, b) for a, b in zip(untouched, running))


def _normalised(z, mean, invstd, weight, bias):
    """relu(batch_norm_forward(z)) by the definition kernels."""
    y = np.empty_like(z)
    shape3 = (z.shape[0], z.shape[1], -1)
    kernels.batch_norm_forward(y.reshape(shape3), z.reshape(shape3), mean, invstd, weight, bias)
    return np.where(~(y <= 0), y, np.zeros((), z.dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [(5, 6), (3, 17)])  # 17 wide: a row of more than one vector
def test_normalise_relu_into_a_bordered_buffer_is_the_layers_bit_for_bit(dtype, hw):
    rng = np.random.default_rng(2)
    height, width = hw
    z = random_array(rng, (2, 3, height, width), dtype)
    z[0, 1, 2, 3] = np.nan  # NaN passes the ReLU, as relu
    weight, bias = rng.uniform(0.5, 1.5, 3).astype(dtype), rng.uniform(-0.5, 0.5, 3).astype(dtype)
    mean, invstd = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    scale = invstd * weight
    shift = bias - mean * scale
    out = np.zeros((2, 3, height + 2 * 2, width + 2 * 1), dtype)
    kernels.batch_norm_relu_kernel(2, 1)(out, z, scale, shift)
    expected = _normalised(z, mean, invstd, weight, bias)
    interior = (slice(None), slice(None), slice(2, 2 + height), slice(1, 1 + width))
    assert np.array_equal(out[interior], expected, equal_nan=True)
    border = out.copy()
    border[interior] = 0
    assert not border.any(), "the border stays zero"
    np.testing.assert_allclose(np.nan_to_num(out[interior], nan=7.0),
                               np.nan_to_num(ref.relu(ref.batch_norm(z, mean, 1 / invstd ** 2 - 1e-5, weight, bias,
                                                                     False, 0.0, 1e-5)[0]), nan=7.0),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# odd: the last row and column are in no window; 35 wide: 17 windows, two chunks of POOL_WINDOWS_CHUNK
@pytest.mark.parametrize("hw", [(6, 8), (7, 9), (4, 35)])
def test_normalise_relu_pool_is_max_pool2d_with_indices_bit_for_bit(dtype, hw):
    rng = np.random.default_rng(3)
    z = random_array(rng, (2, 4, *hw), dtype)
    z[0, 0, :2, :2] = 3.0                   # a four-way tie: the first maximum wins
    z[1, 2, :2, 2:4] = -5.0                 # a window whose four values are all ReLU'd to 0
    z[1, 3, 1, 1] = np.nan                  # NaN wins its window
    weight, bias = rng.uniform(0.5, 1.5, 4).astype(dtype), rng.uniform(-0.5, 0.5, 4).astype(dtype)
    mean, invstd = rng.standard_normal(4) * 0.1, rng.uniform(0.5, 2, 4)
    scale = invstd * weight
    shift = bias - mean * scale
    ph, pw = hw[0] // 2, hw[1] // 2
    pooled = np.zeros((2, 4, ph + 2, pw + 2), dtype)
    indices = np.empty((2, 4, ph, pw), np.int64)
    kernels.batch_norm_relu_pool2x2_kernel(1, 1, hw[1])(pooled, indices, z, scale, shift)
    y = _normalised(z, mean, invstd, weight, bias)
    expected, expected_indices = ref.max_pool2d_with_indices(y, 2)
    assert np.array_equal(pooled[:, :, 1:1 + ph, 1:1 + pw], expected.astype(dtype), equal_nan=True)
    assert np.array_equal(indices, expected_indices)
    assert indices[0, 0, 0, 0] == 0 and np.isnan(pooled[1, 3, 1, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_into_bordered_buffers_matches_the_definition_and_float64(dtype):
    rng = np.random.default_rng(4)
    shape = (3, 4, 6, 7)
    z = (random_array(rng, shape, dtype) * 2 + 1).astype(dtype)
    gy = random_array(rng, shape, dtype)
    weight = rng.uniform(0.5, 1.5, 4).astype(dtype)
    eps = 1e-5
    mean, invstd = _statistics(z, eps)
    gconv = np.zeros((3, 4, 6 + 4, 7 + 2), dtype)   # bordered by (2, 1)
    also = np.zeros((3, 4, 6 + 2, 7 + 2), dtype)    # and by (1, 1)
    gweight, gbias = np.empty(4, dtype), np.empty(4, dtype)
    kernels.batch_norm_backward_bordered_kernel(2, 1, 1, 1)(gconv, also, gweight, gbias, gy, z, mean, invstd, weight)
    expected, expected_gweight, expected_gbias = ref.batch_norm_backward(gy, z, None, None, weight, True, eps)
    tolerance = 2e-5 if dtype == np.float32 else 1e-11
    scale = np.abs(expected).max()
    np.testing.assert_allclose(gconv[:, :, 2:8, 1:8], expected, rtol=tolerance, atol=tolerance * scale)
    assert np.array_equal(also[:, :, 1:7, 1:8], gconv[:, :, 2:8, 1:8])
    np.testing.assert_allclose(gweight, expected_gweight, rtol=tolerance, atol=tolerance * np.abs(gy).sum())
    np.testing.assert_allclose(gbias, expected_gbias, rtol=tolerance, atol=tolerance * np.abs(gy).sum())
    gconv[:, :, 2:8, 1:8] = 0
    also[:, :, 1:7, 1:8] = 0
    assert not gconv.any() and not also.any(), "borders stay zero"
    # and the definition kernel agrees
    definition = np.empty(shape, dtype)
    definition_gw, definition_gb = np.empty(4, dtype), np.empty(4, dtype)
    kernels.batch_norm_backward(definition.reshape(3, 4, -1), definition_gw, definition_gb, gy.reshape(3, 4, -1),
                                z.reshape(3, 4, -1), mean, invstd, weight, True)
    assert _relative_error(definition, expected) < tolerance


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [(6, 8), (7, 9), (28, 28)])  # odd: the last row and column get no pool gradient
def test_pool_and_batch_norm_backward_in_one_kernel_match_the_two_kernels_and_float64(dtype, hw):
    """batch_norm_pool2x2_backward_bordered_kernel = the pool backward (x ReLU mask) into
    a plain gy, then batch_norm_backward_bordered_kernel; and the float64 chain of
    max_pool2d_backward, relu_backward and batch_norm_backward on the same forward."""
    rng = np.random.default_rng(5)
    shape = (3, 4, *hw)
    z = (random_array(rng, shape, dtype) * 2 + 0.5).astype(dtype)
    z[0, 1, :2, :2] = -9.0                  # a window ReLU'd to zero: no gradient through it
    z[2, 0, 2:4, 2:4] = 4.0                 # a four-way tie: the first maximum takes the gradient
    weight, bias = rng.uniform(0.5, 1.5, 4).astype(dtype), rng.uniform(-0.5, 0.5, 4).astype(dtype)
    eps = 1e-5
    mean, invstd = _statistics(z, eps)
    scale = invstd * weight
    ph, pw = hw[0] // 2, hw[1] // 2
    pooled = np.zeros((3, 4, ph + 2, pw + 2), dtype)   # bordered by (1, 1), as a next block's input
    indices = np.empty((3, 4, ph, pw), np.int64)
    kernels.batch_norm_relu_pool2x2_kernel(1, 1, hw[1])(pooled, indices, z, scale, bias - mean * scale)
    gp = random_array(rng, (3, 4, ph, pw), dtype)
    gconv = np.zeros((3, 4, hw[0] + 4, hw[1] + 2), dtype)   # bordered by (2, 1)
    also = np.zeros((3, 4, hw[0] + 2, hw[1] + 2), dtype)    # and by (1, 1)
    gweight, gbias = np.empty(4, dtype), np.empty(4, dtype)
    kernels.batch_norm_pool2x2_backward_bordered_kernel(2, 1, 1, 1, 1, 1)(
        gconv, also, gweight, gbias, gp, indices, pooled, z, mean, invstd, weight)
    interior = gconv[:, :, 2:2 + hw[0], 1:1 + hw[1]]
    assert np.array_equal(also[:, :, 1:1 + hw[0], 1:1 + hw[1]], interior)

    # the two kernels it replaces
    gy = np.zeros(shape, dtype)
    bordered.max_pool2x2_relu_backward_kernel(0, 0, 1, 1)(gy, gp, indices, pooled, gy)
    # (the setup: the ReLU'd window passes no gradient, the tie's first maximum takes it)
    assert np.abs(gy[0, 1, :2, :2]).max() == 0 and gy[2, 0, 2, 2] != 0 and not gy[2, 0, 2:4, 2:4].ravel()[1:].any()
    two_kernels = np.zeros_like(gconv)
    two_gweight, two_gbias = np.empty(4, dtype), np.empty(4, dtype)
    kernels.batch_norm_backward_bordered_kernel(2, 1)(two_kernels, two_kernels, two_gweight, two_gbias, gy, z,
                                                      mean, invstd, weight)
    tolerance = 2e-6 if dtype == np.float32 else 1e-13
    assert _relative_error(gconv, two_kernels) < tolerance
    assert _relative_error(gweight, two_gweight) < tolerance and _relative_error(gbias, two_gbias) < tolerance

    # float64: the layers' chain on the normalised z
    relu_y = _normalised(z, mean, invstd, weight, bias).astype(np.float64)
    g_relu = ref.max_pool2d_backward(gp.astype(np.float64), relu_y, 2)
    g_norm = ref.relu_backward(g_relu, relu_y)  # relu_y > 0 exactly where the normalised z is
    expected, expected_gweight, expected_gbias = ref.batch_norm_backward(g_norm, z, None, None, weight, True, eps)
    tolerance = 2e-5 if dtype == np.float32 else 1e-11
    assert _relative_error(interior, expected) < tolerance
    assert _relative_error(gweight, expected_gweight) < tolerance
    assert _relative_error(gbias, expected_gbias) < tolerance
    interior[...] = 0
    also[:, :, 1:1 + hw[0], 1:1 + hw[1]] = 0
    assert not gconv.any() and not also.any(), "the borders stay zero"


@pytest.mark.parametrize("pooled", [False, True], ids=["backward", "pool-and-backward"])
def test_float32_backward_stays_accurate_when_the_mean_is_far_from_zero(pooled):
    """The backward's per-element pass runs in float32; with the mean folded into one
    offset, ``slope * z + offset`` cancelled two numbers of size |slope * mean| and lost
    about mean / std float32 roundings. Conv outputs whose mean is 100 standard
    deviations from zero, a gradient correlated with xhat (sum(gy * xhat) large, as
    late in training): within 2e-5 of the float64 definition."""
    rng = np.random.default_rng(8)
    shape, eps = (8, 3, 12, 12), 1e-5
    z = (rng.standard_normal(shape) + 100.0).astype(np.float32)
    weight = rng.uniform(0.5, 1.5, 3).astype(np.float32)
    mean, invstd = _statistics(z, eps)
    xhat = (z - mean[None, :, None, None]) * invstd[None, :, None, None]
    gconv = np.zeros((8, 3, 14, 14), np.float32)
    gweight, gbias = np.empty(3, np.float32), np.empty(3, np.float32)
    if pooled:
        scale = invstd * weight
        pool = np.zeros((8, 3, 8, 8), np.float32)
        indices = np.empty((8, 3, 6, 6), np.int64)
        kernels.batch_norm_relu_pool2x2_kernel(1, 1, 12)(pool, indices, z, scale, 3.0 - mean * scale)  # shift 3: most pass
        gp = (pool[:, :, 1:7, 1:7] + 0.02 * rng.standard_normal((8, 3, 6, 6))).astype(np.float32)
        kernels.batch_norm_pool2x2_backward_bordered_kernel(1, 1, 1, 1)(gconv, gconv, gweight, gbias, gp, indices,
                                                                        pool, z, mean, invstd, weight)
        gy = np.zeros(shape)  # the pool's backward, by hand: the window's gradient at its maximum where it passed
        planes = gy.reshape(8, 3, -1)
        for n in range(8):
            for c in range(3):
                kept = pool[n, c, 1:7, 1:7].ravel() > 0
                planes[n, c, indices[n, c].ravel()[kept]] = gp[n, c].ravel()[kept]
    else:
        gy = (xhat + 1.0 + 0.02 * rng.standard_normal(shape)).astype(np.float32)
        kernels.batch_norm_backward_bordered_kernel(1, 1)(gconv, gconv, gweight, gbias, gy, z, mean, invstd, weight)
    expected, expected_gweight, _ = ref.batch_norm_backward(np.asarray(gy, np.float64), z, None, None, weight, True,
                                                            eps)
    assert _relative_error(gconv[:, :, 1:13, 1:13], expected) < 2e-5
    assert _relative_error(gweight, expected_gweight) < 2e-5


# --------------------------------------------------------------------------- whole blocks

def _block(c_in, c_out, kernel=3, padding=1, pool=True, bias=True, dtype=np.float32, rng=None, stride=1, **bn):
    layers = [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=bias, dtype=dtype, rng=rng),
              nn.BatchNorm2d(c_out, dtype=dtype, **bn), nn.ReLU()]
    norm = layers[1]
    if norm.weight is not None:  # a non-trivial affine transform
        norm.weight.data[...] = rng.uniform(0.5, 1.5, c_out)
        norm.bias.data[...] = rng.uniform(-0.5, 0.5, c_out)
    return layers + ([nn.MaxPool2d(2)] if pool else [])


def _train_steps(model, x, steps, seed):
    """``steps`` training steps (fixed random output gradients, SGD by hand); each
    step's output, input gradient and parameter gradients, and the buffers after."""
    rng = np.random.default_rng(seed)
    record = []
    for _ in range(steps):
        model.zero_grad()
        y = model(x)
        gx = model.backward(random_array(rng, y.shape, y.dtype))
        grads = {name: np.array(p.grad) for name, p in model.named_parameters()}
        record.append((np.array(y), np.array(gx), grads))
        for p in model.parameters():
            p.data -= 0.05 * p.grad
    return record, {name: np.array(value) for name, value in model.state_dict().items()}


def _assert_same_training(model, x, steps=3):
    twin = copy.deepcopy(model)
    fused, fused_state = _train_steps(model, x, steps, seed=9)
    with fusion.disabled():
        layered, layered_state = _train_steps(twin, x, steps, seed=9)
    tolerance = FUSED_TOLERANCE[np.dtype(x.dtype)]
    for step, ((y1, gx1, g1), (y0, gx0, g0)) in enumerate(zip(fused, layered)):
        assert _relative_error(y1, y0) <= tolerance, f"step {step}: output"
        assert _relative_error(gx1, gx0) <= tolerance, f"step {step}: input gradient"
        weight_scale = max(np.linalg.norm(g) for g in g0.values())
        for name in g0:
            if name.endswith("bias") and isinstance(_layer(model, name), nn.Conv2d):
                # a conv bias before a batch norm: the batch mean cancels it, so its gradient is zero
                # up to rounding; held to the scale of the other gradients
                assert np.linalg.norm(g1[name] - g0[name]) <= tolerance * weight_scale, f"step {step}: {name}"
            else:
                assert _relative_error(g1[name], g0[name]) <= tolerance, f"step {step}: {name}"
    assert fused_state.keys() == layered_state.keys()
    for name in layered_state:
        if name.endswith("num_batches_tracked"):
            assert fused_state[name] == layered_state[name] == steps, name
        else:
            assert _relative_error(fused_state[name], layered_state[name]) <= tolerance, name


def _layer(model, dotted):
    return dict(model.named_modules())[dotted.rsplit(".", 1)[0]]


def _fused_blocks(model, x):
    """The FusedChain steps of model's plan, and whether each block is on the fast path."""
    steps = model._steps() if hasattr(model, "_steps") else fusion.plan(list(model))
    chains = [step for step in steps if isinstance(step, FusedChain)]
    shape, fast = tuple(x.shape), []
    for chain in chains:
        for group, block in zip(chain.groups, chain.blocks()):
            fast.append(isinstance(fast_path(block, shape, x.dtype, x.dtype, x.dtype, "cpu"), FastPath))
            for layer in group:
                shape = layer.output_shape(shape) if hasattr(layer, "output_shape") else shape
    return chains, fast


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_batch_norm_blocks_train_as_the_layers_do(dtype):
    rng = np.random.default_rng(5)
    model = nn.Sequential(*_block(4, 8, pool=False, dtype=dtype, rng=rng), *_block(8, 8, dtype=dtype, rng=rng))
    x = random_array(rng, (3, 4, 12, 12), dtype)  # the shapes of most tests here: kernels compile once
    chains, fast = _fused_blocks(model, x)
    assert len(chains) == 1 and fast == [True, True]
    _assert_same_training(model, x)


@pytest.mark.filterwarnings("ignore::numbacnn.shapes.HyperparameterWarning")  # the strided case's 12x12: asymmetric
@pytest.mark.parametrize("case", ["3x3 padding 0 (whole-plane grad-weight)", "5x5", "no bias, momentum None",
                                  "no affine", "no running statistics", "then a block without batch norm",
                                  "strided blocks"])
def test_batch_norm_block_variants_train_as_the_layers_do(case):
    rng = np.random.default_rng(6)
    dtype = np.float32
    if case.startswith("3x3 padding 0"):
        layers = _block(4, 8, padding=0, pool=False, rng=rng) + _block(8, 8, padding=0, rng=rng)
    elif case == "5x5":
        layers = _block(4, 6, kernel=5, padding=2, rng=rng)
    elif case == "no bias, momentum None":
        layers = _block(4, 8, bias=False, rng=rng, momentum=None)
    elif case == "no affine":
        layers = _block(4, 8, rng=rng, affine=False)
    elif case == "no running statistics":
        layers = _block(4, 8, rng=rng, track_running_stats=False)
    elif case == "strided blocks":  # the backend's strided kernels write z (PHASES), the second's gx masked
        layers = _block(4, 8, stride=2, pool=False, rng=rng) + _block(8, 8, stride=2, rng=rng)
    else:
        layers = _block(4, 8, pool=False, rng=rng) + [nn.Conv2d(8, 8, 3, padding=1, rng=rng), nn.ReLU(),
                                                       nn.MaxPool2d(2)]
    model = nn.Sequential(*layers)
    x = random_array(rng, (3, 4, 12, 12), dtype)
    _, fast = _fused_blocks(model, x)
    assert all(fast)
    _assert_same_training(model, x)


def test_eval_mode_folds_the_running_statistics_into_the_conv():
    rng = np.random.default_rng(7)
    model = nn.Sequential(*_block(4, 8, pool=False, rng=rng), *_block(8, 8, rng=rng))
    x = random_array(rng, (3, 4, 12, 12), np.float32)
    _train_steps(model, x, 2, seed=1)  # running statistics away from (0, 1)
    model.eval()
    state = {name: np.array(value) for name, value in model.state_dict().items()}
    y = np.array(model(x))
    with fusion.disabled():
        expected = np.array(model(x))
    assert _relative_error(y, expected) <= 1e-5
    after = model.state_dict()
    assert all(np.array_equal(state[name], np.asarray(after[name])) for name in state), "eval changed a buffer"
    # the float64 reference on the same layers
    layers = list(model)
    z = ref.conv2d(x, layers[0].weight.data, layers[0].bias.data, padding=1)
    z = ref.relu(ref.batch_norm(z, layers[1].running_mean, layers[1].running_var, layers[1].weight.data,
                                layers[1].bias.data, False, 0.0, layers[1].eps)[0])
    z = ref.conv2d(z, layers[3].weight.data, layers[3].bias.data, padding=1)
    z = ref.relu(ref.batch_norm(z, layers[4].running_mean, layers[4].running_var, layers[4].weight.data,
                                layers[4].bias.data, False, 0.0, layers[4].eps)[0])
    assert _relative_error(y, ref.max_pool2d(z, 2)) <= 1e-5


def test_training_convs_under_frozen_batch_norms_train_as_the_layers_do():
    """Fine-tuning with frozen batch norms (the network in training mode, each
    BatchNorm2d in eval mode: its running statistics normalise, and its backward is
    scale * gy): the fused chain runs those blocks composed (the fast path would fold
    the statistics into the conv and keep no z for the backward), with the same
    outputs and gradients as the layers one by one, and no running statistic moves."""
    rng = np.random.default_rng(11)
    model = nn.Sequential(*_block(3, 8, pool=False, rng=rng, dtype=np.float64),
                          *_block(8, 8, rng=rng, dtype=np.float64))
    x = random_array(rng, (4, 3, 10, 10), np.float64)
    model.train()
    for layer in model:
        if isinstance(layer, nn.BatchNorm2d):
            layer.eval()
            layer.running_mean[...] = rng.uniform(-0.5, 0.5, 8)
            layer.running_var[...] = rng.uniform(0.5, 2.0, 8)
    twin = copy.deepcopy(model)
    frozen = {name: np.array(value) for name, value in model.state_dict().items() if "running" in name}
    (fused,), _ = _train_steps(model, x, 1, seed=3)
    with fusion.disabled():
        (layered,), _ = _train_steps(twin, x, 1, seed=3)
    for got, expected in zip(fused[:2], layered[:2]):
        assert _relative_error(got, expected) <= 1e-12
    for name, grad in layered[2].items():
        assert _relative_error(fused[2][name], grad) <= 1e-12, name
    assert all(np.array_equal(frozen[name], np.asarray(model.state_dict()[name])) for name in frozen)
    # the one rule says so (the same block takes the fast path when its batch norm trains)
    block = fusion.conv_block(model[0], None, model[1])
    why = fast_path(block, x.shape, x.dtype, x.dtype, x.dtype, "cpu", frozen_norm=True)
    assert isinstance(why, str) and "running statistics" in why
    assert isinstance(fast_path(block, x.shape, x.dtype, x.dtype, x.dtype, "cpu"), FastPath)


def test_fused_block_gradients_match_finite_differences():
    rng = np.random.default_rng(8)
    model = nn.Sequential(*_block(2, 4, pool=False, dtype=np.float64, rng=rng),
                          *_block(4, 4, dtype=np.float64, rng=rng, track_running_stats=False))
    x = random_array(rng, (2, 2, 6, 6), np.float64)
    gy_shape = (2, 4, 3, 3)
    gy = random_array(rng, gy_shape, np.float64)
    assert all(_fused_blocks(model, x)[1])

    def loss(xv):
        return float(np.sum(np.array(model(xv)) * gy))

    model.zero_grad()
    model(x)
    gx = np.array(model.backward(gy))
    grads = {name: np.array(p.grad) for name, p in model.named_parameters()}
    h = 1e-6
    for flat in rng.choice(x.size, 6, replace=False):
        bumped = [x.copy(), x.copy()]
        bumped[0].flat[flat] += h
        bumped[1].flat[flat] -= h
        numeric = (loss(bumped[0]) - loss(bumped[1])) / (2 * h)
        assert abs(gx.flat[flat] - numeric) <= 1e-6 * max(1.0, abs(numeric)), flat
    for name, p in model.named_parameters():
        for flat in rng.choice(p.data.size, 2, replace=False):
            keep = p.data.flat[flat]
            p.data.flat[flat] = keep + h
            up = loss(x)
            p.data.flat[flat] = keep - h
            down = loss(x)
            p.data.flat[flat] = keep
            numeric = (up - down) / (2 * h)
            assert abs(grads[name].flat[flat] - numeric) <= 1e-6 * max(1.0, abs(numeric)), name


def test_tiny_vgg_with_batch_norm_runs_every_block_fused():
    model = tiny_vgg(in_channels=1, num_classes=10, image_size=28, padding=1, batch_norm=True)
    steps = fusion.plan(list(model.features))
    assert len(steps) == 1 and isinstance(steps[0], FusedChain)
    assert [len(group) for group in steps[0].groups] == [3, 4, 3, 4]
    x = random_array(np.random.default_rng(10), (8, 1, 28, 28), np.float32)
    assert all(_fused_blocks(model.features, x)[1])
