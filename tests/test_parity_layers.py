"""Issue 11 items 2-4 (new ops, layers, tiny_vgg options, PyTorch weights).

- every new op (leaky_relu, dropout, batch_norm, avg_pool2d, adaptive_avg_pool2d,
  adaptive_max_pool2d) and its backward against the independent float64 references
  in ``reference.py`` over random shapes and hyperparameters (hypothesis, small
  example counts), on every device (CUDA in the simulator, tiny shapes there), in
  float32 and float64;
- the backwards against central finite differences (float64);
- the same calls against ``torch.nn.functional`` when torch is installed;
- refusals name the argument and what is supported;
- the layers (train/eval, buffers, momentum=None), tiny_vgg(batch_norm=, dropout=),
  checkpoints with BatchNorm buffers, and ``load_state_dict`` from a PyTorch Tiny
  VGG with BatchNorm: same logits in eval mode, same outputs and running statistics
  in training mode.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numbacnn
import numbacnn.functional as F
import reference as ref
from helpers import DTYPES, assert_close, max_spatial_size, on_device, random_array
from numbacnn import nn
from numbacnn.models import tiny_vgg

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _central_difference(f, x, gy, step=1e-6):
    """d/dx sum(gy * f(x)) by central differences, float64."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + step
        plus = np.sum(gy * f(x))
        flat[i] = keep - step
        minus = np.sum(gy * f(x))
        flat[i] = keep
        gflat[i] = (plus - minus) / (2 * step)
    return grad


def _close_fd(actual, expected, name):
    # central differences are exact to ~1e-8 relative here (smooth, step 1e-6)
    err = np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-300)
    assert err < 1e-6, f"{name}: relative error {err:.3g} against finite differences"


# --------------------------------------------------------------------------- strategies


@st.composite
def avg_pool_cases(draw, size_cap):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(kh, size_cap)), draw(st.integers(kw, size_cap))
    return dict(shape=(draw(st.integers(0, 2)), draw(st.integers(1, 3)), h, w),
                kernel_size=(kh, kw), stride=draw(st.sampled_from([None, 1, 2, (2, 1)])),
                padding=(draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))),
                ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
                divisor_override=draw(st.sampled_from([None, None, 3])))


@st.composite
def adaptive_cases(draw, size_cap):
    h, w = draw(st.integers(1, size_cap)), draw(st.integers(1, size_cap))
    out = draw(st.sampled_from([1, (2, 3), (None, 2), (h, w), (h + 1, max(1, w - 1))]))
    return dict(shape=(draw(st.integers(0, 2)), draw(st.integers(1, 3)), h, w), output_size=out)


def _out_hw(output_size, hw):
    if isinstance(output_size, int):
        return (output_size, output_size)
    return tuple(hw[i] if output_size[i] is None else output_size[i] for i in range(2))


