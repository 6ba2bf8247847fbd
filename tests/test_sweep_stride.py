"""tiny_vgg(stride=...): the stride of each block's first convolution (conv_1_1 and
conv_2_1, the downsampling conv as in ResNet), with the same slide checks; the second
conv of each block keeps stride 1 and the pools 2x2 / stride 2."""

import warnings

import numpy as np
import pytest

import reference as ref
from helpers import assert_close
from numbacnn.models import drops_input_pixels, tiny_vgg, tiny_vgg_sizes
from numbacnn.shapes import HyperparameterWarning, explain_conv


STRIDES = [(2, 2), (1, 1), (2, 2), (1, 1)]  # conv_1_1, conv_1_2, conv_2_1, conv_2_2 at stride 2


def _reference_sizes(size, kernel, padding, stride):
    """Own arithmetic: floor((n + 2p - k) / s) + 1 per conv (s on each block's first conv,
    1 on its second), floor((n - 2) / 2) + 1 per pool."""
    sizes = []
    for layer in ("conv_first", "conv", "pool", "conv_first", "conv", "pool"):
        if layer == "conv_first":
            size = (size + 2 * padding - kernel) // stride + 1
        elif layer == "conv":
            size = size + 2 * padding - kernel + 1
        else:
            size = (size - 2) // 2 + 1
        sizes.append(size)
    return sizes


@pytest.mark.parametrize("image_size,kernel,padding,stride", [(64, 3, 1, 2), (65, 3, 1, 2), (127, 3, 0, 2),
                                                              (28, 3, 1, 1), (100, 4, 1, 2), (28, 3, 1, 2),
                                                              (90, 5, 2, 3)])
def test_sizes_follow_the_strided_formula(image_size, kernel, padding, stride):
    got = [s for _, s in tiny_vgg_sizes(image_size, kernel, padding, strict=False, stride=stride)]
    assert got == _reference_sizes(image_size, kernel, padding, stride)


def test_strided_model_matches_a_float64_reference_forward():
    # 65 + 2 - 3 = 64 is even, so conv_1_1 slides symmetrically; the first pool then gets
    # 33x33 and drops a row and a column, hence strict=False (and the warning it gives).
    model = tiny_vgg(in_channels=1, num_classes=3, image_size=65, filters=4, kernel_size=3, padding=1, stride=2,
                     dtype=np.float64, strict=False, seed=5)
    convs = [layer for layer in model.features if hasattr(layer, "weight")]
    assert [layer.stride for layer in convs] == STRIDES
    x = np.random.default_rng(0).standard_normal((2, 1, 65, 65))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HyperparameterWarning)
        got = model(x)
    y = x
    for i, conv in enumerate(convs):
        y = ref.relu(ref.conv2d(y, conv.weight.data, conv.bias.data, stride=STRIDES[i][0], padding=1))
        if i % 2 == 1:
            y = ref.max_pool2d(y, 2)
    linear = model.classifier[1]
    expected = ref.linear(y.reshape(2, -1), linear.weight.data, linear.bias.data)
    assert_close(got, expected, np.float64)


def test_stride_two_trains_on_fashion_mnist_sizes_without_warnings():
    """3x3, padding 1, stride 2: 28 -> 14 -> 14 -> 7 -> 4 -> 4 -> 2. conv_1_1 skips only its
    last padding row/column ((28 + 2 - 3) / 2 is not whole, but every input pixel is
    covered), which strict mode accepts and which does not warn."""
    assert [s for _, s in tiny_vgg_sizes(28, 3, 1, stride=2)] == [14, 14, 7, 4, 4, 2]
    explanation = explain_conv(28, 3, 2, 1)
    assert not explanation.symmetric and not drops_input_pixels(explanation)
    model = tiny_vgg(in_channels=1, image_size=28, kernel_size=3, padding=1, stride=2)
    assert model.classifier[1].in_features == 10 * 2 * 2
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x)
    # the exemption is for the size checked at construction only: another size still warns
    other = tiny_vgg(in_channels=1, image_size=28, kernel_size=3, padding=1, stride=2).features[0]
    with pytest.warns(HyperparameterWarning, match="does not slide symmetrically over a 30x30"):
        other(np.zeros((1, 1, 30, 30), np.float32))


