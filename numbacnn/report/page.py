"""The static HTML report: ``DIR/index.html`` and its images (``DIR/images/*.png``)
for one image through a model (:func:`write_report`), or for a checkpoint and an
image file (:func:`report_from_checkpoint`).

The page shows the input, every layer's activation maps as a grid, the
first-layer kernels and the softmax probabilities with the predicted class. It
needs no server, no network and no JavaScript; open it from disk in any browser.
"""

from __future__ import annotations

import html
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from numbacnn.data import Normalizer, load_image
from numbacnn.device import to_device, to_host
from numbacnn.errors import CheckpointError, ImageError, NumbacnnError, OutputError, printable
from numbacnn.files import FolderLock, atomic_write
from numbacnn.nn import Conv2d, Module, leaf_layers
from numbacnn.report.activations import layer_activations, softmax
from numbacnn.report.layers import LayerDescription, describe_layers

INDEX_NAME = "index.html"
PROBABILITY_BAR_PIXELS = 150  # width of a 100% bar; keeps input, prediction and kernels on one row at 1200 px
IMAGES_DIR = "images"
# Every page this module writes carries this line; an index.html without it is the
# user's own file and is never overwritten.
REPORT_MARKER = "Written by numbacnn explain report."


def check_report_folder(out_dir: str | os.PathLike, where: str | None = None) -> Path:
    """Raise (nothing written) unless ``out_dir`` can take a report: a folder, or one
    that can be created, writable, whose ``index.html`` (if any) is a numbacnn report
    and whose ``images`` (if any) is a folder. Messages name the path.

    ``where`` names the folder in messages (default ``"report folder <out_dir>"``;
    the CLI passes ``"--out <out_dir>"``).

    Raises
    ------
    numbacnn.errors.OutputError (an OSError)
    """
    out_dir = Path(out_dir)
    where = where or f"report folder {out_dir}"
    if out_dir.is_symlink() and not out_dir.exists():
        raise OutputError(f"{out_dir} is a symlink to {os.readlink(out_dir)}, which does not exist", where,
                          "create its target, remove the symlink or choose another folder")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        below = "" if existing == out_dir else f", so {out_dir} cannot be created below it"
        raise OutputError(f"{existing} is a file{below}", where, "choose a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in {existing} (permission denied)", where, "choose a writable folder")
    index, images = out_dir / INDEX_NAME, out_dir / IMAGES_DIR
    if index.is_symlink():
        raise OutputError(f"{index} is a symlink (numbacnn never writes through one)", where,
                          "remove it or choose another folder")
    if index.exists():
        try:
            # an empty index.html holds nothing to lose: what an interrupted report of an
            # older numbacnn (which did not write it atomically) left behind
            ours = index.is_file() and (index.stat().st_size == 0 or REPORT_MARKER in index.read_text(
                encoding="utf-8", errors="replace"))
        except OSError:
            ours = False
        if not ours:
            raise OutputError(f"{index} exists and is not a numbacnn report", where,
                              "choose another folder; it is left as it is")
    if images.is_symlink():
        raise OutputError(f"{images} is a symlink (numbacnn never writes through one)", where,
                          "remove it or choose another folder")
    if images.exists() and not images.is_dir():
        raise OutputError(f"{images} is a file", where, "choose another folder")
    return out_dir


def check_finite_parameters(model: Module, where: str) -> None:
    """CheckpointError (a ValueError) naming the first parameter with NaN or infinite values (a diverged
    run's weights give NaN activations and probabilities, nothing to explain)."""
    for name, p in model.named_parameters():
        values = np.asarray(to_host(p.data))
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise CheckpointError(f"parameter {name} has {bad} of {values.size} values NaN or infinite", where,
                                  "the run diverged: use an earlier checkpoint, or retrain with a smaller --lr")


