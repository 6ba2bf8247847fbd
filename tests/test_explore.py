"""`numbacnn explore` without a browser: the page is one self-contained file, every
embedded number is a kernel's output (or rebuilt from one bit for bit), the saliency
gradients match finite differences, and bad input is refused in one line with
nothing written. The page in a real browser: tests/test_explore_browser.py."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from numbacnn.cli import main
from numbacnn.explore.collect import derived_maps
from numbacnn.explore.images import pick_one_per_class
from numbacnn.explore.page import PAGE_MARKER
from numbacnn.explore.saliency import input_gradients, saliency_bytes
from numbacnn.models import tiny_vgg
from numbacnn.nn import BatchNorm2d, leaf_layers
from numbacnn.report import layer_activations
from numbacnn.train import load_checkpoint
from explore_fixtures import grey_checkpoint, grey_page, page_data  # noqa: F401  (fixtures)
import reference

pytest.importorskip("PIL")


def decode(text: str, dtype) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(text), dtype=np.dtype(dtype).newbyteorder("<"))


def test_page_is_one_self_contained_file(grey_page):
    text = grey_page.read_text(encoding="utf-8")
    assert PAGE_MARKER in text[:4096]
    assert not re.search(r"https?://", text), "the page names a URL; it must fetch nothing"
    assert not re.search(r"""<(script|img|link|iframe)[^>]*\s(src|href)\s*=""", text, re.I)
    assert "@import" not in text and "url(" not in text  # no CSS fetch either
    assert list(grey_page.parent.iterdir()) == [grey_page]  # one file, nothing beside it


def test_every_embedded_map_is_the_kernels_output(grey_checkpoint, grey_page):
    data = page_data(grey_page)
    loaded = load_checkpoint(grey_checkpoint)
    model = loaded.build_model("cpu")
    layers = [layer for _, layer in leaf_layers(model)]
    derived = [layer for layer in data["layers"] if layer["derive"]]
    assert {layer["derive"] for layer in derived} == {"relu", "max_pool"}  # the size saving is in use
    for image in data["images"]:
        pixels = decode(image["pixels"], np.uint8).reshape(data["input_shape"])
        x = loaded.normalizer(pixels[None], dtype=np.float32)
        np.testing.assert_array_equal(decode(image["input"], np.float32).reshape(x.shape[1:]), x[0])
        activations, logits = layer_activations(model, x)
        kernel_maps = dict(zip([i for i, layer in enumerate(layers) if type(layer).__name__ in
                                ("Conv2d", "ReLU", "MaxPool2d")], (a.maps for a in activations)))
        for layer in data["layers"]:
            if not layer["has_maps"]:
                continue
            expected = kernel_maps[layer["index"]]
            if layer["derive"]:  # the page's rule rebuilds the kernel's output bit for bit
                source = kernel_maps[layer["input_index"]]
                rebuilt = derived_maps(layer["derive"], source, {k: tuple(v) for k, v in layer["hyper"].items()},
                                       tuple(layer["output_shape"]))
                assert rebuilt.tobytes() == expected.tobytes(), layer["explainer_name"]
            else:
                stored = decode(image["maps"][str(layer["index"])], np.float32).reshape(expected.shape)
                np.testing.assert_array_equal(stored, expected)
        np.testing.assert_array_equal(np.asarray(image["logits"], np.float32), logits)
        assert abs(sum(image["probabilities"]) - 1) < 1e-12


def test_embedded_conv_maps_match_the_float64_reference(grey_checkpoint, grey_page):
    """Independent of numbacnn: the first conv's map from the embedded input and weights."""
    data = page_data(grey_page)
    conv = data["layers"][0]
    assert conv["kind"] == "Conv2d"
    weight = decode(conv["weight"], np.float32).reshape(conv["weight_shape"]).astype(np.float64)
    bias = decode(conv["bias"], np.float32).astype(np.float64)
    for image in data["images"][:3]:
        x = decode(image["input"], np.float32).reshape([1] + data["input_shape"]).astype(np.float64)
        expected = reference.conv2d(x, weight, bias, stride=tuple(conv["hyper"]["stride"]),
                                    padding=tuple(conv["hyper"]["padding"]))[0]
        stored = decode(image["maps"]["0"], np.float32).reshape(expected.shape)
        np.testing.assert_allclose(stored, expected, rtol=2e-5, atol=2e-6)


