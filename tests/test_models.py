"""Tiny VGG: structure, names, hyperparameter errors, and one training step against PyTorch."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import numbacnn.functional as F
from numbacnn.models import tiny_vgg, tiny_vgg_sizes
from numbacnn.optim import SGD


def test_default_sizes_and_parameter_count():
    assert [s for _, s in tiny_vgg_sizes(64)] == [62, 60, 30, 28, 26, 13]
    model = tiny_vgg()
    assert model.num_parameters() == 19_920
    assert model.output_shape((2, 3, 64, 64)) == (2, 10)
    assert [s for _, s in tiny_vgg_sizes(28, padding=1)] == [28, 28, 14, 14, 14, 7]


def test_pytorch_style_names():
    names = [n for n, _ in tiny_vgg(in_channels=1, image_size=28).named_parameters()]
    assert names == [f"features.{i}.{k}" for i in (0, 2, 5, 7) for k in ("weight", "bias")] + [
        "classifier.1.weight", "classifier.1.bias"]


def test_same_seed_same_weights():
    a, b = tiny_vgg(seed=3).state_dict(), tiny_vgg(seed=3).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = tiny_vgg(seed=4).state_dict()
    assert not np.array_equal(a["features.0.weight"], c["features.0.weight"])


def test_asymmetric_combination_fails_at_construction():
    # 63 -> 61 -> 59, then a 2x2 pool with stride 2 drops the last row and column
    with pytest.raises(ValueError, match="max_pool_1 gets a 59x59 input.*does not slide symmetrically"):
        tiny_vgg(image_size=63)


def test_non_strict_builds_asymmetric_models_that_warn():
    import numbacnn

    # 17 -> 15 -> 13, then the first pool drops a row and a column: -> 6 -> 4 -> 2 -> 1
    assert [s for _, s in tiny_vgg_sizes(17, strict=False)] == [15, 13, 6, 4, 2, 1]
    model = tiny_vgg(in_channels=1, image_size=17, strict=False)
    assert model.output_shape((1, 1, 17, 17)) == (1, 10) and model.classifier[1].in_features == 10
    with pytest.warns(numbacnn.HyperparameterWarning, match="MaxPool2d"):
        model(np.zeros((1, 1, 17, 17), np.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        tiny_vgg(image_size=8, kernel_size=5, strict=False)


def test_too_small_input_fails_at_construction():
    with pytest.raises(ValueError, match="kernel 7x7.*larger than the padded input"):
        tiny_vgg(image_size=12, kernel_size=7)
    with pytest.raises(ValueError, match="filters must be a positive int"):
        tiny_vgg(filters=0)
    with pytest.raises(ValueError, match="padding must be an int >= 0"):
        tiny_vgg(padding=-1)


def _torch_tiny_vgg(torch, model, in_channels, image_size, padding):
    nn = torch.nn
    final = tiny_vgg_sizes(image_size, padding=padding)[-1][1]

    def conv(cin):
        return nn.Conv2d(cin, 10, 3, padding=padding)

    net = nn.Sequential(OrderedDict(
        features=nn.Sequential(conv(in_channels), nn.ReLU(), conv(10), nn.ReLU(), nn.MaxPool2d(2),
                               conv(10), nn.ReLU(), conv(10), nn.ReLU(), nn.MaxPool2d(2)),
        classifier=nn.Sequential(nn.Flatten(), nn.Linear(10 * final * final, 10)),
    ))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return net


@pytest.mark.parametrize("padding", [0, 1])
def test_one_training_step_matches_pytorch(padding):
    torch = pytest.importorskip("torch")
    in_channels, image_size = 1, 28
    model = tiny_vgg(in_channels=in_channels, image_size=image_size, padding=padding, seed=0)
    net = _torch_tiny_vgg(torch, model, in_channels, image_size, padding)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, in_channels, image_size, image_size)).astype(np.float32)
    labels = np.array([3, 1, 9, 0])

    loss, grad = F.softmax_cross_entropy(model(x), labels)
    model.backward(grad, input_grad=False)
    tloss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(labels))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-5)
    tparams = dict(net.named_parameters())
    for name, p in model.named_parameters():
        expected = tparams[name].grad.numpy()
        scale = np.abs(expected).max()
        np.testing.assert_allclose(p.grad, expected, rtol=2e-4, atol=2e-5 * scale, err_msg=name)

    # ... and the SGD step that follows
    SGD(model.parameters(), lr=0.01, momentum=0.9).step()
    torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9).step()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.data, tparams[name].detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
