"""The explore page: its data (JSON, arrays as little-endian base64) and the one HTML
file, with ``static/`` (HTML, CSS, JavaScript) inlined, written atomically.

Page data, ``format`` 1 (what ``static/*.js`` reads)::

    title, source, classes[K], dtype ("float32" | "float64"), input_shape [C, H, W],
    layers[]: index, name, explainer_name, kind, output_shape, parameters, symmetric,
              has_maps, input_index, hyper {kernel, stride, padding, dilation},
              derive ("relu" | "max_pool" | "batch_norm" | null: maps rebuilt in the page),
              bn_scale, bn_shift (float64 base64, BatchNorm2d: x * scale + shift per channel),
              weight, bias (base64, Conv2d only), weight_shape,
              kernel_source (null: filled from `numbacnn info --kernels` once it exists)
    images[]: source, label (int | null), pixels (uint8 base64, C*H*W), input (base64),
              maps {leaf index: base64} (the layers the page draws or rebuilds from,
              unless rebuilt themselves), logits[K],
              probabilities[K], saliency (uint8 base64 K*H*W), saliency_peaks[K]
    history[]: per epoch as in the checkpoint (train/val loss and accuracy)
    confusion: {matrix K x K, images, where} | {missing: why}
    slides: {limits, answers, index}: shapes.explain_conv for every square case of the
            hyperparameter view's range (numbacnn.explore.slides)
    kernel_sources: null  (the slot for `numbacnn info --kernels`: {layer name: "file:line"})
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from numbacnn.errors import OutputError
from numbacnn.explore.collect import ImageRecord, PageLayer, derivable
from numbacnn.explore.saliency import saliency_bytes

PAGE_FORMAT = 1
# Every page this module writes carries this line; an existing --out file without it is
# the user's own and is never overwritten.
PAGE_MARKER = "Written by numbacnn explore."
# The page's scripts, inlined in this order (each file one view or helper).
SCRIPTS = ("util.js", "overview.js", "elementary.js", "output.js", "saliency.js", "charts.js",
           "hyperparameter.js", "main.js")
STYLES = ("explore.css",)
TEMPLATE = "explore.html"


def b64(array: np.ndarray) -> str:
    """Little-endian bytes of ``array`` (C order) as base64 text."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return base64.b64encode(array.tobytes()).decode("ascii")


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _history(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
    return [{k: _finite_or_none(float(h[k])) for k in keys if isinstance(h.get(k), (int, float))}
            for h in history if isinstance(h, dict)]


def build_page_data(*, title: str, source: str, classes: Sequence[str], layers: list[PageLayer],
                    params: dict[int, dict[str, np.ndarray]], records: list[ImageRecord],
                    history: Sequence[dict[str, Any]], confusion: dict[str, Any],
                    slides: dict[str, Any], kernel_sources: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON-ready page data (see the module docstring). A layer's ``derive`` rule is
    kept only when it rebuilds every image's maps bit for bit (:func:`derivable`)."""
    for layer in layers:
        if not derivable(layer, records):
            layer.derive = None
    dtype = str(records[0].input.dtype)
    page_layers = []
    for layer in layers:
        entry: dict[str, Any] = {
            "index": layer.index, "name": layer.name, "explainer_name": layer.explainer_name, "kind": layer.kind,
            "output_shape": list(layer.output_shape), "parameters": layer.parameters,
            "symmetric": layer.symmetric, "has_maps": layer.has_maps, "input_index": layer.input_index,
            "hyper": {k: list(v) for k, v in layer.hyper.items()}, "derive": layer.derive,
            "kernel_source": (kernel_sources or {}).get(layer.name),
        }
        if layer.affine:
            entry.update(bn_scale=b64(layer.affine["scale"]), bn_shift=b64(layer.affine["shift"]))
        if "weight" in params.get(layer.index, {}):
            weight, bias = params[layer.index]["weight"], params[layer.index]["bias"]
            entry.update(weight=b64(weight.astype(dtype)), bias=b64(bias.astype(dtype)),
                         weight_shape=list(weight.shape))
        page_layers.append(entry)
    stored = [index for index in sorted(_needed(layers)) if layers[index].derive is None]
    images = []
    for record in records:
        quantised, peaks = saliency_bytes(record.saliency)
        images.append({
            "source": record.source, "label": record.label, "pixels": b64(record.pixels),
            "input": b64(record.input), "maps": {str(i): b64(record.maps[i]) for i in stored},
            "logits": [float(v) for v in record.logits], "probabilities": [float(v) for v in record.probabilities],
            "saliency": b64(quantised), "saliency_peaks": [float(v) for v in peaks],
        })
    return {"format": PAGE_FORMAT, "title": title, "source": source, "classes": list(classes), "dtype": dtype,
            "input_shape": list(records[0].pixels.shape), "layers": page_layers, "images": images,
            "history": _history(history), "confusion": confusion, "slides": slides,
            "kernel_sources": kernel_sources}


def _needed(layers: list[PageLayer]) -> set[int]:
    """Leaf indices whose maps the page needs: the drawn ones and, for each rebuilt one,
    its input's (which may be rebuilt in turn)."""
    needed = {layer.index for layer in layers if layer.has_maps}
    pending = list(needed)
    while pending:
        layer = layers[pending.pop()]
        if layer.derive is not None and layer.input_index >= 0 and layer.input_index not in needed:
            needed.add(layer.input_index)
            pending.append(layer.input_index)
    return needed


def _static(name: str) -> str:
    return resources.files("numbacnn.explore").joinpath("static", name).read_text(encoding="utf-8")


def page_json(data: dict[str, Any]) -> str:
    """JSON safe inside ``<script>``: no ``</`` or ``<!--`` can end or confuse the element."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(data: dict[str, Any]) -> str:
    """The whole HTML page for ``data``: the template with styles, scripts and data inlined."""
    template = _static(TEMPLATE)
    css = "\n".join(_static(name) for name in STYLES)
    scripts = "\n".join(f"// ---- {name} ----\n{_static(name)}" for name in SCRIPTS)
    parts = {"{{TITLE}}": html.escape(data["title"]), "{{MARKER}}": PAGE_MARKER, "{{CSS}}": css,
             "{{DATA}}": page_json(data), "{{SCRIPTS}}": scripts.replace("</script", "<\\/script")}
    for key, value in parts.items():
        template = template.replace(key, value)
    return template


def check_output_file(out: str | os.PathLike, where: str) -> Path:
    """Raise :class:`OutputError` (nothing written) unless ``out`` can take the page: not a
    folder, not another program's file, in a folder that exists or can be created and is writable."""
    out = Path(out)
    if out.is_dir():
        raise OutputError("is a folder", where, "name the page's file, e.g. --out explore.html")
    if out.exists():
        try:
            with open(out, "rb") as f:
                head = f.read(4096)
        except OSError as exc:
            raise OutputError(f"cannot read the existing file ({exc.strerror or exc})", where,
                              "choose another --out") from exc
        if PAGE_MARKER.encode() not in head:
            raise OutputError("the file exists and is not a numbacnn explore page", where,
                              "choose another --out, or move the file away")
        if not os.access(out, os.W_OK):
            raise OutputError("the file is not writable", where, "check its permissions or choose another --out")
    existing = out.parent if str(out.parent) else Path(".")
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{existing} is a file, not a folder", where, "choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"the folder {existing} is not writable", where,
                          "check its permissions or choose another --out")
    try:  # permissions are not the whole story (root, read-only or pseudo file systems): try it
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write in the folder {existing} ({(exc.strerror or str(exc)).lower()})", where,
                          "choose a folder on a writable file system") from exc
    return out


def write_page(out: str | os.PathLike, text: str) -> int:
    """Write the page atomically (a reader sees the old file or the new one); returns its size in bytes."""
    from numbacnn.train.checkpoint import atomic_write

    payload = text.encode("utf-8")
    atomic_write(out, lambda f: f.write(payload))
    return len(payload)


__all__ = ["PAGE_FORMAT", "PAGE_MARKER", "b64", "build_page_data", "check_output_file", "page_json",
           "render_page", "write_page"]