def test_confusion_matrix_and_history_come_from_the_checkpoint(grey_checkpoint, grey_page):
    data = page_data(grey_page)
    history = load_checkpoint(grey_checkpoint).meta["history"]
    assert [h["epoch"] for h in data["history"]] == [h["epoch"] for h in history] == [1, 2]
    assert data["history"][1]["train_loss"] == pytest.approx(history[1]["train_loss"])
    matrix = np.asarray(data["confusion"]["matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == data["confusion"]["images"] == 20
    assert (matrix.sum(axis=1) == 2).all()  # the generated test set: 2 images per class
    # each layer links to the forward kernel numbacnn info --kernels names for it
    sources = data["kernel_sources"]
    assert sources["features.0"].startswith(("conv_rows.", "conv.")), sources  # conv_1_1
    assert ".py:" in sources["features.1"]
    assert sources["classifier.1"].startswith("linear.linear_forward at ")


def test_default_images_are_one_per_class():
    labels = np.array([3, 1, 1, 0, 3, 0, 2, 2, 1])
    assert list(pick_one_per_class(labels, 4)) == [3, 1, 6, 0]
    assert list(pick_one_per_class(labels, 6)) == [3, 1, 6, 0, 5, 2]
    assert len(pick_one_per_class(labels, 50)) == 9


@pytest.mark.parametrize("batch_norm, dropout", [(False, 0.0), (True, 0.3)])
def test_saliency_is_the_input_gradient_by_finite_differences(batch_norm, dropout):
    model = tiny_vgg(in_channels=2, num_classes=3, image_size=8, filters=2, padding=1, dtype=np.float64,
                     seed=3, batch_norm=batch_norm, dropout=dropout)
    rng = np.random.default_rng(0)
    for _, layer in leaf_layers(model):
        if isinstance(layer, BatchNorm2d):  # eval mode uses these: make them matter
            layer.running_mean[...] = rng.normal(0, 0.3, layer.running_mean.shape)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.running_var.shape)
    model.eval()
    x = rng.normal(size=(1, 2, 8, 8))
    gradients = input_gradients(model, x)
    assert gradients.shape == (3, 2, 8, 8)
    step = 1e-6
    for c, i, j in [(0, 0, 0), (1, 3, 4), (0, 7, 7), (1, 5, 2), (0, 2, 6)]:
        bumped = [x.copy(), x.copy()]
        bumped[0][0, c, i, j] += step
        bumped[1][0, c, i, j] -= step
        model.eval()
        numeric = (model(bumped[0])[0] - model(bumped[1])[0]) / (2 * step)
        np.testing.assert_allclose(gradients[:, c, i, j], numeric, rtol=1e-5, atol=1e-8)
    assert not model.training  # left in eval mode


def test_saliency_bytes_scale_each_class_by_its_largest_gradient():
    gradients = np.zeros((2, 3, 2, 2))
    gradients[0, 1, 0, 0], gradients[0, 2, 1, 1] = -4.0, 2.0
    quantised, peaks = saliency_bytes(gradients)
    np.testing.assert_array_equal(quantised[0], [[255, 0], [0, 128]])
    np.testing.assert_array_equal(quantised[1], 0)  # no gradient: all zero, no division by zero
    np.testing.assert_array_equal(peaks, [4.0, 0.0])


# --------------------------------------------------------------------------- #
# bad input: one line, exit 2, nothing written or changed
# --------------------------------------------------------------------------- #


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tmp_path, grey_checkpoint):
    from PIL import Image

    shutil.copy(grey_checkpoint, tmp_path / "good.npz")
    Image.fromarray(np.full((12, 12), 90, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((12, 12, 3), 90, np.uint8), "RGB").save(tmp_path / "colour.png")
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "mine.html").write_text("<html>the user's own page</html>")
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "folder").mkdir()
    return tmp_path