# --------------------------------------------------------------------------- forward + backward vs reference


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_avg_pool2d_matches_reference(device, dtype, data, seed):
    case = data.draw(avg_pool_cases(max_spatial_size(device)))
    rng = np.random.default_rng(seed)
    shape = case.pop("shape")
    x = random_array(rng, shape, dtype)
    a, out_hw = ref.avg_pool2d_matrix(shape[2:], **case)
    y = on_device(device, F.avg_pool2d, x, **case)
    assert_close(y, ref.apply_plane_matrix(x, a, out_hw), dtype, "avg_pool2d")
    gy = random_array(rng, (*shape[:2], *out_hw), dtype)
    gx = on_device(device, F.avg_pool2d_backward, gy, shape, **case)
    assert_close(gx, ref.apply_plane_matrix_transposed(gy, a, shape[2:]), dtype, "avg_pool2d_backward")
    # unbatched (C, H, W) gives the unbatched result
    if shape[0]:
        assert_close(on_device(device, F.avg_pool2d, x[0], **case), ref.apply_plane_matrix(x, a, out_hw)[0],
                     dtype, "avg_pool2d unbatched")


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_adaptive_pools_match_reference(device, dtype, data, seed):
    case = data.draw(adaptive_cases(max_spatial_size(device)))
    rng = np.random.default_rng(seed)
    shape, output_size = case["shape"], case["output_size"]
    out_hw = _out_hw(output_size, shape[2:])
    x = random_array(rng, shape, dtype)
    a = ref.adaptive_avg_pool2d_matrix(shape[2:], out_hw)
    assert_close(on_device(device, F.adaptive_avg_pool2d, x, output_size), ref.apply_plane_matrix(x, a, out_hw),
                 dtype, "adaptive_avg_pool2d")
    gy = random_array(rng, (*shape[:2], *out_hw), dtype)
    assert_close(on_device(device, F.adaptive_avg_pool2d_backward, gy, shape),
                 ref.apply_plane_matrix_transposed(gy, a, shape[2:]), dtype, "adaptive_avg_pool2d_backward")
    y_ref, idx_ref = ref.adaptive_max_pool2d(x, out_hw)
    y, idx = on_device(device, F.adaptive_max_pool2d, x, output_size, return_indices=True)
    assert_close(y, y_ref, dtype, "adaptive_max_pool2d")
    assert idx.dtype == np.int64 and np.array_equal(idx, idx_ref)
    # backward: gy scattered to the maxima (np.add.at: repeated maxima add up)
    expected = np.zeros(shape)
    n, c = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for oh in range(out_hw[0]):
        for ow in range(out_hw[1]):
            flat = idx_ref[:, :, oh, ow]
            np.add.at(expected, (n, c, flat // shape[3], flat % shape[3]), gy[:, :, oh, ow].astype(np.float64))
    assert_close(on_device(device, F.adaptive_max_pool2d_backward, gy, x), expected, dtype, "adaptive_max bwd x")
    assert_close(on_device(device, F.adaptive_max_pool2d_backward, gy, None, indices=idx, input_shape=shape),
                 expected, dtype, "adaptive_max bwd indices")


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_leaky_relu_matches_reference(device, dtype, data, seed):
    rng = np.random.default_rng(seed)
    # 0-d only on the CPU: numbacnn.to_device turns a 0-d array into shape (1,) (noted in the report)
    shape = tuple(data.draw(st.lists(st.integers(0, 4), min_size=0 if device == "cpu" else 1, max_size=4)))
    slope = data.draw(st.sampled_from([0.01, 0.2, -0.5, 0.0, 1.5]))
    x = random_array(rng, shape, dtype)
    x.reshape(-1)[: min(2, x.size)] = 0  # the kink itself
    assert_close(on_device(device, F.leaky_relu, x, slope), ref.leaky_relu(x, slope), dtype, "leaky_relu")
    gy = random_array(rng, shape, dtype)
    assert_close(on_device(device, F.leaky_relu_backward, gy, x, slope), ref.leaky_relu_backward(gy, x, slope),
                 dtype, "leaky_relu_backward")


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_batch_norm_matches_reference(device, dtype, data, seed):
    rng = np.random.default_rng(seed)
    cap = max_spatial_size(device) // 2
    rank = data.draw(st.integers(2, 4))
    # N >= 3: with 2 values per channel the training gradient is 0 up to rounding (ill-conditioned)
    shape = (data.draw(st.integers(3, 4)), data.draw(st.integers(1, 3)),
             *[data.draw(st.integers(1, cap)) for _ in range(rank - 2)])
    training, affine = data.draw(st.booleans()), data.draw(st.booleans())
    momentum = data.draw(st.sampled_from([0.1, 0.5, 1.0, 0.0]))
    c = shape[1]
    x = (random_array(rng, shape, dtype) * 3 + 1).astype(dtype)
    rm, rv = random_array(rng, (c,), dtype), (rng.random(c) + 0.5).astype(dtype)
    w, b = (random_array(rng, (c,), dtype), random_array(rng, (c,), dtype)) if affine else (None, None)
    y_ref, rm_ref, rv_ref = ref.batch_norm(x, rm, rv, w, b, training, momentum, 1e-5)
    rm_d, rv_d = numbacnn.to_device(rm, device), numbacnn.to_device(rv, device)
    y = F.batch_norm(numbacnn.to_device(x, device), rm_d, rv_d, *(numbacnn.to_device(a, device) if a is not None
                     else None for a in (w, b)), training, momentum, 1e-5)
    assert_close(y, y_ref, dtype, "batch_norm")
    assert_close(rm_d, rm_ref, dtype, "running_mean")
    assert_close(rv_d, rv_ref, dtype, "running_var (unbiased)")
    gy = random_array(rng, shape, dtype)
    gx, gw, gb = on_device(device, F.batch_norm_backward, gy, x, rm, rv, w, training, 1e-5)
    gx_ref, gw_ref, gb_ref = ref.batch_norm_backward(gy, x, rm, rv, w, training, 1e-5)
    assert_close(gx, gx_ref, dtype, "batch_norm_backward gx")
    if affine:
        assert_close(gw, gw_ref, dtype, "gweight")
        assert_close(gb, gb_ref, dtype, "gbias")
    else:
        assert gw is None and gb is None


def test_dropout_seeded_mask(device):
    rng = np.random.default_rng(0)
    x = random_array(rng, (3, 4, 5), np.float64)
    y1, mask = on_device(device, F.dropout, x, 0.3, seed=7, return_mask=True)
    y2 = on_device(device, F.dropout, x, 0.3, seed=7)
    assert np.array_equal(y1, y2), "the same seed must give the same mask"
    assert np.array_equal(mask, F.dropout_mask(x.shape, 0.3, np.float64, 7)), "mask reproducible from the seed"
    assert set(np.unique(mask)) <= {0.0, 1 / 0.7}
    assert_close(y1, x * mask, np.float64, "dropout = x * mask")
    gy = random_array(rng, x.shape, np.float64)
    assert_close(on_device(device, F.dropout_backward, gy, mask), gy * mask, np.float64, "dropout_backward")
    assert_close(on_device(device, F.dropout, x, 0.3, training=False), x, np.float64, "eval dropout")
    assert not np.array_equal(on_device(device, F.dropout, x, 0.3, seed=8), y1)
    assert np.all(on_device(device, F.dropout, x, 1.0, seed=1) == 0)
    assert np.array_equal(on_device(device, F.dropout, x, 0.0, seed=1), x)


def test_dropout_rate_is_p():
    x = np.ones((200, 500))
    y = F.dropout(x, 0.25, seed=3)
    assert abs((y == 0).mean() - 0.25) < 0.01  # 100,000 draws: 5 sigma is ~0.007
    assert abs(y.mean() - 1.0) < 0.02  # inverted dropout keeps the expectation


# --------------------------------------------------------------------------- finite differences (float64, CPU)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**16), training=st.booleans())
def test_batch_norm_backward_finite_differences(seed, training):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 2, 2, 3))
    rm, rv, w, b = rng.standard_normal(2), rng.random(2) + 0.5, rng.standard_normal(2), rng.standard_normal(2)
    gy = rng.standard_normal(x.shape)
    gx, gw, gb = F.batch_norm_backward(gy, x, rm, rv, w, training)
    _close_fd(gx, _central_difference(lambda v: F.batch_norm(v, rm.copy(), rv.copy(), w, b, training), x, gy), "gx")
    _close_fd(gw, _central_difference(lambda v: F.batch_norm(x, rm.copy(), rv.copy(), v, b, training), w.copy(), gy),
              "gweight")
    _close_fd(gb, _central_difference(lambda v: F.batch_norm(x, rm.copy(), rv.copy(), w, v, training), b.copy(), gy),
              "gbias")