@pytest.mark.parametrize("kernel,padding,layer,size", [(7, 0, "conv_2_1", 2), (3, 0, "conv_2_2", 2),
                                                       (5, 1, "conv_2_2", 2), (7, 1, "conv_2_1", 4)])
def test_impossible_strides_on_fashion_mnist_say_where(kernel, padding, layer, size):
    # strict=False checks only that every output is at least 1x1 (what the sweep calls impossible)
    with pytest.raises(ValueError, match=rf"stride=2\): layer {layer} gets a {size}x{size} input: .*larger than"):
        tiny_vgg_sizes(28, kernel, padding, strict=False, stride=2)


def test_input_dropping_stride_is_refused_unless_not_strict():
    # (64 - 3) / 2 is not whole and there is no padding to skip: input row and column 63 are dropped
    with pytest.raises(ValueError, match="conv_1_1 .*does not slide symmetrically"):
        tiny_vgg(image_size=64, padding=0, stride=2)
    assert tiny_vgg_sizes(64, 3, 0, strict=False, stride=2)[0] == ("conv_1_1", 31)
    assert drops_input_pixels(explain_conv(64, 3, 2, 0))
    model = tiny_vgg(image_size=64, padding=0, stride=2, strict=False)
    with pytest.warns(HyperparameterWarning, match="Conv2d"):
        model(np.zeros((1, 3, 64, 64), np.float32))


@pytest.mark.parametrize("stride", [0, -1, 1.5, True])
def test_bad_stride_is_refused(stride):
    with pytest.raises(ValueError, match="stride must be a positive int"):
        tiny_vgg(stride=stride)