@dataclass
class ReportLayer:
    """One activation grid in a report.

    Attributes
    ----------
    name, explainer_name, kind : str
    shape : (C, H, W)
    panels : int
        Panels drawn in ``image`` (one per channel).
    image : str
        Path of the PNG relative to the report folder.
    value_range : (float, float)
        Smallest and largest activation.
    """

    name: str
    explainer_name: str
    kind: str
    shape: tuple[int, int, int]
    panels: int
    image: str
    value_range: tuple[float, float]


@dataclass
class Report:
    """What :func:`write_report` wrote.

    Attributes
    ----------
    index : Path
        ``out_dir/index.html``.
    layers : list of ReportLayer
        Every activation grid, in forward order.
    kernel_panels : int
        Panels in the first-layer kernel picture.
    probabilities : float array (classes,)
    classes : tuple of str
    predicted : int
        Index of the most probable class.
    images : list of str
        Every image file written, relative to the report folder.
    """

    index: Path
    layers: list[ReportLayer]
    kernel_panels: int
    probabilities: np.ndarray
    classes: tuple[str, ...]
    predicted: int
    images: list[str] = field(default_factory=list)

    @property
    def predicted_class(self) -> str:
        return self.classes[self.predicted]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin: 1.2em 0 0.4em; border-bottom: 1px solid #ccc; }
