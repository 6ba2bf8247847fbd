"""The activation report: layer-by-layer forward, the HTML's files and panel counts,
`numbacnn explain report`, and a headless-Chromium screenshot that is not blank."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from numbacnn.cli import main
from numbacnn.models import tiny_vgg
from numbacnn.nn import Conv2d, Linear, Module, ReLU, Sequential
from numbacnn.nn import leaf_layers
from numbacnn.report import INDEX_NAME, layer_activations, softmax
from numbacnn.train import CHECKPOINT_NAME, TrainConfig, load_checkpoint, train
from test_data import write_fake_idx_dataset

pytest.importorskip("matplotlib")
pytest.importorskip("PIL")

CHROMIUM = Path("/usr/bin/chromium")
IMAGE_SIZE = 12


class ReportPage(HTMLParser):
    """Every referenced file and every element's data-* attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.sections: list[dict[str, str]] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for key in ("src", "href"):
            if attributes.get(key):
                self.references.append(attributes[key])
        if tag == "script":
            self.scripts += 1
        if "data-panels" in attributes:
            self.sections.append(attributes)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real (tiny) checkpoint from numbacnn.train on generated 12x12 MNIST-format data."""
    data = write_fake_idx_dataset(tmp_path_factory.mktemp("data") / "mnist", n_train=40, n_test=10,
                                  size=IMAGE_SIZE)
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(dataset="mnist", data_dir=str(data), epochs=1, batch_size=8, lr=0.05, padding=1,
                         filters=3, val_fraction=0.0, device="cpu", seed=0)
    train(config, out=out, progress=False, log=None)
    return out / CHECKPOINT_NAME


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("image") / "digit.png"
    pixels = np.zeros((20, 20), np.uint8)  # not the model's size: the report resizes
    pixels[4:16, 8:12] = 230
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def report_dir(trained, image_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["explain", "report", str(trained), str(image_file), "--out", str(out)]) == 0
    return out


def parse(report_dir: Path) -> ReportPage:
    page = ReportPage()
    page.feed((report_dir / INDEX_NAME).read_text(encoding="utf-8"))
    return page


def test_layer_by_layer_forward_matches_the_model():
    model = tiny_vgg(in_channels=1, num_classes=3, image_size=IMAGE_SIZE, filters=2, padding=1)
    x = np.random.default_rng(0).standard_normal((1, 1, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    activations, logits = layer_activations(model, x)
    np.testing.assert_allclose(logits, model.eval()(x)[0], rtol=1e-6)
    assert [a.explainer_name for a in activations] == [
        "conv_1_1", "relu_1_1", "conv_1_2", "relu_1_2", "max_pool_1",
        "conv_2_1", "relu_2_1", "conv_2_2", "relu_2_2", "max_pool_2"]
    assert activations[4].maps.shape == (2, 6, 6) and activations[1].maps.min() >= 0
    np.testing.assert_allclose(softmax(logits).sum(), 1.0)


def test_reports_refuse_containers_with_their_own_forward():
    class Residual(Module):
        def __init__(self):
            super().__init__()
            self.conv = Conv2d(1, 1, 3, padding=1, rng=0)

        def forward(self, x):
            return x + self.conv(x)

    with pytest.raises(TypeError, match="Sequential"):
        leaf_layers(Sequential(Residual(), ReLU()))
    assert [name for name, _ in leaf_layers(Sequential(Linear(2, 2, rng=0)))] == ["0"]


def test_report_references_only_existing_files(report_dir):
    page = parse(report_dir)
    assert page.references, "the report shows no images"
    for reference in page.references:
        assert "://" not in reference and not reference.startswith("/"), f"not a local relative file: {reference}"
        assert (report_dir / reference).is_file(), f"{reference} is referenced but missing"
        assert (report_dir / reference).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.scripts == 0  # no JavaScript at all


def test_every_layer_grid_has_its_channel_count_of_panels(report_dir, trained):
    page = parse(report_dir)
    layers = {s["data-layer"]: s for s in page.sections if "data-layer" in s}
    model = load_checkpoint(trained).build_model("cpu")
    expected_channels = {}
    channels = 1
    for name, layer in leaf_layers(model):
        if isinstance(layer, Conv2d):
            channels = layer.out_channels
        if type(layer).__name__ in ("Conv2d", "ReLU", "MaxPool2d"):
            expected_channels[name] = channels
    assert expected_channels and set(expected_channels) <= set(layers)
    for name, count in expected_channels.items():
        assert int(layers[name]["data-channels"]) == count
        assert int(layers[name]["data-panels"]) == count, f"{name}: panels != channels"
    kernels = next(s for s in page.sections if s.get("data-role") == "kernels")
    assert int(kernels["data-panels"]) == 3 * 1  # 3 filters x 1 input channel


def test_report_cli_prints_prediction_and_probabilities_sum_to_one(trained, image_file, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["explain", "report", str(trained), str(image_file), "--out", str(out), "--invert"]) == 0
    printed = capsys.readouterr().out
    assert "predicted: " in printed and "max_pool_2" in printed and f"wrote {out / INDEX_NAME}" in printed
    html_text = (out / INDEX_NAME).read_text(encoding="utf-8")
    percentages = [float(p) for p in
                   __import__("re").findall(r'<td class="num">([0-9.]+)%</td>', html_text)[:10]]
    assert len(percentages) == 10 and abs(sum(percentages) - 100) < 0.5
    assert "(inverted)" in html_text


def test_report_cli_errors(tmp_path, image_file, capsys):
    code = main(["explain", "report", str(tmp_path / "missing.npz"), str(image_file), "--out", str(tmp_path)])
    assert code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium (/usr/bin/chromium) is not installed")
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    screenshot = tmp_path / "report.png"
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             f"--screenshot={screenshot}", "--window-size=1200,2000",
             (report_dir / INDEX_NAME).resolve().as_uri()],
            check=True, capture_output=True, timeout=120, env=dict(os.environ, HOME=profile),
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(screenshot))[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    # a blank page is one colour; a rendered report has text, images and colour maps
    assert pixels.std() > 0.05
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200


# --------------------------------------------------------------------------- #
# issue 9, class 7: `explain report` with bad checkpoints, images and folders:
# one stderr line naming the file or option, rc 2, nothing written or changed
# --------------------------------------------------------------------------- #

import sys  # noqa: E402


def _report_cli(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "numbacnn.cli", "explain", "report", *map(str, argv)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def _one_error_line(done, *names):
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("numbacnn explain report: error: "), done.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tmp_path, trained, image_file):
    """A folder with the checkpoint, the image, a NaN checkpoint, bad images and files in the way."""
    shutil.copy(trained, tmp_path / "good.npz")
    shutil.copy(image_file, tmp_path / "digit.png")
    state = dict(np.load(trained, allow_pickle=False))
    name = next(k for k in state if k.endswith("features.0.weight"))
    state[name] = np.full_like(state[name], np.nan)
    np.savez(tmp_path / "diverged.npz", **state)
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<html>the user's own page</html>")
    return tmp_path


@pytest.mark.parametrize("argv, names", [
    (["diverged.npz", "digit.png", "--out", "r"], ["diverged.npz", "features.0.weight", "NaN"]),
    (["good.npz", "digit.png", "--out", "notes.txt"], ["--out notes.txt", "is a file"]),
    (["good.npz", "digit.png", "--out", "notes.txt/r"], ["--out notes.txt/r", "notes.txt is a file"]),
    (["good.npz", "digit.png", "--out", "site"], ["site/index.html", "not a numbacnn report", "--out site"]),
    (["missing.npz", "digit.png", "--out", "r"], ["missing.npz"]),
    (["good.npz", "missing.png", "--out", "r"], ["missing.png"]),
    (["good.npz", "text.png", "--out", "r"], ["text.png"]),
    (["good.npz", "empty.jpg", "--out", "r"], ["empty.jpg"]),
    (["good.npz", "folder.png", "--out", "r"], ["folder.png"]),
], ids=["nan-weights", "out-is-a-file", "out-below-a-file", "out-has-users-index", "missing-checkpoint",
        "missing-image", "text-as-png", "zero-byte-jpeg", "folder-as-png"])
def test_report_cli_refuses_in_one_line_and_changes_nothing(workspace, argv, names):
    before = _tree(workspace)
    done = _report_cli(*argv, cwd=workspace)
    _one_error_line(done, *names)
    assert _tree(workspace) == before  # nothing written, nothing changed
    assert not (workspace / "r").exists()


def test_report_overwrites_its_own_previous_report(workspace):
    first = _report_cli("good.npz", "digit.png", "--out", "r", cwd=workspace)
    assert first.returncode == 0, first.stderr
    again = _report_cli("good.npz", "digit.png", "--out", "r", "--invert", cwd=workspace)
    assert again.returncode == 0, again.stderr
    assert "(inverted)" in (workspace / "r" / INDEX_NAME).read_text(encoding="utf-8")
    assert f"wrote {Path('r') / INDEX_NAME}" in again.stdout


def test_write_report_refuses_non_finite_parameters(tmp_path):
    from numbacnn.report import write_report

    model = tiny_vgg(in_channels=1, num_classes=3, image_size=IMAGE_SIZE, filters=4, padding=1)
    model.parameters()[2].data[...] = np.inf
    with pytest.raises(ValueError, match=r"parameter features\.2\.weight has \d+ of \d+ values NaN or infinite"):
        write_report(model, np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8), tmp_path / "r", ["a", "b", "c"])
    assert not (tmp_path / "r").exists()
