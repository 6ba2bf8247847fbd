"""tiny_vgg(stride=...): every convolution's stride, with the same slide checks."""

import warnings

import numpy as np
import pytest

import reference as ref
from helpers import assert_close
from numbacnn.models import tiny_vgg, tiny_vgg_sizes
from numbacnn.shapes import HyperparameterWarning


def _reference_sizes(size, kernel, padding, stride):
    """Own arithmetic: floor((n + 2p - k) / s) + 1 per conv, floor((n - 2) / 2) + 1 per pool."""
    sizes = []
    for layer in ("conv", "conv", "pool", "conv", "conv", "pool"):
        if layer == "conv":
            size = (size + 2 * padding - kernel) // stride + 1
        else:
            size = (size - 2) // 2 + 1
        sizes.append(size)
    return sizes


@pytest.mark.parametrize("image_size,kernel,padding,stride", [(64, 3, 1, 2), (65, 3, 1, 2), (127, 3, 0, 2),
                                                              (28, 3, 1, 1), (100, 4, 1, 2)])
def test_sizes_follow_the_strided_formula(image_size, kernel, padding, stride):
    got = [s for _, s in tiny_vgg_sizes(image_size, kernel, padding, strict=False, stride=stride)]
    assert got == _reference_sizes(image_size, kernel, padding, stride)


def test_strided_model_matches_a_float64_reference_forward():
    # 65 + 2 - 3 = 64 is even, so conv_1_1 slides symmetrically; later layers do not,
    # hence strict=False (and the warnings they give).
    model = tiny_vgg(in_channels=1, num_classes=3, image_size=65, filters=4, kernel_size=3, padding=1, stride=2,
                     dtype=np.float64, strict=False, seed=5)
    convs = [layer for layer in model.features if hasattr(layer, "weight")]
    assert [layer.stride for layer in convs] == [(2, 2)] * 4
    x = np.random.default_rng(0).standard_normal((2, 1, 65, 65))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HyperparameterWarning)
        got = model(x)
    y = x
    for i, conv in enumerate(convs):
        y = ref.relu(ref.conv2d(y, conv.weight.data, conv.bias.data, stride=2, padding=1))
        if i % 2 == 1:
            y = ref.max_pool2d(y, 2)
    linear = model.classifier[1]
    expected = ref.linear(y.reshape(2, -1), linear.weight.data, linear.bias.data)
    assert_close(got, expected, np.float64)


def test_stride_two_on_fashion_mnist_is_impossible_and_says_where():
    with pytest.raises(ValueError, match=r"stride=2\): layer max_pool_2 gets a 1x1 input"):
        tiny_vgg(in_channels=1, image_size=28, kernel_size=3, padding=1, stride=2, strict=False)


def test_asymmetric_stride_is_refused_unless_not_strict():
    # (64 + 2 - 3) / 2 is not an integer: the last row and column are dropped
    with pytest.raises(ValueError, match="conv_1_1 .*does not slide symmetrically"):
        tiny_vgg(image_size=64, padding=1, stride=2)
    assert tiny_vgg_sizes(64, 3, 1, strict=False, stride=2)[0] == ("conv_1_1", 32)


@pytest.mark.parametrize("stride", [0, -1, 1.5, True])
def test_bad_stride_is_refused(stride):
    with pytest.raises(ValueError, match="stride must be a positive int"):
        tiny_vgg(stride=stride)


def test_train_with_stride_end_to_end(tmp_path):
    """TrainConfig.stride reaches the model, the checkpoint and `numbacnn train --stride`.

    64x64 images, 4x4 kernels, padding 1, stride 2: 64 -> 32 -> 16 -> 8 -> 4 -> 2 -> 1,
    every slide symmetric ((n + 2 - 4) is even at each conv).
    """
    Image = pytest.importorskip("PIL.Image")
    from numbacnn.cli import build_parser
    from numbacnn.train import TrainConfig, load_checkpoint, train

    rng = np.random.default_rng(0)
    for label in range(3):  # an image folder: one subfolder per class, 64x64 grey
        (tmp_path / "images" / f"class{label}").mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 255, (64, 64)).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / f"class{label}" / f"{i}.png")
    config = TrainConfig(dataset="imagefolder", data_dir=str(tmp_path / "images"), image_size=64, channels=1,
                         epochs=1, batch_size=4, device="cpu", kernel_size=4, padding=1, stride=2)
    metrics = train(config, out=tmp_path / "run", log=None)
    expected = tiny_vgg(in_channels=1, num_classes=3, image_size=64, kernel_size=4, padding=1, stride=2).num_parameters()
    assert metrics["parameters"] == expected
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint.meta["model"]["kwargs"]["stride"] == 2 and checkpoint.config.stride == 2
    model = checkpoint.build_model()
    assert [layer.stride for layer in model.features if hasattr(layer, "weight")] == [(2, 2)] * 4
    args = build_parser().parse_args(["train", "--stride", "2"])
    assert args.stride == 2
    with pytest.raises(ValueError, match="stride"):
        TrainConfig(stride=0).validate()