@settings(max_examples=6, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_pool_backwards_finite_differences(data, seed):
    rng = np.random.default_rng(seed)
    case = data.draw(avg_pool_cases(6))
    shape = case.pop("shape")
    shape = (max(shape[0], 1), *shape[1:])
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(F.avg_pool2d(x, **case).shape)
    _close_fd(F.avg_pool2d_backward(gy, shape, **case), _central_difference(lambda v: F.avg_pool2d(v, **case), x, gy),
              "avg_pool2d")
    out = (2, 3)
    gy = rng.standard_normal((*shape[:2], *out))
    _close_fd(F.adaptive_avg_pool2d_backward(gy, shape),
              _central_difference(lambda v: F.adaptive_avg_pool2d(v, out), x, gy), "adaptive_avg_pool2d")
    _close_fd(F.adaptive_max_pool2d_backward(gy, x),  # distinct random values: the maxima are isolated
              _central_difference(lambda v: F.adaptive_max_pool2d(v, out), x, gy), "adaptive_max_pool2d")
    gy = rng.standard_normal(shape)
    x = x + np.sign(x) * 0.01  # away from the kink
    _close_fd(F.leaky_relu_backward(gy, x, 0.1), _central_difference(lambda v: F.leaky_relu(v, 0.1), x, gy),
              "leaky_relu")


# --------------------------------------------------------------------------- against torch.nn.functional


@pytest.mark.parametrize("dtype", DTYPES)
def test_against_torch_functional(dtype):
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    rng = np.random.default_rng(1)
    x = random_array(rng, (2, 3, 7, 6), dtype)
    tx = torch.tensor(x, requires_grad=True)

    def grad_of(fn):
        tx.grad = None
        ty = fn(tx)
        gy = torch.tensor(random_array(rng, tuple(ty.shape), dtype))
        ty.backward(gy)
        return ty.detach().numpy(), gy.numpy(), tx.grad.numpy()

    for kw in (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
               dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True),
               dict(kernel_size=2, divisor_override=3), dict(kernel_size=3, stride=1)):
        ty, gy, tgx = grad_of(lambda t: TF.avg_pool2d(t, **kw))
        assert_close(F.avg_pool2d(x, **kw), ty, dtype, f"avg_pool2d {kw}")
        assert_close(F.avg_pool2d_backward(gy, x.shape, **kw), tgx, dtype, f"avg_pool2d_backward {kw}")
    for size in (1, (3, 4), (5, None), (7, 6), (4, 5)):
        ty, gy, tgx = grad_of(lambda t: TF.adaptive_avg_pool2d(t, size))
        assert_close(F.adaptive_avg_pool2d(x, size), ty, dtype, f"adaptive_avg_pool2d {size}")
        assert_close(F.adaptive_avg_pool2d_backward(gy, x.shape), tgx, dtype, "adaptive_avg_pool2d_backward")
        ty, gy, tgx = grad_of(lambda t: TF.adaptive_max_pool2d(t, size))
        y, idx = F.adaptive_max_pool2d(x, size, return_indices=True)
        assert_close(y, ty, dtype, f"adaptive_max_pool2d {size}")
        assert np.array_equal(idx, TF.adaptive_max_pool2d(torch.tensor(x), size, return_indices=True)[1].numpy())
        assert_close(F.adaptive_max_pool2d_backward(gy, x), tgx, dtype, "adaptive_max_pool2d_backward")
    ty, gy, tgx = grad_of(lambda t: TF.leaky_relu(t, 0.2))
    assert_close(F.leaky_relu(x, 0.2), ty, dtype, "leaky_relu")
    assert_close(F.leaky_relu_backward(gy, x, 0.2), tgx, dtype, "leaky_relu_backward")
    c = x.shape[1]
    rm, rv, w, b = (random_array(rng, (c,), dtype), (rng.random(c) + 0.5).astype(dtype),
                    random_array(rng, (c,), dtype), random_array(rng, (c,), dtype))
    for training in (True, False):
        trm, trv = torch.tensor(rm), torch.tensor(rv)
        tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
        ty, gy, tgx = grad_of(lambda t: TF.batch_norm(t, trm, trv, tw, tb, training, 0.3, 1e-5))
        rm_n, rv_n = rm.copy(), rv.copy()
        assert_close(F.batch_norm(x, rm_n, rv_n, w, b, training, 0.3), ty, dtype, "batch_norm")
        assert_close(rm_n, trm.numpy(), dtype, "running_mean")
        assert_close(rv_n, trv.numpy(), dtype, "running_var")
        gx, gw, gb = F.batch_norm_backward(gy, x, rm, rv, w, training)
        assert_close(gx, tgx, dtype, "batch_norm_backward")
        assert_close(gw, tw.grad.numpy(), dtype, "gweight")
        assert_close(gb, tb.grad.numpy(), dtype, "gbias")


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("call, words", [
    (lambda: F.avg_pool2d(np.zeros((1, 1, 4, 4), np.float16), 2), ["x", "float16", "float32 or float64"]),
    (lambda: F.avg_pool2d(np.zeros((1, 1, 4, 4)), 2, padding=2), ["padding", "at most half"]),
    (lambda: F.avg_pool2d(np.zeros((1, 1, 4, 4)), 2, divisor_override=0), ["divisor_override", "non-zero"]),
    (lambda: F.avg_pool2d(np.zeros((1, 1, 4, 4)), 2, count_include_pad=1), ["count_include_pad", "bool"]),
    (lambda: F.adaptive_avg_pool2d(np.zeros((1, 1, 4, 4)), 0), ["output_size", ">= 1"]),
    (lambda: F.adaptive_max_pool2d(np.zeros((1, 1, 4, 4)), "2"), ["output_size", "int"]),
    (lambda: F.leaky_relu(np.zeros(3, np.int64)), ["x", "int64", "float32 or float64"]),
    (lambda: F.dropout(np.zeros(3), 1.5), ["p", "between 0 and 1"]),
    (lambda: F.dropout(np.zeros(3), 0.5, inplace=True), ["inplace", "not supported"]),
    (lambda: F.batch_norm(np.zeros((1, 2)), None, None, training=True), ["more than 1 value per channel"]),
    (lambda: F.batch_norm(np.zeros((2, 2)), None, None), ["running_mean", "training=False"]),
    (lambda: F.batch_norm(np.zeros((2, 2)), np.zeros(3), np.ones(3)), ["running_mean", "channel"]),
    (lambda: F.batch_norm(np.zeros((2, 2)), np.zeros(2, np.float32), np.ones(2)), ["float32", "dtype"]),
    (lambda: F.batch_norm(np.zeros((2, 2)), np.zeros(2), np.ones(2), eps=0), ["eps", "positive"]),
    (lambda: F.adaptive_max_pool2d_backward(np.zeros((1, 1, 2, 2)), None, indices=np.full((1, 1, 2, 2), 99),
                                            input_shape=(1, 1, 3, 3)), ["indices", "0 <= index < 9"]),
])
def test_refusals_name_the_argument(call, words):
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