.top { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 12px; }
.prediction { font-size: 1.3em; }
.prediction strong { color: #0b5394; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { padding: 3px 8px; text-align: left; border-bottom: 1px solid #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { display: inline-block; height: 12px; background: #6fa8dc; vertical-align: middle; }
tr.predicted .bar { background: #0b5394; }
tr.predicted td { font-weight: bold; }
.asymmetric { color: #b00000; }
.layers { display: flex; flex-direction: column; gap: 12px; }
.stage { display: flex; gap: 12px; }
.stage > .layer { flex: 0 1 50%; min-width: 0; }
.layer img, .card img { max-width: 100%; }
.layer h3 { margin: 0 0 6px; font-size: 1em; }
.muted { color: #666; font-size: 0.85em; }
"""


def _image_file(name: str) -> str:
    return f"{IMAGES_DIR}/{name}.png"


def write_report(model: Module, image: np.ndarray, out_dir: str | os.PathLike, classes: Sequence[str],
                 normalizer: Any = None, dtype: Any = None, title: str = "What Tiny VGG sees",
                 source: str = "", evaluation: str | os.PathLike | None = None) -> Report:
    """Write ``out_dir/index.html`` and its images for one image through ``model``.

    Parameters
    ----------
    model : Module
        A (nested) Sequential whose first layer is a Conv2d, e.g. a trained ``tiny_vgg``.
    image : uint8 array (C, H, W)
        The input at the model's size.
    out_dir : str or PathLike
        Created if needed; ``index.html`` and ``images/`` are (over)written.
    classes : sequence of str
        Class names, one per model output.
    normalizer : callable or None
        Maps uint8 (N, C, H, W) to the model's float input (e.g. a checkpoint's
        :class:`numbacnn.data.Normalizer`); None scales to [0, 1].
    dtype : float dtype or None
        Input dtype (default: the model's parameter dtype).
    title : str
        Page heading.
    source : str
        Where the model and image came from, shown under the heading.
    evaluation : folder or None
        ``numbacnn evaluate``'s output folder: its ``confusion.png`` and
        ``misclassified.png`` are copied in and shown in a "Test set" card; when
        they are absent the card says which command writes them.

    Returns
    -------
    Report

    Raises
    ------
    ValueError
        Non-finite parameters or outputs (nothing written), class names that do not
        match the outputs.
    OSError
        ``out_dir`` cannot take a report (:func:`check_report_folder`): checked
        before anything is computed or written.
    """
    from numbacnn import viz

    pixels = np.asarray(image)
    if pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise ValueError(f"write_report: image must be uint8 (C, H, W), got {pixels.dtype} {pixels.shape}")
    check_report_folder(out_dir)
    check_finite_parameters(model, source or "write_report")
    parameters = model.parameters()
    dtype = np.dtype(dtype or (parameters[0].dtype if parameters else np.float32))
    batch = pixels[None]
    normalizer = normalizer or Normalizer.scale_only(pixels.shape[0])  # plain x / 255 without one
    x_host = normalizer(batch, dtype)
    activations, logits = layer_activations(model, to_device(x_host, model.device))
    classes = tuple(classes)
    if len(classes) != logits.size:
        raise ValueError(f"write_report: {len(classes)} class names for a model with {logits.size} outputs")
    if not np.all(np.isfinite(logits)):
        raise CheckpointError(f"the model's outputs for this image are not finite ({logits.tolist()})",
                              source or "write_report", "check the image and the checkpoint")
    probabilities = softmax(logits)
    predicted = int(np.argmax(probabilities))

    out_dir = Path(out_dir)
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    with FolderLock(out_dir):  # two reports into one folder would mix their pictures
        check_report_folder(out_dir)  # again, holding the lock: nothing changed it since
        return _write_files(out_dir, title, source, pixels, x_host, activations, model, batch, probabilities,
                            classes, predicted, viz, evaluation)


def _write_files(out_dir: Path, title: str, source: str, pixels: np.ndarray, x_host: np.ndarray,
                 activations: Sequence[Any], model: Module, batch: np.ndarray, probabilities: np.ndarray,
                 classes: tuple[str, ...], predicted: int, viz: Any,
                 evaluation: str | os.PathLike | None = None) -> Report:
    """The pictures and the page of :func:`write_report`, in a checked and locked folder."""
    written = [_image_file("input")]
    viz.save_image(pixels, out_dir / written[0])
    written.append(_image_file("input_normalised"))
    input_panels = viz.save_activation_grid(x_host[0], out_dir / written[-1],
                                            f"network input ({pixels.shape[0]}x{pixels.shape[1]}x{pixels.shape[2]})")
    report_layers = []
    for position, activation in enumerate(activations, start=1):
        file = _image_file(f"{position:02d}_{activation.explainer_name}")
        channels, height, width = activation.maps.shape
        panels = viz.save_activation_grid(
            activation.maps, out_dir / file,
            f"{activation.explainer_name} ({activation.name}, {activation.kind}): {channels}x{height}x{width}")
        written.append(file)
        report_layers.append(ReportLayer(
            activation.name, activation.explainer_name, activation.kind, (channels, height, width), panels, file,
            (float(activation.maps.min()), float(activation.maps.max())),
        ))
    first_conv = next((layer for _, layer in leaf_layers(model) if isinstance(layer, Conv2d)), None)
    kernel_panels = 0
    if first_conv is not None:
        written.append(_image_file("kernels_first_layer"))
        weights = np.asarray(to_host(first_conv.weight.data))
        kernel_panels = viz.save_kernels(weights, out_dir / written[-1],
                                         f"first-layer kernels {tuple(weights.shape)} (filter x input channel)")
    described = describe_layers(model, batch.shape)
    test_pictures = []
    if evaluation is not None:
        for name in ("confusion", "misclassified"):
            found = Path(evaluation) / f"{name}.png"
            if found.is_file():
                written.append(_image_file(f"test_{name}"))
                shutil.copyfile(found, out_dir / written[-1])
                test_pictures.append((name, written[-1]))

    index = out_dir / INDEX_NAME
    # atomically: a failure keeps the previous page or none, never a 0-byte index.html that
    # makes the folder "not a numbacnn report" (names that are not UTF-8 were made
    # printable by esc(); "replace" is the last guard of a valid UTF-8 page)
    page = _render_html(title, source, pixels.shape, input_panels, report_layers, kernel_panels, probabilities,
                        classes, predicted, described, test_pictures)
    atomic_write(index, lambda f: f.write(page.encode("utf-8", errors="replace")))
    return Report(index, report_layers, kernel_panels, probabilities, classes, predicted, written)


def _render_html(title: str, source: str, image_shape: tuple[int, ...], input_panels: int,
                 layers: list[ReportLayer], kernel_panels: int, probabilities: np.ndarray,
                 classes: tuple[str, ...], predicted: int, described: list[LayerDescription],
                 test_pictures: Sequence[tuple[str, str]] = ()) -> str:
    """The page. Every image is an <img> of a file under images/; every layer's
    <section> carries data-channels (from the model) and data-panels (drawn)."""
    def esc(text: object) -> str:  # a newline or a non-UTF-8 byte in a name shows as \\n or \\xe9
        return html.escape(printable(text))

    probability_rows = "\n".join(
        f'<tr class="{"predicted" if i == predicted else ""}"><td>{esc(name)}</td>'
        f'<td class="num">{100 * p:.1f}%</td>'
        f'<td><span class="bar" style="width:{max(1, round(PROBABILITY_BAR_PIXELS * p))}px"></span></td></tr>'
        for i, (name, p) in enumerate(zip(classes, probabilities))
    )
    table_rows = "\n".join(
        f'<tr><td>{esc(d.explainer_name)}</td><td>{esc(d.name)}</td><td>{esc(d.kind)}</td>'
        f'<td>{esc(str(d.output_shape[1:]))}</td><td class="num">{d.parameters:,}</td>'
        f'<td class="num">{d.flops:,}</td>'
        f'<td>{f"{d.receptive_field[0]}x{d.receptive_field[1]}" if d.receptive_field else "whole input"}</td>'
        f'<td class="{"" if d.symmetric else "asymmetric"}">'
        f'{"" if d.slide is None else ("symmetric" if d.symmetric else esc(d.slide.message))}</td></tr>'
        for d in described
    )
    def section(layer: ReportLayer) -> str:
        return (
            f'<section class="layer card" data-layer="{esc(layer.name)}" data-kind="{esc(layer.kind)}" '
            f'data-channels="{layer.shape[0]}" data-panels="{layer.panels}">\n'
            f'<h3>{esc(layer.explainer_name)} <span class="muted">{esc(layer.name)} &middot; {esc(layer.kind)} '
            f'&middot; {layer.shape[0]} channels of {layer.shape[1]}x{layer.shape[2]} &middot; values '
            f'{layer.value_range[0]:.3g} to {layer.value_range[1]:.3g}</span></h3>\n'
            f'<img src="{esc(layer.image)}" alt="{esc(layer.explainer_name)} activation maps"></section>'
        )

    # A convolution and the ReLU after it share a row, like CNN Explainer's overview
    # pairs them; every other layer gets a row of its own.
    stages: list[list[ReportLayer]] = []
    for layer in layers:
        if layer.kind == "ReLU" and stages and len(stages[-1]) == 1 and stages[-1][0].kind == "Conv2d":
            stages[-1].append(layer)
        else:
            stages.append([layer])
    layer_sections = "\n".join(
        '<div class="stage">\n' + "\n".join(section(layer) for layer in stage) + "\n</div>" for stage in stages
    )
    channels, height, width = image_shape
    captions = {"confusion": "confusion matrix (rows: true class, with its accuracy; columns: predicted)",
                "misclassified": "misclassified test images (true -> predicted)"}
    test_card = ('<div class="card" data-role="test-set">\n<h2>Test set</h2>\n'
                 + ("\n".join(f'<figure data-picture="{esc(name)}"><img src="{esc(file)}" alt="{esc(captions[name])}">'
                              f'<figcaption class="muted">{esc(captions[name])}</figcaption></figure>'
                              for name, file in test_pictures)
                    or '<p class="muted">Run <code>numbacnn evaluate CHECKPOINT</code> before this report to '
                       'show the confusion matrix and the misclassified test images here.</p>')
                 + "\n</div>")
    kernel_card = "" if not kernel_panels else f"""  <div class="card" data-role="kernels" data-panels="{kernel_panels}">
    <h2>First-layer kernels</h2>
    <img src="{_image_file("kernels_first_layer")}" alt="first-layer kernels">
    <p class="muted">red positive, blue negative; one shared scale</p>
  </div>"""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p class="muted">{esc(source)}</p>
<div class="top">
  <div class="card" data-role="input">
    <h2>Input image</h2>
    <img src="{_image_file("input")}" alt="input image" width="196">
    <p class="muted">{channels}x{height}x{width}, pixels enlarged</p>
  </div>
  <div class="card" data-role="prediction">
    <h2>Prediction</h2>
    <p class="prediction" id="predicted-class" data-class-index="{predicted}">
      <strong>{esc(classes[predicted])}</strong> ({100 * probabilities[predicted]:.1f}%)</p>
    <table id="probabilities"><tr><th>class</th><th>softmax</th><th></th></tr>
{probability_rows}
    </table>
  </div>
{kernel_card}
</div>
<h2>Network input (normalised)</h2>
<section class="layer card" data-layer="input" data-kind="input" data-channels="{channels}" data-panels="{input_panels}">
<img src="{_image_file("input_normalised")}" alt="normalised input"></section>
<h2>Activation maps, layer by layer</h2>
<p class="muted">Each panel is one channel; each layer uses one colour scale for all its channels
(diverging around 0 where values are signed), shown by its colour bar.</p>
<div class="layers">
{layer_sections}
</div>
{test_card}
<h2>Layers</h2>
<table id="layers"><tr><th>layer</th><th>name</th><th>type</th><th>output (C, H, W)</th><th>params</th>
<th>FLOPs</th><th>receptive field</th><th>slide</th></tr>
{table_rows}
</table>
<p class="muted">{REPORT_MARKER} Static files only: no server, network or scripts.</p>
</body>
</html>
"""


def report_from_checkpoint(checkpoint: str | os.PathLike, image: str | os.PathLike, out_dir: str | os.PathLike,
                           invert: bool = False, device: str = "cpu") -> Report:
    """Load a checkpoint and an image file and write the report.

    Parameters
    ----------
    checkpoint : path
        ``checkpoint.npz`` written by ``numbacnn train`` (or its folder).
    image : path
        PNG/JPEG, resized and converted to the model's input (Pillow).
    out_dir : path
        Report folder.
    invert : bool
        Invert grey levels first (Fashion-MNIST is light-on-dark; photos of dark
        objects on white need this).
    device : str
        Where to run the model; one image is fast on the CPU.

    Returns
    -------
    Report

    Raises
    ------
    OSError, ValueError
        As :func:`write_report`, checked in this order before anything is written:
        the report folder, the checkpoint (its loader's errors, then non-finite
        weights), the image (its loader's errors). Each message names the file.
    """
    from numbacnn.train import load_checkpoint

    check_report_folder(out_dir)
    loaded = load_checkpoint(checkpoint)
    model = loaded.build_model(device)
    check_finite_parameters(model, f"checkpoint {checkpoint}")
    spec = loaded.meta["model"]["kwargs"]
    try:
        pixels = load_image(image, spec["image_size"], spec["in_channels"])
    except (NumbacnnError, FileNotFoundError):
        raise  # already names the file
    except (OSError, ValueError) as exc:  # Pillow's errors: say which file, in one line
        raise ImageError(f"cannot read the image ({getattr(exc, 'strerror', None) or exc})", str(image),
                         "give a PNG or JPEG image file") from exc
    if invert:
        pixels = 255 - pixels
    checkpoint_path = Path(checkpoint)
    run_dir = checkpoint_path if checkpoint_path.is_dir() else checkpoint_path.parent
    return write_report(
        model, pixels, out_dir, loaded.classes, normalizer=loaded.normalizer, dtype=loaded.config.dtype,
        source=f"checkpoint {checkpoint} (epoch {loaded.epoch}), image {image}"
               + (" (inverted)" if invert else ""),
        evaluation=run_dir / "evaluation",  # numbacnn evaluate's default --out
    )


__all__ = ["IMAGES_DIR", "INDEX_NAME", "Report", "ReportLayer", "report_from_checkpoint", "write_report"]