@pytest.mark.parametrize("argv, names", [
    (["missing.npz", "--out", "p.html"], ["missing.npz", "does not exist"]),
    (["good.npz", "--images", "colour.png", "--out", "p.html"], ["colour.png", "colour (3 channels)", "grey"]),
    (["good.npz", "--images", "text.png", "--out", "p.html"], ["text.png"]),
    (["good.npz", "--images", "nothere.png", "--out", "p.html"], ["nothere.png"]),
    (["good.npz", "--out", "notes.txt/p.html"], ["--out notes.txt/p.html", "notes.txt is a file"]),
    (["good.npz", "--out", "folder"], ["--out folder", "is a folder"]),
    (["good.npz", "--out", "mine.html"], ["--out mine.html", "not a numbacnn explore page"]),
    (["good.npz", "--samples", "0", "--out", "p.html"], ["--samples"]),
    (["good.npz", "--out", "/proc/p.html"], ["--out /proc/p.html", "cannot write in the folder /proc"]),
], ids=["missing-checkpoint", "wrong-channel-count", "not-an-image", "missing-image", "out-below-a-file",
        "out-is-a-folder", "out-is-users-file", "no-samples", "out-on-a-pseudo-file-system"])
def test_bad_input_is_one_line_and_writes_nothing(workspace, argv, names, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    before = _tree(workspace)
    code = main(["explore", *argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("numbacnn explore: error: "), err
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert _tree(workspace) == before and not (workspace / "p.html").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(workspace, capsys):
    locked = workspace / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code = main(["explore", str(workspace / "good.npz"), "--out", str(locked / "p.html")])
    finally:
        locked.chmod(0o755)
    assert code == 2 and "not writable" in capsys.readouterr().err
    assert not (locked / "p.html").exists()


def test_user_images_and_overwriting_its_own_page(workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    assert main(["explore", "good.npz", "--images", "grey.png", "--out", "p.html"]) == 0
    first = (workspace / "p.html").read_bytes()
    assert main(["explore", "good.npz", "--images", "grey.png", "grey.png", "--out", "p.html"]) == 0
    out = capsys.readouterr().out
    assert "wrote p.html" in out and "2 images" in out
    data = page_data(workspace / "p.html")
    assert [image["source"] for image in data["images"]] == ["grey.png", "grey.png"]
    assert data["images"][0]["label"] is None and data["confusion"]["images"] == 20
    assert (workspace / "p.html").read_bytes() != first


def test_same_command_same_page(grey_checkpoint, tmp_path):
    from numbacnn.explore import explore

    explore(grey_checkpoint, tmp_path / "a.html", samples=3, progress=False)
    explore(grey_checkpoint, tmp_path / "b.html", samples=3, progress=False)
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()


def test_batch_norm_maps_are_rebuilt_bit_for_bit_or_stored():
    """With batch norm, the page rebuilds BatchNorm2d (x * scale + shift) and the ReLU after
    it from the stored conv maps; every rebuilt map equals the kernels' output bit for bit."""
    from numbacnn.data import Normalizer
    from numbacnn.explore.collect import collect_image, conv_parameters, describe_page_layers
    from numbacnn.explore.page import build_page_data

    model = tiny_vgg(in_channels=3, num_classes=4, image_size=16, filters=4, padding=1, batch_norm=True,
                     dropout=0.25, seed=5)
    rng = np.random.default_rng(1)
    for _, layer in leaf_layers(model):
        if isinstance(layer, BatchNorm2d):
            layer.running_mean[...] = rng.normal(0, 0.2, layer.num_features)
            layer.running_var[...] = rng.uniform(0.3, 3.0, layer.num_features)
            layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.num_features)
    normalizer = Normalizer((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    layers = describe_page_layers(model, (3, 16, 16))
    records = []
    for n in range(3):
        record = collect_image(model, rng.integers(0, 256, (3, 16, 16)).astype(np.uint8), normalizer, np.float32)
        record.saliency = np.zeros((4, 3, 16, 16), np.float32)
        records.append(record)
    data = build_page_data(title="t", source="s", classes="abcd", layers=layers, params=conv_parameters(model),
                           records=records, history=[], confusion={"missing": "none"},
                           slides={"limits": {}, "fields": [], "answers": [], "index": ""})
    derive = {layer["explainer_name"]: layer["derive"] for layer in data["layers"]}
    assert derive["batch_norm_1_1"] == "batch_norm" and derive["relu_1_1"] == "relu" and derive["max_pool_1"] == "max_pool"
    stored = set(data["images"][0]["maps"])
    assert stored == {str(layer["index"]) for layer in data["layers"] if layer["kind"] == "Conv2d"}
    for record in records:
        for layer in layers:
            if layer.derive:
                rebuilt = derived_maps(layer.derive, record.maps[layer.input_index], layer.hyper, layer.output_shape,
                                       layer.affine)
                assert rebuilt.tobytes() == record.maps[layer.index].tobytes(), layer.explainer_name
