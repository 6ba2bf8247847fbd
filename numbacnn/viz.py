"""Pictures for learning CNNs: kernel slides, activation maps, kernels, training curves.

Every function writes one PNG and returns what a caller (or a test) needs to know
about it. matplotlib and Pillow are the optional ``viz`` extra; they are imported
only when a picture is drawn, so ``import numbacnn.viz`` always works and a missing
extra is reported with the command that installs it::

    pip install "numbacnn[viz]"

Functions
---------
draw_conv_slide(explanation, path)
    CNN Explainer's hyperparameter view as a static picture: the input grid with
    its padding, every kernel position, the output grid, and the rows/columns no
    kernel position covers.
save_activation_grid(maps, path, title)
    One panel per channel of a (C, H, W) activation, one shared colour scale.
save_kernels(weights, path, title)
    One panel per (filter, input channel) slice of a (F, C, KH, KW) weight.
save_image(image, path)
    A uint8 (C, H, W) image, enlarged without smoothing so pixels stay visible.
plot_training_curves(metrics, path)
    Loss and accuracy per epoch from ``metrics.json``'s structure.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from numbacnn.errors import NumbacnnError
from numbacnn.shapes import ConvExplanation, effective_kernel_size

VIZ_INSTALL_HINT = 'pip install "numbacnn[viz]"'

# Above this many kernel positions the slide picture keeps only the border
# positions (first/last output row and column): those are the ones the symmetry
# lesson is about, and hundreds of outlines would hide the grid.
MAX_DRAWN_POSITIONS = 20  # one colour each (tab20); more are thinned to the corners
# Cells are annotated with their coverage count only while the numbers stay legible.
MAX_ANNOTATED_CELLS = 24
# The slide picture draws every cell of the padded input (and of the output): beyond
# this many per side the grid is unreadable and the figure tens of thousands of
# pixels wide, so larger inputs are refused before anything is drawn or allocated.
MAX_SLIDE_CELLS = 256
# File written when draw_conv_slide is given a folder.
SLIDE_FILE_NAME = "conv_slide.png"
# Activation grids use at most this many columns (Tiny VGG's 10 channels -> 2 rows of 5).
MAX_GRID_COLUMNS = 5
# A grid draws at most this many panels (the first channels; the title says so): a
# model with thousands of filters would otherwise need minutes and a figure beyond
# matplotlib's 2**16-pixel limit, and nobody reads a thousand panels.
MAX_GRID_PANELS = 64
# Kernel pictures show at most this many input channels per filter (and as many
# filters as fit in MAX_GRID_PANELS).
MAX_KERNEL_CHANNELS = 8

INPUT_COLOUR = "#ffffff"
PADDING_COLOUR = "#d9d9d9"
UNCOVERED_COLOUR = "#ff9999"
GRID_LINE_COLOUR = "#808080"


def _require_matplotlib() -> Any:
    """The ``matplotlib`` module, or an ImportError that names the extra to install."""
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401  (figures are built without pyplot)
    except ImportError as exc:
        raise ImportError(f"numbacnn.viz needs matplotlib, which is not installed: {VIZ_INSTALL_HINT}") from exc
    return matplotlib


def _new_figure(**kwargs: Any) -> Any:
    """A Figure not registered with pyplot: no GUI backend is touched (servers, CI)
    and a notebook's own backend is left alone; it is freed when unreferenced."""
    return _require_matplotlib().figure.Figure(**kwargs)