# --------------------------------------------------------------------------- layers


def test_batchnorm2d_buffers_modes_and_cumulative_momentum():
    rng = np.random.default_rng(0)
    bn = nn.BatchNorm2d(3, momentum=None, dtype=np.float64)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    batches = [rng.standard_normal((4, 3, 2, 2)) * (i + 1) + i for i in range(3)]
    for x in batches:
        bn(x)
    assert int(bn.num_batches_tracked) == 3
    # momentum=None: the running statistics are the plain averages over the batches
    expected_mean = np.mean([x.mean(axis=(0, 2, 3)) for x in batches], axis=0)
    expected_var = np.mean([x.var(axis=(0, 2, 3), ddof=1) for x in batches], axis=0)
    assert_close(bn.running_mean, expected_mean, np.float64, "cumulative running_mean")
    assert_close(bn.running_var, expected_var, np.float64, "cumulative running_var")
    bn.eval()
    x = batches[0]
    y_ref, _, _ = ref.batch_norm(x, expected_mean, expected_var, np.ones(3), np.zeros(3), False, 0.1, 1e-5)
    assert_close(bn(x), y_ref, np.float64, "eval uses running stats")
    assert int(bn.num_batches_tracked) == 3, "eval must not count batches"
    bn.train()
    gy = rng.standard_normal(x.shape)
    bn(x)
    gx = bn.backward(gy)
    gx_ref, gw_ref, gb_ref = ref.batch_norm_backward(gy, x, None, None, np.ones(3), True, 1e-5)
    assert_close(gx, gx_ref, np.float64, "BatchNorm2d.backward")
    assert_close(bn.weight.grad, gw_ref, np.float64, "weight.grad")
    assert_close(bn.bias.grad, gb_ref, np.float64, "bias.grad")


