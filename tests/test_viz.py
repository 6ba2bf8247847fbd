"""numbacnn.viz: the slide picture's coverage, panel counts, training curves, the missing-extra error."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from numbacnn import viz
from numbacnn.shapes import explain_conv

pytest.importorskip("matplotlib")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(str(path))


@pytest.mark.parametrize("input_size, kernel, stride, padding, dilation", [
    (7, 3, 3, 0, 1), (7, 3, 2, 1, 1), ((6, 7), (3, 2), (2, 3), (1, 0), 1), (9, 3, 2, 0, 2), (5, 1, 2, 0, 1),
])
def test_coverage_zeros_are_exactly_the_uncovered_border(input_size, kernel, stride, padding, dilation):
    e = explain_conv(input_size, kernel, stride, padding, dilation)
    counts = viz.coverage_counts(e)
    assert counts.shape == (e.input_size[0] + 2 * e.padding[0], e.input_size[1] + 2 * e.padding[1])
    assert len(viz.kernel_positions(e)) == e.output_size[0] * e.output_size[1]
    # the uncovered border rows/columns read nothing; the row/column before them is read
    rows, cols = e.uncovered
    if rows:
        assert not counts[-rows:].any() and counts[-rows - 1].any()
    if cols:
        assert not counts[:, -cols:].any() and counts[:, -cols - 1].any()
    if dilation == 1 and e.symmetric and max(e.stride) <= min(e.kernel_size):
        # without dilation holes or strides longer than the kernel, a symmetric slide reads every cell
        assert counts.min() >= 1
    # every kernel position reads kernel_h * kernel_w cells
    assert counts.sum() == len(viz.kernel_positions(e)) * e.kernel_size[0] * e.kernel_size[1]


@pytest.mark.parametrize("args", [(7, 3, 3, 0), (40, 3, 1, 0), (3, 5, 1, 0)])
def test_draw_conv_slide_writes_a_png(tmp_path, args):
    path = viz.draw_conv_slide(explain_conv(*args), tmp_path / "sub" / "slide.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_uncovered_cells_are_drawn_red(tmp_path):
    path = viz.draw_conv_slide(explain_conv(7, 3, 3, 0), tmp_path / "slide.png")
    pixels = read_png(path)[..., :3]
    red = np.array([int(viz.UNCOVERED_COLOUR[k:k + 2], 16) / 255 for k in (1, 3, 5)])
    assert (np.abs(pixels - red).max(axis=-1) < 0.02).sum() > 500  # 13 red cells of many pixels each


@pytest.mark.parametrize("channels", [1, 3, 10, 7])
def test_activation_grid_has_one_panel_per_channel(tmp_path, channels):
    maps = np.random.default_rng(channels).standard_normal((channels, 6, 5)).astype(np.float32)
    assert viz.save_activation_grid(maps, tmp_path / "a.png", "test") == channels
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG_SIGNATURE


def test_activation_grid_handles_constant_and_2d_maps(tmp_path):
    assert viz.save_activation_grid(np.zeros((4, 4)), tmp_path / "zeros.png") == 1
    with pytest.raises(ValueError, match=r"maps must be \(C, H, W\)"):
        viz.save_activation_grid(np.zeros((1, 2, 3, 4)), tmp_path / "bad.png")


def test_colour_scale_is_diverging_for_signed_values():
    assert viz._colour_scale(np.array([-1.0, 3.0])) == ("RdBu_r", -3.0, 3.0)
    assert viz._colour_scale(np.array([0.0, 2.0])) == ("viridis", 0.0, 2.0)


def test_save_kernels_panels(tmp_path):
    weights = np.random.default_rng(0).standard_normal((4, 3, 3, 3))
    assert viz.save_kernels(weights, tmp_path / "k.png", "kernels") == 12
    assert viz.save_kernels(weights[:, :1], tmp_path / "k1.png") == 4
    with pytest.raises(ValueError, match="weights must be"):
        viz.save_kernels(weights[0], tmp_path / "bad.png")


def test_save_image_enlarges_without_smoothing(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    image = np.zeros((1, 4, 4), np.uint8)
    image[0, 0, 0] = 255
    path = viz.save_image(image, tmp_path / "i.png", min_size=16)
    with Image.open(path) as picture:
        pixels = np.asarray(picture)
    assert pixels.shape == (16, 16) and pixels[:4, :4].min() == 255 and pixels[4:, :].max() == 0


# metrics.json's structure, as numbacnn.train writes it
METRICS = {
    "history": [
        {"epoch": 1, "lr": 0.01, "train_loss": 0.68, "train_accuracy": 0.756, "val_loss": 0.43,
         "val_accuracy": 0.843, "seconds": 176.0, "images_per_second": 324.0},
        {"epoch": 2, "lr": 0.01, "train_loss": 0.41, "train_accuracy": 0.85, "val_loss": 0.38,
         "val_accuracy": 0.86, "seconds": 170.0, "images_per_second": 330.0},
    ],
    "test_accuracy": 0.855,
}


def test_plot_training_curves_from_metrics(tmp_path):
    assert viz.plot_training_curves(METRICS, tmp_path / "curves.png").read_bytes()[:8] == PNG_SIGNATURE
    # a bare history without validation works too
    history = [{k: v for k, v in h.items() if not k.startswith("val")} for h in METRICS["history"]]
    assert viz.plot_training_curves(history, tmp_path / "h.png").exists()
    with pytest.raises(ValueError, match="no history"):
        viz.plot_training_curves({"history": []}, tmp_path / "none.png")


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r'pip install "numbacnn\[viz\]"'):
        viz.save_activation_grid(np.zeros((1, 2, 2)), tmp_path / "x.png")


def test_grids_of_many_channels_draw_the_first_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(viz, "MAX_GRID_PANELS", 8)  # the same code path, drawn faster
    monkeypatch.setattr(viz, "MAX_KERNEL_CHANNELS", 4)
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((100, 5, 5))
    assert viz.save_activation_grid(maps, tmp_path / "a.png", "conv") == viz.MAX_GRID_PANELS
    assert (tmp_path / "a.png").read_bytes().startswith(PNG_SIGNATURE)
    weights = rng.standard_normal((40, 20, 3, 3))
    drawn = viz.save_kernels(weights, tmp_path / "k.png", "kernels")
    assert drawn == (viz.MAX_GRID_PANELS // viz.MAX_KERNEL_CHANNELS) * viz.MAX_KERNEL_CHANNELS
    assert viz.save_kernels(weights[:2, :3], tmp_path / "small.png") == 6  # within the caps: all drawn


@pytest.mark.parametrize("path, written", [("pic", "pic.png"), ("pic.PNG", "pic.PNG"), ("folder", "folder/x.png"),
                                           ("new/", "new/x.png")])
def test_png_path_resolves_folders_and_missing_suffixes(tmp_path, path, written):
    (tmp_path / "folder").mkdir()
    assert viz.png_path(tmp_path / path if not path.endswith("/") else f"{tmp_path}/{path}", "x.png") == \
        tmp_path / written


@pytest.mark.parametrize("path, match", [("pic.txt", r"the picture is a PNG, not a \.txt file"),
                                         ("file.md/pic.png", r"file\.md is a file"),
                                         ("", r"empty picture path")])
def test_png_path_refuses_what_it_cannot_write(tmp_path, path, match):
    (tmp_path / "file.md").write_text("keep")
    with pytest.raises(viz.PictureError, match=match):
        viz.png_path(tmp_path / path if path else "", "x.png")
    assert (tmp_path / "file.md").read_text() == "keep"


def test_draw_conv_slide_refuses_huge_inputs_before_allocating(tmp_path):
    with pytest.raises(ValueError, match=r"the padded input is 1000000002x7 cells, too many to draw"):
        viz.draw_conv_slide(explain_conv((10**9, 5), 3, padding=1), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_keeps_the_previous_picture(tmp_path, monkeypatch):
    """Pictures are written atomically: a save that dies half way (here savefig raises
    after writing some bytes) leaves the previous file as it was and no temporary file."""
    from matplotlib.figure import Figure

    metrics = {"history": [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5},
                           {"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.7}]}
    path = tmp_path / "curves.png"
    viz.plot_training_curves(metrics, path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")

    def dies_half_way(self, f, **kwargs):
        f.write(b"\x89PNG half")
        raise OSError("no space left on device")

    monkeypatch.setattr(Figure, "savefig", dies_half_way)
    with pytest.raises(OSError, match="no space"):
        viz.plot_training_curves(metrics, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_kernel_picture_title_fits_the_figure(tmp_path, monkeypatch):
    """The RGB report's first-layer kernel picture (10x3 panels, ~3 inches wide) had
    its title clipped at both sides (issue 21)."""
    seen = {}

    def keep(fig, path, dpi=100):
        fig.canvas.draw()
        seen["title"] = fig._suptitle.get_window_extent()
        seen["width"] = fig.bbox.width

    monkeypatch.setattr(viz, "save_figure", keep)
    weights = np.random.default_rng(0).standard_normal((10, 3, 3, 3))
    viz.save_kernels(weights, tmp_path / "k.png", "first-layer kernels (10, 3, 3, 3) (filter x input channel)")
    assert seen["title"].x0 >= 0 and seen["title"].x1 <= seen["width"]