def _require_pillow() -> Any:
    """``PIL.Image``, or a clear ImportError."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"numbacnn.viz needs Pillow, which is not installed: {VIZ_INSTALL_HINT}") from exc
    return Image


def _prepare_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class PictureError(NumbacnnError, ValueError):
    """A picture that cannot be drawn, or not where it was asked for; nothing was
    written. ``str()`` is ``"<what>, <where> (<todo>)"``, the attributes its parts
    (the CLI puts its own option name in ``where``)."""


def png_path(path: str | os.PathLike, default_name: str) -> Path:
    """The file a PNG asked for as ``path`` is written to, checked before drawing.

    - an existing folder, or a path ending in a separator: ``default_name`` inside it;
    - a name ending in ``.png`` (any case): itself;
    - a name without a suffix: ``.png`` appended (what matplotlib would do silently);
    - any other suffix (``.txt``, ``.jpg``): refused.

    The folder it goes in must be creatable and writable: a probe file is written
    (and removed) in its nearest existing folder. Every refusal is a
    :class:`PictureError` naming the path; nothing is created. Callers report the
    returned path, which is the one really written.
    """
    text = os.fspath(path)
    todo = "give a file name ending in .png, or a folder"
    if not text:
        raise PictureError("empty picture path", repr(text), todo)
    target = Path(text)
    if target.is_dir() or text.endswith((os.sep, "/")):
        target = target / default_name
    elif target.suffix == "":
        target = target.with_name(target.name + ".png")
    elif target.suffix.lower() != ".png":
        raise PictureError(f"the picture is a PNG, not a {target.suffix} file", text, todo)
    if target.is_dir():
        raise PictureError(f"{target} is a folder", text, todo)
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PictureError(f"{existing} is a file, so {target} cannot be created below it", text,
                           "choose a path in a folder")
    from numbacnn.errors import OutputError
    from numbacnn.files import check_writable

    try:  # a real probe file, removed again: os.access says yes to root, and /proc refuses any new file
        check_writable(existing)
    except OutputError as exc:
        raise PictureError(exc.what.replace("the output folder", str(existing)), text,
                           "choose a writable folder") from None
    return target


def save_figure(fig: Any, path: Path, dpi: int = 100) -> None:
    """Write the figure atomically (a temporary file renamed over ``path``): a run
    killed mid-save leaves the previous picture, never half of a new one."""
    from numbacnn.files import atomic_write

    path = Path(path)
    image_format = path.suffix[1:].lower() or "png"
    atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, format=image_format))


# --------------------------------------------------------------------------- #
# the hyperparameter view
# --------------------------------------------------------------------------- #


def kernel_positions(explanation: ConvExplanation) -> list[tuple[int, int]]:
    """Top-left corners (row, column) in the padded input of every kernel position.

    Row-major, one per output pixel; empty when the kernel does not fit.
    """
    out_h, out_w = explanation.output_size
    stride_h, stride_w = explanation.stride
    return [(i * stride_h, j * stride_w) for i in range(max(out_h, 0)) for j in range(max(out_w, 0))]


def coverage_counts(explanation: ConvExplanation) -> np.ndarray:
    """How many kernel positions read each cell of the padded input.

    Returns
    -------
    int array (H + 2*pad_h, W + 2*pad_w)
        0 marks a cell the convolution never sees. With dilation only the taps
        count, not the holes between them.
    """
    (in_h, in_w), (pad_h, pad_w) = explanation.input_size, explanation.padding
    (k_h, k_w), (d_h, d_w) = explanation.kernel_size, explanation.dilation
    counts = np.zeros((in_h + 2 * pad_h, in_w + 2 * pad_w), dtype=np.int64)
    for top, left in kernel_positions(explanation):
        counts[top:top + effective_kernel_size(k_h, d_h):d_h, left:left + effective_kernel_size(k_w, d_w):d_w] += 1
    return counts


def _drawn_positions(explanation: ConvExplanation) -> tuple[list[tuple[int, int, int]], bool]:
    """(output row, output column, index) of the positions to outline; True if thinned."""
    out_h, out_w = (max(o, 0) for o in explanation.output_size)
    if out_h * out_w <= MAX_DRAWN_POSITIONS:
        return [(i, j, i * out_w + j) for i in range(out_h) for j in range(out_w)], False
    # Keep the two positions nearest each corner on both axes: the border is where
    # the symmetry lesson plays out.
    rows = sorted({0, 1, out_h - 2, out_h - 1} & set(range(out_h)))
    cols = sorted({0, 1, out_w - 2, out_w - 1} & set(range(out_w)))
    return [(i, j, index) for index, (i, j) in enumerate((i, j) for i in rows for j in cols)], True


def check_slide_drawable(explanation: ConvExplanation) -> None:
    """Raise :class:`PictureError` (a ValueError), before anything is allocated, when
    the slide picture of ``explanation`` would have more than :data:`MAX_SLIDE_CELLS`
    cells per side."""
    (in_h, in_w), (pad_h, pad_w) = explanation.input_size, explanation.padding
    padded_h, padded_w = in_h + 2 * pad_h, in_w + 2 * pad_w
    if max(padded_h, padded_w) > MAX_SLIDE_CELLS:
        raise PictureError(
            f"the padded input is {padded_h}x{padded_w} cells, too many to draw", "draw_conv_slide",
            f"at most {MAX_SLIDE_CELLS} per side; draw a smaller input or padding: the arithmetic is the same "
            f"at any size",
        )


def _hex_to_rgb(colour: str) -> tuple[float, float, float]:
    return tuple(int(colour[k:k + 2], 16) / 255 for k in (1, 3, 5))  # type: ignore[return-value]


def slide_verdict(explanation: ConvExplanation) -> str:
    """The slide picture's verdict line, made of the same facts as the printed
    verdict (``explanation.sound`` and ``explanation.problems``), so the picture
    never says "symmetric" over a red cell."""
    if min(explanation.output_size) < 1:
        return "the kernel does not fit"
    if explanation.sound:
        return "symmetric: every input pixel is read, the slide ends at the border, no window of only padding"
    return "NOT symmetric: " + "; ".join(explanation.problems)


def draw_conv_slide(explanation: ConvExplanation, path: str | os.PathLike) -> Path:
    """Draw the padded input with every kernel position, and the output it produces.

    The static counterpart of CNN Explainer's hyperparameter view. Left: the input
    (white) inside its zero padding (grey); each kernel position is an outline in
    its own colour, and each cell shows how many positions read it. Cells no
    position reads are red: that is what an asymmetric slide silently drops.
    Right: the output grid, each pixel in the colour of the position that made it.
    Large grids outline only the positions next to the corners (said in the title).

    Parameters
    ----------
    explanation : ConvExplanation
        From :func:`numbacnn.shapes.explain_conv`.
    path : str or PathLike
        PNG to write (folders are created); a folder gets :data:`SLIDE_FILE_NAME`
        inside it, a name without suffix gets ``.png`` (see :func:`png_path`).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    PictureError (a ValueError)
        The padded input has more than :data:`MAX_SLIDE_CELLS` cells per side, or
        ``path`` has a suffix other than ``.png``, or its folder cannot be created
        or written; nothing is written.
    """
    check_slide_drawable(explanation)
    path = png_path(path, SLIDE_FILE_NAME)
    matplotlib = _require_matplotlib()
    from matplotlib.patches import Patch, Rectangle

    path = _prepare_path(path)
    (in_h, in_w), (pad_h, pad_w) = explanation.input_size, explanation.padding
    k_eff_h = effective_kernel_size(explanation.kernel_size[0], explanation.dilation[0])
    k_eff_w = effective_kernel_size(explanation.kernel_size[1], explanation.dilation[1])
    padded_h, padded_w = in_h + 2 * pad_h, in_w + 2 * pad_w
    out_h, out_w = (max(o, 0) for o in explanation.output_size)
    counts = coverage_counts(explanation)
    positions, thinned = _drawn_positions(explanation)
    palette = matplotlib.colormaps["tab20"]  # distinct colours for up to MAX_DRAWN_POSITIONS
    largest = max(padded_h, padded_w)

    cell = 0.42 if largest <= 16 else max(0.1, 7.0 / largest)
    input_width_in = padded_w * cell + 0.8
    output_width_in = max(out_w * cell + 0.8, 1.6)
    height_in = max(padded_h * cell, 2.0) + 2.6
    fig = _new_figure(figsize=(input_width_in + output_width_in + 0.6, height_in))
    ax_in, ax_out = fig.subplots(1, 2, gridspec_kw={"width_ratios": [input_width_in, output_width_in]})

    # Input grid as one RGB image (fast for any size): padding grey, input white,
    # never-covered cells red.
    is_input = np.zeros((padded_h, padded_w), dtype=bool)
    is_input[pad_h:pad_h + in_h, pad_w:pad_w + in_w] = True
    cells = np.empty((padded_h, padded_w, 3))
    cells[:] = _hex_to_rgb(PADDING_COLOUR)
    cells[is_input] = _hex_to_rgb(INPUT_COLOUR)
    cells[counts == 0] = _hex_to_rgb(UNCOVERED_COLOUR)
    ax_in.imshow(cells, extent=(0, padded_w, padded_h, 0), interpolation="nearest")
    grid_width = 0.5 if largest <= 32 else 0.2
    ax_in.vlines(range(padded_w + 1), 0, padded_h, colors=GRID_LINE_COLOUR, linewidth=grid_width)
    ax_in.hlines(range(padded_h + 1), 0, padded_w, colors=GRID_LINE_COLOUR, linewidth=grid_width)
    if largest <= MAX_ANNOTATED_CELLS:
        for r in range(padded_h):
            for c in range(padded_w):
                ax_in.text(c + 0.5, r + 0.5, str(counts[r, c]), ha="center", va="center",
                           fontsize=7 if largest > 12 else 9, color="#333333")
    # The real input's border, so padding and input are told apart at a glance.
    ax_in.add_patch(Rectangle((pad_w, pad_h), in_w, in_h, fill=False, edgecolor="black", linewidth=1.6))
    # Kernel outlines, inset a little more for each neighbour so overlapping
    # positions stay distinguishable.
    inset_step = min(0.07, 0.25 * k_eff_h / 3, 0.25 * k_eff_w / 3)
    for i, j, index in positions:
        inset = 0.08 + inset_step * ((i + j) % 3)
        ax_in.add_patch(Rectangle(
            (j * explanation.stride[1] + inset, i * explanation.stride[0] + inset),
            k_eff_w - 2 * inset, k_eff_h - 2 * inset, fill=False,
            edgecolor=palette(index % 20), linewidth=1.8 if largest <= 32 else 1.2,
        ))
    # Output: each pixel in its position's colour (light grey where not outlined).
    output_cells = np.full((max(out_h, 1), max(out_w, 1), 3), 0.9)
    for i, j, index in positions:
        output_cells[i, j] = palette(index % 20)[:3]
    ax_out.imshow(output_cells, extent=(0, max(out_w, 1), max(out_h, 1), 0), interpolation="nearest", alpha=0.85)
    if out_h >= 1 and out_w >= 1:
        ax_out.vlines(range(out_w + 1), 0, out_h, colors=GRID_LINE_COLOUR, linewidth=grid_width)
        ax_out.hlines(range(out_h + 1), 0, out_w, colors=GRID_LINE_COLOUR, linewidth=grid_width)

    ax_in.set_xlim(0, padded_w)
    ax_in.set_ylim(padded_h, 0)  # row 0 at the top, as in an image
    ax_in.set_aspect("equal")
    ax_in.set_title(f"input {in_h}x{in_w}, padding {explanation.padding}\n"
                    f"kernel {explanation.kernel_size[0]}x{explanation.kernel_size[1]}, "
                    f"stride {explanation.stride}"
                    + (f", dilation {explanation.dilation}" if explanation.dilation != (1, 1) else ""),
                    fontsize=9)
    ax_in.set_xticks([])
    ax_in.set_yticks([])

    ax_out.set_xlim(0, max(out_w, 1))
    ax_out.set_ylim(max(out_h, 1), 0)
    ax_out.set_aspect("equal")
    ax_out.set_title(f"output {explanation.output_size[0]}x{explanation.output_size[1]}", fontsize=9)
    ax_out.set_xticks([])
    ax_out.set_yticks([])

    verdict = slide_verdict(explanation)
    header = [f"height: {explanation.arithmetic[0]}", f"width: {explanation.arithmetic[1]}", verdict]
    if thinned:
        header.append(f"(only the {len(positions)} positions nearest the corners, of {out_h * out_w}, are outlined)")
    fig.suptitle("\n".join(header), fontsize=9, color="black" if explanation.sound else "#b00000")
    legend = [Patch(facecolor=INPUT_COLOUR, edgecolor="black", label="input"),
              Patch(facecolor=PADDING_COLOUR, edgecolor=GRID_LINE_COLOUR, label="zero padding"),
              Patch(facecolor=UNCOVERED_COLOUR, edgecolor=GRID_LINE_COLOUR, label="never covered")]
    fig.legend(handles=legend, loc="lower center", ncol=3, fontsize=8, frameon=False)
    # Leave room above the axes for the header lines, below for the legend.
    header_inches = 0.2 * len(header) + 0.15
    fig.tight_layout(rect=(0, 0.5 / height_in, 1, 1 - header_inches / height_in))
    save_figure(fig, path)
    return path


# --------------------------------------------------------------------------- #
# activations and kernels
# --------------------------------------------------------------------------- #


def _colour_scale(values: np.ndarray) -> tuple[str, float, float]:
    """(colormap, vmin, vmax): diverging around 0 for signed values (conv outputs,
    weights), sequential from 0 for non-negative ones (ReLU and pool outputs)."""
    low, high = float(np.min(values)), float(np.max(values))
    if low < 0.0 < high:
        bound = max(-low, high)
        return "RdBu_r", -bound, bound
    if high == low:  # a constant map: widen the range so the colorbar is drawable
        return "viridis", low - 0.5, high + 0.5
    return "viridis", low, high


def _grid_shape(panels: int, columns: int | None) -> tuple[int, int]:
    columns = columns or min(panels, MAX_GRID_COLUMNS)
    return math.ceil(panels / columns), columns


def _panel_figure(panels: int, rows: int, columns: int, panel_inches: float, title: str) -> tuple[Any, list]:
    width = columns * panel_inches + 1.2
    # wrap the title to the figure's width (a 3-channel kernel picture is ~3 inches
    # wide and clipped a one-line title); about 0.085 inch per character at 10 pt
    title = textwrap.fill(title, max(16, int(width / 0.085)))
    fig = _new_figure(figsize=(width, rows * panel_inches + 0.7 + 0.18 * title.count("\n")), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[panels:]:
        ax.set_axis_off()  # unused cells of the last row
    fig.suptitle(title, fontsize=10)
    return fig, flat


def save_activation_grid(maps: Any, path: str | os.PathLike, title: str = "",
                         columns: int | None = None, panel_inches: float = 1.6) -> int:
    """Save one panel per channel of an activation, with one shared colour scale.

    Like CNN Explainer's overview, every channel of a layer is shown with the same
    colour range (drawn as a colour bar), so channels can be compared.

    Parameters
    ----------
    maps : array (C, H, W), or (H, W) for one channel
        One image's activations, e.g. ``conv_output[0]``.
    path : str or PathLike
        PNG to write.
    title : str
        Figure title, e.g. ``"conv_1_1 (10x26x26)"``.
    columns : int or None
        Panels per row (default: up to 5).
    panel_inches : float
        Size of one panel.

    Returns
    -------
    int
        Number of panels drawn: the channel count, or the first
        :data:`MAX_GRID_PANELS` channels (said in the title) when there are more.
    """
    values = np.asarray(maps, dtype=np.float64)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise ValueError(f"save_activation_grid: maps must be (C, H, W) or (H, W), got shape {values.shape}")
    path = _prepare_path(path)
    cmap, vmin, vmax = _colour_scale(values)  # over every channel, drawn or not
    if values.shape[0] > MAX_GRID_PANELS:
        title = f"{title} (first {MAX_GRID_PANELS} of {values.shape[0]} channels)".strip()
        values = values[:MAX_GRID_PANELS]
    channels = values.shape[0]
    rows, cols = _grid_shape(channels, columns)
    fig, axes = _panel_figure(channels, rows, cols, panel_inches, title)
    image = None
    for channel, ax in enumerate(axes[:channels]):
        image = ax.imshow(values[channel], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"channel {channel}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes, shrink=0.8, label="activation")
    save_figure(fig, path)
    return channels


def save_kernels(weights: Any, path: str | os.PathLike, title: str = "", panel_inches: float = 0.7) -> int:
    """Save every 2-D slice of a convolution weight, one shared diverging colour scale.

    Parameters
    ----------
    weights : array (F, C, KH, KW)
        A Conv2d weight (host array). Row f shows filter f, one column per input
        channel; a single-channel weight is laid out like an activation grid.
    path : str or PathLike
        PNG to write.
    title : str
        Figure title.
    panel_inches : float
        Size of one panel.

    Returns
    -------
    int
        Number of panels drawn: ``F * C``, or fewer for a large weight (at most
        :data:`MAX_KERNEL_CHANNELS` channels and :data:`MAX_GRID_PANELS` panels,
        the first filters and channels, said in the title).
    """
    values = np.asarray(weights, dtype=np.float64)
    if values.ndim != 4:
        raise ValueError(f"save_kernels: weights must be (F, C, KH, KW), got shape {values.shape}")
    path = _prepare_path(path)
    bound = float(np.max(np.abs(values))) if values.size else 0.0  # over every weight, drawn or not
    shown_channels = min(values.shape[1], MAX_KERNEL_CHANNELS)
    shown_filters = min(values.shape[0], max(1, MAX_GRID_PANELS // shown_channels))
    if (shown_filters, shown_channels) != values.shape[:2]:
        title = (f"{title} (first {shown_filters} of {values.shape[0]} filters, {shown_channels} of "
                 f"{values.shape[1]} channels)").strip()
        values = values[:shown_filters, :shown_channels]
    filters, channels = values.shape[:2]
    panels = filters * channels
    if channels == 1:
        rows, cols = _grid_shape(filters, None)
    else:
        rows, cols = filters, channels
    bound = bound or 1.0  # weights are signed: centre the scale on 0
    fig, axes = _panel_figure(panels, rows, cols, panel_inches, title)
    image = None
    for index, ax in enumerate(axes[:panels]):
        f, c = divmod(index, channels)
        image = ax.imshow(values[f, c], cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
        ax.set_title(f"filter {f}" + (f" ch {c}" if channels > 1 else ""), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    save_figure(fig, path)
    return panels


def save_image(image: Any, path: str | os.PathLike, min_size: int = 224) -> Path:
    """Save a uint8 image (C, H, W) with C in {1, 3}, enlarged by a whole factor
    with nearest-neighbour sampling so each pixel stays a visible square.

    Returns
    -------
    Path
        ``path``.
    """
    Image = _require_pillow()
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
        raise ValueError(f"save_image: image must be uint8 (C, H, W) with C 1 or 3, got {pixels.dtype} {pixels.shape}")
    path = _prepare_path(path)
    picture = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    scale = max(1, math.ceil(min_size / max(pixels.shape[1:])))
    picture = picture.resize((pixels.shape[2] * scale, pixels.shape[1] * scale), Image.NEAREST)
    from numbacnn.files import atomic_write  # a killed save leaves the previous picture, never half

    atomic_write(path, lambda f: picture.save(f, format="PNG"))
    return path


# --------------------------------------------------------------------------- #
# training curves
# --------------------------------------------------------------------------- #


def plot_training_curves(metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Plot loss and accuracy per epoch, train and validation, from ``metrics.json``.

    Parameters
    ----------
    metrics : dict or list of dict
        What :func:`numbacnn.train.train` returns / writes to ``metrics.json``: a
        ``history`` list of per-epoch records with ``epoch``, ``train_loss``,
        ``train_accuracy`` and, when there is a validation split, ``val_loss``,
        ``val_accuracy`` (accuracies as fractions); ``test_accuracy`` is drawn as
        a horizontal line when present. The bare ``history`` list is accepted too.
    path : str or PathLike
        PNG to write.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        The history is empty (no epoch finished).
    """
    history = list(metrics if isinstance(metrics, Sequence) else metrics.get("history", []))
    if not history:
        raise ValueError("plot_training_curves: the metrics have no history (no epoch finished)")
    path = _prepare_path(path)
    epochs = [record.get("epoch", index + 1) for index, record in enumerate(history)]
    fig = _new_figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label, style in (("train", "train", "-o"), ("val", "validation", "--s")):
        if all(f"{key}_loss" in record for record in history):
            ax_loss.plot(epochs, [record[f"{key}_loss"] for record in history], style, label=label)
        if all(f"{key}_accuracy" in record for record in history):
            ax_acc.plot(epochs, [100 * record[f"{key}_accuracy"] for record in history], style, label=label)
    if not isinstance(metrics, Sequence) and metrics.get("test_accuracy") is not None:
        ax_acc.axhline(100 * metrics["test_accuracy"], color="black", linestyle=":",
                       label=f"test {100 * metrics['test_accuracy']:.1f}%")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        if len(epochs) <= 20:  # integer epoch ticks while they fit
            ax.set_xticks(epochs)
    save_figure(fig, path)
    return path