def test_dropout_layer_modes_and_layers_backward(device):
    x = np.ones((2, 3, 4, 4), np.float32)
    drop = nn.Dropout(0.5, seed=1)
    y = numbacnn.to_host(drop(numbacnn.to_device(x, device)))
    assert 0 < (y == 0).mean() < 1
    gx = numbacnn.to_host(drop.backward(numbacnn.to_device(x, device)))
    assert np.array_equal(gx, y), "the backward uses the forward's mask"
    assert not np.array_equal(numbacnn.to_host(drop(numbacnn.to_device(x, device))), y), "a new mask per step"
    assert np.array_equal(numbacnn.to_host(nn.Dropout(0.5, seed=1)(numbacnn.to_device(x, device))), y)
    drop.eval()
    assert np.array_equal(numbacnn.to_host(drop(numbacnn.to_device(x, device))), x)
    rng = np.random.default_rng(2)
    x = random_array(rng, (2, 2, 5, 4), np.float64)
    for layer, fwd in ((nn.AvgPool2d(2, 1, 1, count_include_pad=False), lambda v: F.avg_pool2d(v, 2, 1, 1, False, False)),
                       (nn.AdaptiveAvgPool2d((2, 3)), lambda v: F.adaptive_avg_pool2d(v, (2, 3))),
                       (nn.AdaptiveMaxPool2d(2), lambda v: F.adaptive_max_pool2d(v, 2)),
                       (nn.LeakyReLU(0.1), lambda v: F.leaky_relu(v, 0.1))):
        y = layer(x)
        assert layer.output_shape(x.shape) == y.shape
        gy = random_array(rng, y.shape, np.float64)
        _close_fd(layer.backward(gy), _central_difference(fwd, x.copy(), gy), type(layer).__name__)


