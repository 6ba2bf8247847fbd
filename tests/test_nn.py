"""Layers: forward/backward against the functional ops, finite differences, state, warnings."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import pytest

import numbacnn
import numbacnn.functional as F
from numbacnn import nn


def small_model(dtype=np.float64, seed=0, padding=1):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=padding, dtype=dtype, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 2, (2, 3), stride=(1, 2), dtype=dtype, rng=rng), nn.ReLU(),
        nn.Flatten(), nn.Linear(2 * 2 * 1, 3, dtype=dtype, rng=rng),
    )


def _loss(model, x, labels):
    loss, grad = F.softmax_cross_entropy(model(x), labels)
    return loss, grad


def test_whole_model_gradient_matches_finite_differences():
    """Every parameter gradient and the input gradient of a small model, in float64."""
    rng = np.random.default_rng(1)
    model = small_model()
    x = rng.standard_normal((3, 2, 6, 6))
    labels = np.array([0, 2, 1])
    model.zero_grad()
    _, grad = _loss(model, x, labels)
    gx = model.backward(grad)
    analytic = {name: p.grad.copy() for name, p in model.named_parameters()}
    eps = 1e-6
    for name, p in model.named_parameters():
        numeric = np.zeros(p.shape)
        flat = p.data.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            up = _loss(model, x, labels)[0]
            flat[i] = old - eps
            down = _loss(model, x, labels)[0]
            flat[i] = old
            numeric.reshape(-1)[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)
    # input gradient at a few positions
    for index in [(0, 0, 0, 0), (1, 1, 3, 4), (2, 0, 5, 5)]:
        xp, xm = x.copy(), x.copy()
        xp[index] += eps
        xm[index] -= eps
        numeric = (_loss(model, xp, labels)[0] - _loss(model, xm, labels)[0]) / (2 * eps)
        assert gx[index] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_layers_call_functional_ops():
    rng = np.random.default_rng(2)
    conv = nn.Conv2d(2, 4, 3, stride=2, padding=1, rng=0)
    x = rng.standard_normal((2, 2, 7, 7)).astype(np.float32)
    np.testing.assert_array_equal(conv(x), F.conv2d(x, conv.weight.data, conv.bias.data, stride=2, padding=1))
    lin = nn.Linear(5, 3, bias=False, rng=0)
    assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]
    z = rng.standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(lin(z), F.linear(z, lin.weight.data))


def test_backward_accumulates_and_first_layer_can_skip_input_grad():
    rng = np.random.default_rng(3)
    model = small_model()
    x = rng.standard_normal((2, 2, 6, 6))
    labels = np.array([1, 0])
    model.zero_grad()
    _, grad = _loss(model, x, labels)
    assert model.backward(grad, input_grad=False) is None
    once = {n: p.grad.copy() for n, p in model.named_parameters()}
    _, grad = _loss(model, x, labels)
    model.backward(grad)
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[n], rtol=1e-12)


def test_backward_needs_a_training_forward():
    model = small_model().eval()
    y = model(np.zeros((1, 2, 6, 6)))
    with pytest.raises(RuntimeError, match="training mode"):
        model.backward(np.ones_like(y))


def test_initialisation_is_pytorch_style_and_seeded():
    conv = nn.Conv2d(4, 8, 3, rng=5)
    bound = 1 / np.sqrt(4 * 9)
    assert conv.weight.shape == (8, 4, 3, 3) and conv.weight.dtype == np.float32
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.8 * bound  # spread over the whole range
    np.testing.assert_array_equal(nn.Conv2d(4, 8, 3, rng=5).weight.data, conv.weight.data)
    lin = nn.Linear(50, 2, rng=np.random.default_rng(0))
    assert np.abs(lin.weight.data).max() <= 1 / np.sqrt(50)


def test_names_state_dict_and_load_checks():
    model = nn.Sequential(OrderedDict([
        ("features", nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU())),
        ("classifier", nn.Sequential(nn.Flatten(), nn.Linear(8, 2, rng=1))),
    ]))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["features.0.weight", "features.0.bias", "classifier.1.weight", "classifier.1.bias"]
    state = model.state_dict()
    assert list(state) == names
    state["features.0.weight"][...] = 0  # a copy: the model is untouched
    assert np.abs(model.features[0].weight.data).sum() > 0
    model.load_state_dict(state)
    np.testing.assert_array_equal(model.features[0].weight.data, 0)

    with pytest.raises(KeyError, match="missing \\['classifier.1.bias'\\]"):
        model.load_state_dict({k: v for k, v in state.items() if k != "classifier.1.bias"})
    bad = dict(state, **{"classifier.1.weight": np.zeros((2, 9), np.float32)})
    with pytest.raises(ValueError, match="classifier.1.weight has shape \\(2, 9\\), expected \\(2, 8\\)"):
        model.load_state_dict(bad)
    bad = dict(state, **{"features.0.bias": np.zeros(2, np.float64)})
    with pytest.raises(TypeError, match="features.0.bias has dtype float64, expected float32"):
        model.load_state_dict(bad)
    extra = dict(state, unknown=np.zeros(1, np.float32))
    with pytest.raises(KeyError, match="unexpected \\['unknown'\\]"):
        model.load_state_dict(extra)
    model.load_state_dict(extra, strict=False)


def test_train_eval_and_to():
    model = small_model(np.float32)
    assert model.training and all(m.training for _, m in model.named_modules())
    model.eval()
    assert not any(m.training for _, m in model.named_modules())
    model.train()
    assert model.to("cpu") is model and model.device == "cpu"
    # modules(): the same modules as named_modules(), this one first (PyTorch's order)
    assert list(model.modules()) == [m for _, m in model.named_modules()] and next(model.modules()) is model


def test_asymmetric_slide_warns_once_per_layer():
    conv = nn.Conv2d(1, 1, 3, stride=2, rng=0)
    x = np.zeros((1, 1, 6, 6), np.float32)  # (6 - 3) / 2: the last row/column is never covered
    with pytest.warns(numbacnn.HyperparameterWarning, match="does not slide symmetrically"):
        conv(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conv(x)
        conv(np.zeros((1, 1, 8, 8), np.float32))
        nn.Conv2d(1, 1, 3, stride=2, rng=0)(np.zeros((1, 1, 7, 7), np.float32))  # symmetric
        nn.MaxPool2d(2)(np.zeros((1, 1, 6, 6), np.float32))
    with pytest.warns(numbacnn.HyperparameterWarning, match="MaxPool2d"):
        nn.MaxPool2d(2)(np.zeros((1, 1, 5, 5), np.float32))


def test_summary_table():
    model = small_model(np.float32)
    text = model.summary((2, 6, 6), print_fn=None)
    assert "(1, 3, 6, 6)" in text and "(1, 3, 3, 3)" in text and "(1, 2, 2, 1)" in text and "(1, 3)" in text
    total = model.num_parameters()
    assert f"total parameters: {total:,}" in text
    assert nn.summary(model, (4, 2, 6, 6), print_fn=None).count("(4,") >= 7
    # conv FLOPs: 2 * out elements * (C * KH * KW) + bias adds
    assert f"{2 * 3 * 6 * 6 * 2 * 9 + 3 * 6 * 6:,}" in text


@pytest.mark.parametrize("make,match", [
    (lambda: nn.Conv2d(3, 4, 3, groups=2), "groups=2 must divide"),
    (lambda: nn.Conv2d(0, 4, 3), "in_channels must be a positive int"),
    (lambda: nn.Conv2d(1, 4, 3, dtype=np.int32), "dtype must be float32 or float64"),
    (lambda: nn.Conv2d(1, 4, 3, stride=2, padding="same"), "padding='same' needs stride 1"),
    (lambda: nn.Linear(4, 2, rng="seed"), "rng: expected"),
    (lambda: nn.Sequential(np.zeros(2)), "must be a Module"),
])
def test_constructor_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