__all__ = [
    "VIZ_INSTALL_HINT", "coverage_counts", "draw_conv_slide", "kernel_positions", "plot_training_curves",
    "save_activation_grid", "save_image", "save_kernels",
]


# --------------------------------------------------------------------------- #
# evaluation: confusion matrix and misclassified images (issue 21)
# --------------------------------------------------------------------------- #

CONFUSION_FILE_NAME = "confusion.png"
MISCLASSIFIED_FILE_NAME = "misclassified.png"
# The gallery shows at most this many misclassified images (the first ones, in test order).
MAX_GALLERY_IMAGES = 40


def draw_confusion_matrix(matrix: Any, classes: Sequence[str], path: str | os.PathLike,
                          title: str = "") -> Path:
    """Draw a confusion matrix: rows are the true classes, columns the predicted ones,
    each cell's count written in it, shaded by the share of its row (so rare and
    common classes compare), per-class accuracy beside each row.

    Parameters
    ----------
    matrix : int array (K, K)
        From :func:`numbacnn.report.confusion.confusion_matrix`.
    classes : K names
    path : PNG to write (atomically).
    title : str
        Figure title.

    Returns
    -------
    Path
        The file written.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    k = len(classes)
    if counts.shape != (k, k):
        raise ValueError(f"draw_confusion_matrix: matrix must be {k}x{k} for {k} classes, got {counts.shape}")
    _require_matplotlib()
    path = _prepare_path(path)
    totals = counts.sum(axis=1, keepdims=True)
    shares = counts / np.maximum(totals, 1)
    side = max(4.0, 0.55 * k + 2.5)
    fig = _new_figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for t in range(k):
        for p in range(k):
            if counts[t, p] or t == p:
                ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize=7 if k > 12 else 8,
                        color="white" if shares[t, p] > 0.6 else "black")
    accuracy = np.diag(counts) / np.maximum(totals[:, 0], 1)
    labels = [f"{name} ({100 * a:.0f}%)" if n else f"{name} (no images)"
              for name, a, n in zip(classes, accuracy, totals[:, 0])]
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (per-class accuracy)")
    ax.set_title(title or "confusion matrix", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    save_figure(fig, path)
    return path


def draw_misclassified(images: Any, labels: Any, predictions: Any, classes: Sequence[str],
                       path: str | os.PathLike, indices: Any = None, title: str = "",
                       limit: int = MAX_GALLERY_IMAGES) -> int:
    """A gallery of misclassified images, each titled "true -> predicted" and its index.

    Parameters
    ----------
    images : uint8 array (N, C, H, W), C in {1, 3}
    labels, predictions : int arrays (N,)
    classes : class names
    path : PNG to write (atomically).
    indices : int array (N,) or None
        The images' numbers in their dataset (default 0..N-1), shown in the titles.
    limit : int
        At most this many images (the first misclassified ones).

    Returns
    -------
    int
        How many images were drawn (0: nothing misclassified, nothing written).
    """
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
    wrong = np.flatnonzero(labels != predictions)
    if not len(wrong):
        return 0
    shown = wrong[:limit]
    _require_matplotlib()
    path = _prepare_path(path)
    rows, columns = _grid_shape(len(shown), 8)
    fig = _new_figure(figsize=(columns * 1.35 + 0.3, rows * 1.55 + 0.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    for ax, i in zip(axes, shown):
        picture = images[i]
        if picture.shape[0] == 1:
            ax.imshow(picture[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(picture.transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(f"#{indices[i]}\n{classes[labels[i]]} -> {classes[predictions[i]]}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"misclassified: the first {len(shown)} of {len(wrong)} (true -> predicted)", fontsize=9)
    save_figure(fig, path)
    return len(shown)