# --------------------------------------------------------------------------- tiny_vgg, checkpoints, PyTorch weights


def _torch_tiny_vgg(torch, filters, final, batch_norm):
    tnn = torch.nn

    def block(cin):
        return [tnn.Conv2d(cin, filters, 3, padding=1), *([tnn.BatchNorm2d(filters)] if batch_norm else []), tnn.ReLU()]

    from collections import OrderedDict
    return tnn.Sequential(OrderedDict(
        features=tnn.Sequential(*block(1), *block(filters), tnn.MaxPool2d(2), *block(filters), *block(filters),
                                tnn.MaxPool2d(2)),
        classifier=tnn.Sequential(tnn.Flatten(), tnn.Linear(filters * final * final, 10))))


def test_load_pytorch_state_dict_same_logits_with_batch_norm():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    reference_model = _torch_tiny_vgg(torch, 4, 3, batch_norm=True).double()
    # non-trivial running statistics and affine parameters
    with torch.no_grad():
        for m in reference_model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.num_batches_tracked.fill_(7)
    model = tiny_vgg(1, 10, 12, filters=4, padding=1, dtype=np.float64, batch_norm=True)
    assert list(model.state_dict()) == list(reference_model.state_dict())
    model.load_state_dict(reference_model.state_dict())  # tensors as they are
    x = np.random.default_rng(0).standard_normal((5, 1, 12, 12))
    reference_model.eval()
    model.eval()
    with torch.no_grad():
        expected = reference_model(torch.tensor(x)).numpy()
    assert_close(model(x), expected, np.float64, "eval logits")
    reference_model.train()
    model.train()
    with torch.no_grad():
        expected = reference_model(torch.tensor(x)).numpy()
    assert_close(model(x), expected, np.float64, "training-mode logits (batch statistics)")
    for name, value in reference_model.state_dict().items():  # running statistics updated alike
        assert_close(model.state_dict()[name], value.numpy(), np.float64 if value.is_floating_point()
                     else np.int64, name) if value.is_floating_point() else \
            np.testing.assert_array_equal(model.state_dict()[name], value.numpy())
    # float32 PyTorch weights into a float32 model: every value kept, bit for bit, as float32
    # (its float32 forward compiled kernels of its own, 14 s cold: the float32 eval forward
    # of batch-norm blocks against the reference is test_fusion_batch_norm's
    # test_eval_mode_folds_the_running_statistics_into_the_conv)
    model32 = tiny_vgg(1, 10, 12, filters=4, padding=1, batch_norm=True)
    state32 = reference_model.float().state_dict()
    model32.load_state_dict(state32)
    loaded = model32.state_dict()
    for name, value in state32.items():
        want = value.numpy()
        assert loaded[name].dtype == want.dtype and loaded[name].tobytes() == want.tobytes(), name
    assert {np.dtype(p.data.dtype) for p in model32.parameters()} == {np.dtype(np.float32)}