def test_train_with_stride_end_to_end(tmp_path, capsys):
    """TrainConfig.stride reaches the model, the checkpoint and `numbacnn train --stride`;
    a checkpoint saved with stride != 1 before the per-block rule is refused in one line.

    64x64 images, 3x3 kernels, padding 1, stride 2: 64 -> 32 -> 32 -> 16 -> 8 -> 8 -> 4
    (each block's first conv skips only its last padding row/column).
    """
    import json

    Image = pytest.importorskip("PIL.Image")
    from numbacnn.cli import build_parser, main
    from numbacnn.models import STRIDE_RULE
    from numbacnn.errors import CheckpointError
    from numbacnn.train import TrainConfig, load_checkpoint, train

    rng = np.random.default_rng(0)
    for label in range(3):  # an image folder: one subfolder per class, 64x64 grey
        (tmp_path / "images" / f"class{label}").mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 255, (64, 64)).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / f"class{label}" / f"{i}.png")
    config = TrainConfig(dataset="imagefolder", data_dir=str(tmp_path / "images"), image_size=64, channels=1,
                         epochs=1, batch_size=4, device="cpu", kernel_size=3, padding=1, stride=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HyperparameterWarning)
        metrics = train(config, out=tmp_path / "run", log=None)
    expected = tiny_vgg(in_channels=1, num_classes=3, image_size=64, kernel_size=3, padding=1, stride=2)
    assert metrics["parameters"] == expected.num_parameters() == 10 * (9 + 1) + 3 * 10 * (90 + 1) + 3 * (10 * 4 * 4 + 1)
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint.meta["model"]["kwargs"]["stride"] == 2 and checkpoint.config.stride == 2
    assert checkpoint.meta["model"]["stride_rule"] == STRIDE_RULE
    model = checkpoint.build_model()
    assert [layer.stride for layer in model.features if hasattr(layer, "weight")] == STRIDES
    args = build_parser().parse_args(["train", "--stride", "2"])
    assert args.stride == 2
    with pytest.raises(ValueError, match="stride"):
        TrainConfig(stride=0).validate()

    # the same file as written before the rule (no stride_rule): refused, naming the change
    with np.load(tmp_path / "run" / "checkpoint.npz") as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["model"]["stride_rule"]
    arrays["meta"] = np.array(json.dumps(meta))
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    with pytest.raises(CheckpointError, match="applied to every convolution; it now applies to the first "
                                              "convolution of each block"):
        load_checkpoint(old)
    capsys.readouterr()
    assert main(["evaluate", str(old)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stride 2 was saved when tiny_vgg's stride applied to every convolution" in err[0]
    assert err[0].startswith("numbacnn evaluate: error: ") and "checkpoints with stride 1 are unaffected" in err[0]
    # stride 1 checkpoints carry no rule and load as before
    meta["model"]["kwargs"].pop("stride")
    meta["config"]["stride"] = 1
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(old, **arrays)
    with pytest.raises(CheckpointError, match="linear|classifier|shape"):
        load_checkpoint(old)  # (these weights are a stride-2 model's: the check moves on to the shapes)


def test_sweep_records_stride_two_trained_impossible_and_its_slide_verdict(tmp_path):
    """On 16x16 images: kernel 3, padding 1, stride 2 trains (16 -> 8 -> 8 -> 4 -> 2 -> 2 -> 1,
    verdict 'padding skipped'); padding 0 at stride 2 is impossible (conv_2_1 gets 2x2),
    recorded with its message; stride 1 trains with symmetric slides."""
    from numbacnn.data import write_idx
    from numbacnn.sweep import read_results, run
    from numbacnn.train import TrainConfig

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for prefix, n in (("train", 120), ("t10k", 40)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, (n, 16, 16)).astype(np.uint8)
        images[np.arange(n), labels, :] = 220
        write_idx(data / f"{prefix}-images-idx3-ubyte", images)
        write_idx(data / f"{prefix}-labels-idx1-ubyte", labels)
    base = TrainConfig(data_dir=str(data), epochs=1, batch_size=32, device="cpu", lr=0.05)
    run({"padding": [0, 1], "stride": [1, 2]}, base, tmp_path / "sweep", workers=0, log=None, report=False)
    records = {(r["values"]["padding"], r["values"]["stride"]): r for r in read_results(tmp_path / "sweep")}
    assert {k: r["status"] for k, r in records.items()} == {(0, 1): "done", (1, 1): "done", (1, 2): "done",
                                                           (0, 2): "impossible"}
    assert records[(1, 2)]["feature_sizes"] == [8, 8, 4, 2, 2, 1]
    assert records[(1, 2)]["slides"] == "padding skipped"
    assert records[(1, 2)]["slide_messages"] == [
        "conv_1_1: skips only its last padding row/column (every input pixel is covered)",
        "conv_2_1: skips only its last padding row/column (every input pixel is covered)"]
    assert records[(1, 1)]["slides"] == "symmetric" and records[(0, 1)]["slides"] == "symmetric"
    assert "stride=2): layer conv_2_1 gets a 2x2 input" in records[(0, 2)]["message"]
    assert records[(0, 2)]["slides"] == "impossible"
    # the report's lessons: the borders at stride 1 (not a stride-2 trial's maps), the stride pair
    from numbacnn.sweep.report import lessons

    text = "\n".join(lessons(list(records.values())))
    assert "Borders (3x3 kernels, stride 1): padding 0: feature maps 14 -> 12 -> 6 -> 4 -> 2 -> 1; " \
           "padding 1: feature maps 16 -> 16 -> 8 -> 8 -> 8 -> 4." in text
    assert "kernel 3, padding 1: stride 1: feature maps 16 -> 16 -> 8 -> 8 -> 8 -> 4" in text
    assert "stride 2: feature maps 8 -> 8 -> 4 -> 2 -> 2 -> 1" in text and "stride 1 vs 2: " in text
