"""Fusion chosen by Sequential (nn/fusion.py, functional/fused.py): the fused path
equals the layers run one by one, in forward, in every parameter gradient and in the
input gradient, and both equal the float64 NumPy reference (tests/reference.py)."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn.functional as F
import numbacnn.functional.fused as FF
import reference as ref
from helpers import DTYPES, assert_close, random_array
from numbacnn import nn
from numbacnn.models import tiny_vgg
from numbacnn.nn import fusion

# fused vs unfused: the same arithmetic up to summation order
FUSED_TOLERANCE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-4}


def _relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale else float(np.linalg.norm(a - b))


def _step(model, x, gy_seed, input_grad=True):
    """Forward, a fixed random output gradient, backward: (y, gx, {name: grad})."""
    model.zero_grad()
    y = model(x)
    gy = random_array(np.random.default_rng(gy_seed), y.shape, y.dtype)
    gx = model.backward(gy, input_grad=input_grad)
    return np.array(y), None if gx is None else np.array(gx), {n: np.array(p.grad) for n, p in
                                                               model.named_parameters()}


def _assert_fused_equals_unfused(model, x, input_grad=True):
    dtype = np.dtype(x.dtype)
    with fusion.disabled():
        y0, gx0, g0 = _step(model, x, 7, input_grad)
    y1, gx1, g1 = _step(model, x, 7, input_grad)
    tolerance = FUSED_TOLERANCE[dtype]
    assert y1.dtype == dtype and y1.shape == y0.shape
    assert _relative_error(y1, y0) <= tolerance, "forward"
    if input_grad:
        assert gx1.shape == x.shape and _relative_error(gx1, gx0) <= tolerance, "input gradient"
    else:
        assert gx1 is None and gx0 is None
    assert g1.keys() == g0.keys()
    for name in g0:
        assert _relative_error(g1[name], g0[name]) <= tolerance, name
    return y1, gx1, g1


def _reference_step(model, x, gy_seed):
    """The same step through tests/reference.py in float64, layer by layer."""
    layers = [layer for _, layer in nn.leaf_layers(model)]
    x = np.asarray(x, np.float64)
    inputs = []
    for layer in layers:
        inputs.append(x)
        if isinstance(layer, nn.Conv2d):
            bias = None if layer.bias is None else np.float64(layer.bias.data)
            x = ref.conv2d(x, np.float64(layer.weight.data), bias, layer.stride, layer.padding, layer.dilation,
                           layer.groups)
        elif isinstance(layer, nn.ReLU):
            x = ref.relu(x)
        elif isinstance(layer, nn.MaxPool2d):
            x = ref.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode)
        elif isinstance(layer, nn.Flatten):
            x = x.reshape(x.shape[0], -1)
        elif isinstance(layer, nn.Linear):
            x = ref.linear(x, np.float64(layer.weight.data), np.float64(layer.bias.data))
    y = x
    gy = np.asarray(random_array(np.random.default_rng(gy_seed), y.shape, model_dtype(model)), np.float64)
    grads = {}
    names = [name for name, _ in nn.leaf_layers(model)]
    for name, layer, x_in in reversed(list(zip(names, layers, inputs))):
        if isinstance(layer, nn.Conv2d):
            gy, gw, gb = ref.conv2d_backward(gy, x_in, np.float64(layer.weight.data), layer.stride, layer.padding,
                                             layer.dilation, layer.groups)
            grads[f"{name}.weight"], grads[f"{name}.bias"] = gw, gb
        elif isinstance(layer, nn.ReLU):
            gy = ref.relu_backward(gy, x_in)
        elif isinstance(layer, nn.MaxPool2d):
            gy = ref.max_pool2d_backward(gy, x_in, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                                         layer.ceil_mode)
        elif isinstance(layer, nn.Flatten):
            gy = gy.reshape(x_in.shape)
        elif isinstance(layer, nn.Linear):
            gy, gw, gb = ref.linear_backward(gy, x_in, np.float64(layer.weight.data))
            grads[f"{name}.weight"], grads[f"{name}.bias"] = gw, gb
    return y, gy, grads


def model_dtype(model):
    return model.parameters()[0].dtype


def _assert_matches_reference(model, x, result):
    y, gx, grads = result
    dtype = np.dtype(x.dtype)
    ry, rgx, rgrads = _reference_step(model, x, 7)
    assert_close(y, ry, dtype, "y")
    if gx is not None:
        assert_close(gx, rgx, dtype, "gx")
    assert set(grads) <= set(rgrads)
    for name in grads:  # a layer without bias has no bias gradient
        assert_close(grads[name], rgrads[name], dtype, name)


def test_plan_fuses_conv_relu_and_conv_relu_pool_runs_only():
    model = tiny_vgg(1, 10, 28, padding=1, dtype=np.float64)
    steps = model.features._fusion_steps()
    assert [repr(s) for s in steps] == [
        "FusedChain(Conv2d, ReLU | Conv2d, ReLU, MaxPool2d | Conv2d, ReLU | Conv2d, ReLU, MaxPool2d)"]
    assert model.classifier._fusion_steps() == list(model.classifier)  # nothing to fuse
    # a subclass may change what forward does: never fused
    class MyReLU(nn.ReLU):
        pass
    odd = nn.Sequential(nn.Conv2d(1, 4, 3), MyReLU(), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU())
    assert [type(s).__name__ for s in odd._fusion_steps()] == ["Conv2d", "MyReLU", "ReLU", "MaxPool2d",
                                                               "FusedChain"]


def test_fusion_keeps_names_and_state_dict():
    model = tiny_vgg(1, 10, 28, padding=1, dtype=np.float64)
    before = list(model.state_dict())
    model(np.zeros((1, 1, 28, 28)))
    assert list(model.state_dict()) == before
    assert before[0] == "features.0.weight"


# The main job's Tiny VGG in both dtypes; the 64x64 one (3 channels, no padding) in
# float32, the dtype it trains in: its float64 twin compiled 11 kernels (27 s of CI) that
# other float64 cases pin at other sizes (the awkward models below, test_fusion_axes.py)
TINY_VGG_CASES = [(1, 28, 1, 4, np.float32), (1, 28, 1, 4, np.float64), (3, 64, 0, 2, np.float32)]


@pytest.mark.parametrize("in_channels, size, padding, batch, dtype", TINY_VGG_CASES,
                         ids=[f"{c}-{s}-{p}-{b}-{np.dtype(d).name}" for c, s, p, b, d in TINY_VGG_CASES])
def test_tiny_vgg_fused_equals_unfused_and_reference(in_channels, size, padding, batch, dtype):
    model = tiny_vgg(in_channels, 10, size, padding=padding, dtype=dtype, seed=3)
    x = random_array(np.random.default_rng(5), (batch, in_channels, size, size), dtype)
    result = _assert_fused_equals_unfused(model, x)
    _assert_matches_reference(model, x, result)
    _assert_fused_equals_unfused(model, x, input_grad=False)  # as in training: first conv skips gx


def _awkward_models(dtype):
    """Odd sizes, 1 channel, filter counts that are not a multiple of any block, stride 2,
    3x3 pools with ceil_mode, 'same' padding, conv+ReLU runs that follow each other."""
    rng = np.random.default_rng(11)
    c = dict(dtype=dtype, rng=rng)
    return [
        ("relu runs", (1, 1, 9, 11), nn.Sequential(
            nn.Conv2d(1, 7, 3, padding=1, **c), nn.ReLU(), nn.Conv2d(7, 5, 3, **c), nn.ReLU(),
            nn.Conv2d(5, 4, (2, 3), padding=(1, 0), **c), nn.ReLU(), nn.MaxPool2d(2))),
        ("general conv and pool", (3, 2, 13, 12), nn.Sequential(
            nn.Conv2d(2, 6, 3, stride=2, padding=1, **c), nn.ReLU(), nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(6, 3, 2, padding="same", **c), nn.ReLU())),
        ("no bias, odd pool", (2, 3, 15, 15), nn.Sequential(
            nn.Conv2d(3, 11, 3, bias=False, **c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(11, 10, 3, padding=1, **c), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(10 * 3 * 3, 4, **c))),
        # strided blocks on the fast path: the second's input gradient through the first's
        # ReLU mask into its bordered buffer, the third after a strided block without pool
        ("strided blocks", (2, 3, 12, 13), nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, **c), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1, **c), nn.ReLU(),
            nn.Conv2d(8, 5, 3, stride=2, padding=1, **c), nn.ReLU(), nn.MaxPool2d(2))),
    ]


# Cases 0 and 2 in both dtypes: float32's 16-float rows and float64's 8-double rows give
# their small maps different kernels (7 and 11 filters a register block against 1).
# Case 1 builds the same kernels, same compiled-in sizes (GATHERED forward, PHASES
# grad-weight, general pool and 3-filter conv), in either dtype: float64 only. Case 3
# (strided blocks on the fast path) differs in 2 of its 38 kernels between the dtypes:
# float32 only (CI time: 60 s); float64 strided blocks run in tests/test_fusion_axes.py.
AWKWARD_PARAMS = [(case, dtype) for dtype in DTYPES for case in range(4)
                  if (case != 1 or dtype == np.float64) and (case != 3 or dtype == np.float32)]


@pytest.mark.filterwarnings("ignore::numbacnn.shapes.HyperparameterWarning")  # asymmetric slides on purpose
@pytest.mark.parametrize("case, dtype", AWKWARD_PARAMS,
                         ids=[f"{case}-{np.dtype(dtype).name}" for case, dtype in AWKWARD_PARAMS])
def test_awkward_sequentials_fused_equal_unfused_and_reference(case, dtype):
    name, shape, model = _awkward_models(dtype)[case]
    x = random_array(np.random.default_rng(case), shape, dtype)
    result = _assert_fused_equals_unfused(model, x)
    _assert_matches_reference(model, x, result)


def test_eval_mode_fuses_forward_and_backward_needs_a_training_forward():
    model = tiny_vgg(1, 10, 28, padding=1, dtype=np.float64).eval()
    x = random_array(np.random.default_rng(0), (2, 1, 28, 28), np.float64)
    y = model(x)
    kept = y.copy()
    with fusion.disabled():
        assert _relative_error(y, model(x)) <= 1e-12
    with pytest.raises(RuntimeError, match="no cached input"):
        model.backward(np.ones_like(y))
    # eval workspaces are reused: what the model returned must not change with the next calls
    model(random_array(np.random.default_rng(1), (2, 1, 28, 28), np.float64))
    model(random_array(np.random.default_rng(2), (3, 1, 28, 28), np.float64))
    np.testing.assert_array_equal(y, kept)
    assert _relative_error(model(x), kept) <= 1e-15


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_functional_ops_are_their_compositions(dtype, rng):
    """Each fused op against the unfused calls it stands for (and the float64 reference)."""
    x = random_array(rng, (3, 4, 11, 10), dtype)
    w = random_array(rng, (6, 4, 3, 3), dtype)
    b = random_array(rng, (6,), dtype)
    y = FF.conv2d_relu(x, w, b, padding=1)
    assert_close(y, ref.relu(ref.conv2d(x, w, b, padding=1)), dtype, "conv2d_relu")
    pooled, y2, indices = FF.conv2d_relu_max_pool2d(x, w, b, padding=1, pool_kernel_size=2)
    assert_close(y2, y, dtype, "relu output")
    assert_close(pooled, ref.max_pool2d(ref.relu(ref.conv2d(x, w, b, padding=1)), 2), dtype, "pooled")
    want_pooled, want_indices = F.max_pool2d(y, 2, return_indices=True)
    assert indices.dtype == np.int64 and np.array_equal(indices, want_indices)
    gp = random_array(rng, pooled.shape, dtype)
    gz = FF.max_pool2d_relu_backward(gp, indices, y, 2)
    assert_close(gz, ref.relu_backward(ref.max_pool2d_backward(gp, y, 2), y), dtype, "max_pool2d_relu_backward")
    gx, gw, gb = FF.conv2d_backward_relu_mask(gz, x, w, padding=1, mask_input=True)
    rgx, rgw, rgb = ref.conv2d_backward(gz, x, w, padding=1)
    assert_close(gx, ref.relu_backward(rgx, x), dtype, "masked gx")
    assert_close(gw, rgw, dtype, "gw")
    assert_close(gb, rgb, dtype, "gb")
    gy = random_array(rng, y.shape, dtype)
    gx, gw, gb = FF.conv2d_relu_backward(gy, y, x, w, padding=1)
    rgx, rgw, rgb = ref.conv2d_backward(ref.relu_backward(gy, y), x, w, padding=1)
    for got, want, what in ((gx, rgx, "gx"), (gw, rgw, "gw"), (gb, rgb, "gb")):
        assert_close(got, want, dtype, f"conv2d_relu_backward {what}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_workspaces_survive_repeated_steps_and_batch_size_changes(dtype):
    """The fast path keeps bordered buffers between steps: their borders must stay
    zero and a new batch size must not reuse stale buffers. Steps with batch 3, 1,
    3 in a row, each equal to the unfused step."""
    model = tiny_vgg(1, 10, 28, padding=1, dtype=dtype, seed=4)
    rng = np.random.default_rng(9)
    for batch in (3, 1, 3):
        x = random_array(rng, (batch, 1, 28, 28), dtype)
        _assert_fused_equals_unfused(model, x)
        _assert_fused_equals_unfused(model, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_group_path_is_taken_on_tiny_vgg(dtype):
    """The bordered-buffer kernels (not the compositions) run on Tiny VGG's layers,
    and the conv+ReLU group writes its output straight into the next conv's padded
    input (no padding copy)."""
    model = tiny_vgg(1, 10, 28, padding=1, dtype=dtype)
    model(np.zeros((2, 1, 28, 28), dtype))
    chain = model.features._fusion_steps()[0].chain
    first, second = chain._fast[:2]
    assert first is not None and second is not None
    assert first.out_border == (1, 1)
    assert model.training and chain._saved[1].x_padded is first.y  # the first block wrote into the second's padded input


def test_strided_blocks_take_the_fast_path():
    """Tiny VGG with stride 2: every block runs on bordered buffers (the strided ones with
    the backend's strided kernels), its result the unfused layers' and the reference's
    (with batch norm: tests/test_fusion_batch_norm.py)."""
    dtype = np.float32
    model = tiny_vgg(1, 10, 28, padding=1, stride=2, dtype=dtype, seed=3)
    x = random_array(np.random.default_rng(5), (4, 1, 28, 28), dtype)
    result = _assert_fused_equals_unfused(model, x)
    chain = model.features._fusion_steps()[0].chain
    model(x)
    assert all(buffers is not None for buffers in chain._fast)
    assert [buffers.stride for buffers in chain._fast] == [(2, 2), (1, 1), (2, 2), (1, 1)]
    _assert_matches_reference(model, x, result)


def test_fused_gradients_match_finite_differences():
    """float64, the fast path (4 filters, padding 1 and 0, both group kinds): a few
    entries of every parameter gradient and of the input gradient against central
    differences of the loss."""
    rng = np.random.default_rng(5)  # (seed 2 puts a ReLU/pool kink within eps of one bias: fused and unfused agree)
    c = dict(dtype=np.float64, rng=rng)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, **c), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1, **c),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(5, 4, 3, **c), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 2 * 2, 3, **c))
    steps = model._fusion_steps()
    assert [len(s.groups) for s in steps if isinstance(s, fusion.FusedChain)] == [3]
    x = rng.standard_normal((2, 1, 8, 8))
    labels = np.array([0, 2])

    def loss():
        return F.softmax_cross_entropy(model(x), labels)[0]

    model.zero_grad()
    _, grad = F.softmax_cross_entropy(model(x), labels)
    assert all(b is not None for b in model._fusion_steps()[0].chain._fast)  # the bordered kernels ran
    gx = np.array(model.backward(grad))
    eps = 1e-6
    for name, p in model.named_parameters():
        flat = p.data.reshape(-1)
        for i in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = loss()
            flat[i] = old - eps
            down = loss()
            flat[i] = old
            assert p.grad.reshape(-1)[i] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8), name
    for index in [(0, 0, 0, 0), (1, 0, 3, 4), (1, 0, 7, 7)]:
        saved = x[index]
        x[index] = saved + eps
        up = loss()
        x[index] = saved - eps
        down = loss()
        x[index] = saved
        assert gx[index] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("fused", [True, False])
def test_hyperparameter_warning_points_at_the_users_line(fused):
    """The asymmetric-slide warning names the line that called the model, not a line
    inside numbacnn (nn/fusion.py, nn/module.py), on the fused and the unfused path."""
    import warnings

    from numbacnn.shapes import HyperparameterWarning

    model = tiny_vgg(1, 10, 27, padding=0, strict=False)
    x = np.zeros((2, 1, 27, 27), np.float32)
    from contextlib import nullcontext

    with (nullcontext() if fused else fusion.disabled()), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(x)
    hyper = [w for w in caught if issubclass(w.category, HyperparameterWarning)]
    assert hyper, "27x27 with two 2x2 pools should warn"
    assert all(w.filename == __file__ for w in hyper), [(w.filename, w.lineno) for w in hyper]