def test_load_state_dict_errors_are_one_line():
    model = tiny_vgg(1, 10, 12, filters=4, padding=1, batch_norm=True)
    state = model.state_dict()
    cases = [({k: v for k, v in state.items() if k != "features.1.running_var"}, KeyError, "features.1.running_var"),
             ({**state, "extra.weight": np.zeros(1)}, KeyError, "extra.weight"),
             ({**state, "features.1.running_mean": np.zeros(5, np.float32)}, ValueError, "features.1.running_mean"),
             ({**state, "features.1.num_batches_tracked": np.array(0.0)}, TypeError, "num_batches_tracked"),
             ({**state, "features.0.weight": state["features.0.weight"].astype(np.float64)}, TypeError, "float64")]
    for bad, error, word in cases:
        with pytest.raises(error) as info:
            model.load_state_dict(bad)
        assert word in str(info.value) and "\n" not in str(info.value)
    model.load_state_dict({k: v for k, v in state.items() if "running" not in k}, strict=False)


def test_tiny_vgg_options_and_checkpoint_round_trip(tmp_path):
    from numbacnn.train.checkpoint import load_checkpoint, save_checkpoint

    plain = tiny_vgg(1, 10, 28, padding=1)
    model = tiny_vgg(1, 10, 28, padding=1, batch_norm=True, dropout=0.25)
    assert [n for n in model.state_dict() if n.endswith("weight")] == [
        "features.0.weight", "features.1.weight", "features.3.weight", "features.4.weight", "features.7.weight",
        "features.8.weight", "features.10.weight", "features.11.weight", "classifier.2.weight"]
    # the same seed gives the same convolution weights with or without the options
    assert np.array_equal(plain.state_dict()["features.0.weight"], model.state_dict()["features.0.weight"])
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    model(x)  # one training-mode forward updates the running statistics
    kwargs = dict(in_channels=1, num_classes=10, image_size=28, filters=10, kernel_size=3, padding=1,
                  dtype="float32", seed=0, batch_norm=True, dropout=0.25)
    meta = dict(format=None, epoch=1, model=dict(name="tiny_vgg", kwargs=kwargs), config={}, classes=[str(i) for i in
                range(10)], normalizer=dict(mean=[0.0], std=[1.0]), history=[])
    import numbacnn.train.checkpoint as checkpoint_module
    meta["format"] = checkpoint_module.CHECKPOINT_FORMAT
    save_checkpoint(tmp_path / "c.npz", model, None, meta)
    restored = load_checkpoint(tmp_path / "c.npz").build_model("cpu")
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[name], value, err_msg=name)
    model.eval()
    restored.eval()
    np.testing.assert_array_equal(restored(x), model(x))
    with pytest.raises(ValueError, match="dropout"):
        tiny_vgg(dropout=1.0)


def test_batchnorm2d_to_device_moves_running_stats(device):
    rng = np.random.default_rng(3)
    x = random_array(rng, (3, 2, 3, 3), np.float64)
    cpu_bn, moved = nn.BatchNorm2d(2, dtype=np.float64), nn.BatchNorm2d(2, dtype=np.float64).to(device)
    assert numbacnn.device_of(moved.running_mean) == device and isinstance(moved.num_batches_tracked, np.ndarray)
    y_cpu, y = cpu_bn(x), numbacnn.to_host(moved(numbacnn.to_device(x, device)))
    assert_close(y, y_cpu, np.float64, "BatchNorm2d on the device")
    for name, value in cpu_bn.state_dict().items():
        np.testing.assert_allclose(moved.state_dict()[name], value, rtol=1e-12, err_msg=name)


def test_train_options_batch_norm_and_dropout():
    import argparse

    from numbacnn.commands.train import add_config_arguments
    from numbacnn.train import TrainConfig

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--batch-norm", "--dropout", "0.25"])
    assert args.batch_norm is True and args.dropout == 0.25
    defaults = parser.parse_args([])
    assert defaults.batch_norm is False and defaults.dropout == 0.0
    TrainConfig(batch_norm=True, dropout=0.25).validate()
    for bad in (1.0, -0.1, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="--dropout"):
            TrainConfig(dropout=bad).validate()
    with pytest.raises(ValueError, match="--batch-norm"):
        TrainConfig(batch_norm="yes").validate()
