"""``explore``: the whole ``numbacnn explore`` command as a function.

Everything that can be refused is checked before any work, in this order: the
output file, the checkpoint (readable, finite weights), the images (the test set,
or ``--images`` files at the model's channel count). Then each image runs through
the model (progress bar on stderr), the test set gives the confusion matrix, and
the page is written atomically: a failure leaves no file and no earlier page changed.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from numbacnn.data import BatchLoader
from numbacnn.device import to_device, to_host
from numbacnn.errors import DatasetError, DatasetNotFoundError, UsageError
from numbacnn.explore.collect import collect_image, conv_parameters, describe_page_layers
from numbacnn.explore.images import from_test_set, read_user_images, test_set
from numbacnn.explore.page import build_page_data, check_output_file, render_page, write_page
from numbacnn.explore.saliency import input_gradients
from numbacnn.explore.slides import slide_table
from numbacnn.report.confusion import confusion_matrix
from numbacnn.report.kernels import forward_kernel_sources
from numbacnn.report.page import check_finite_parameters

MAX_SAMPLES = 100  # a page for a class, not a dataset: each image embeds every layer's maps
CONFUSION_BATCH = 256


@dataclass
class ExploreResult:
    """What :func:`explore` wrote: the page's path and size, and per image the prediction."""

    path: Path
    bytes: int
    sources: list[str]
    predicted: list[str]
    confusion_images: int  # test images behind the confusion matrix (0: none shown)


def _progress(total: int, enabled: bool | None):
    from tqdm.auto import tqdm

    enabled = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(total=total, desc="explore", unit="step", leave=False, disable=not enabled, file=sys.stderr)


def _confusion(model, dataset, normalizer, dtype, classes, where: str, bar) -> dict:
    loader = BatchLoader(dataset, CONFUSION_BATCH, normalizer, shuffle=False, dtype=dtype)
    predictions = []
    model.eval()
    for images, _ in loader:
        predictions.append(np.argmax(np.asarray(to_host(model(to_device(images, "cpu")))), axis=1))
        bar.update(1)
    matrix = confusion_matrix(dataset.labels, np.concatenate(predictions), len(classes))
    return {"matrix": matrix.tolist(), "images": int(matrix.sum()), "where": where}


def explore(checkpoint: str | os.PathLike, out: str | os.PathLike, images: Sequence[str | os.PathLike] | None = None,
            samples: int = 10, data_dir: str | os.PathLike | None = None,
            progress: bool | None = None, kernel_sources: dict[str, str] | None = None) -> ExploreResult:
    """Write the explore page for ``checkpoint`` to ``out``.

    Parameters
    ----------
    checkpoint : path
        ``checkpoint.npz`` written by ``numbacnn train`` (or its folder).
    out : path
        The HTML file to write (an earlier explore page there is replaced).
    images : list of paths, optional
        Image files or folders; default: ``samples`` test images of the checkpoint's
        dataset, one per class where possible.
    samples : int
        How many test images (default 10), or the most ``images`` may hold; 1..100.
    data_dir : path, optional
        Read the dataset from here instead of the place saved in the checkpoint.
    progress : bool or None
        Show a tqdm bar on stderr; None: only when stderr is a terminal.
    kernel_sources : dict or None
        Layer name (``features.0``) -> the kernel that computed it and its file:line,
        shown beside each layer. None: the CPU forward kernels ``numbacnn info
        --kernels`` names (``report.kernels.forward_kernel_sources``).

    Raises
    ------
    numbacnn.errors.NumbacnnError, FileNotFoundError
        One line naming the file or option, before anything is written.
    """
    from numbacnn.train import load_checkpoint

    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or not 1 <= samples <= MAX_SAMPLES:
        raise UsageError(f"samples must be an int from 1 to {MAX_SAMPLES}, got {samples!r}", "--samples",
                         f"use --samples 1 to {MAX_SAMPLES}")
    out = check_output_file(out, f"--out {out}")
    loaded = load_checkpoint(checkpoint)
    model = loaded.build_model("cpu")
    check_finite_parameters(model, f"checkpoint {checkpoint}")
    spec = loaded.meta["model"]["kwargs"]
    shape = (int(spec["in_channels"]), int(spec["image_size"]), int(spec["image_size"]))
    config, classes = loaded.config, loaded.classes
    dtype = np.dtype(config.dtype)
    test, test_where, missing = None, None, None
    if images:
        chosen = read_user_images(images, shape[1], shape[0], samples)
        try:  # the confusion matrix is a bonus here: the page says why it is missing
            test, test_where = test_set(config, classes, shape, data_dir)
        except (DatasetError, DatasetNotFoundError, FileNotFoundError, ValueError) as exc:
            missing = f"the checkpoint's test set could not be read: {exc}"
    else:
        test, test_where = test_set(config, classes, shape, data_dir)
        chosen = from_test_set(test, samples)

    n_batches = 0 if test is None else -(-len(test) // CONFUSION_BATCH)
    layers = describe_page_layers(model, shape)
    if kernel_sources is None:  # what numbacnn info --kernels prints for this model's forward
        kernel_sources = forward_kernel_sources(model, (1, *shape), dtype)
    records = []
    with _progress(2 * len(chosen.pixels) + n_batches + 1, progress) as bar:
        for pixels, label, source in zip(chosen.pixels, chosen.labels, chosen.sources):
            record = collect_image(model, pixels, loaded.normalizer, dtype, label, source)
            bar.update(1)
            record.saliency = input_gradients(model, record.input[None])
            bar.update(1)
            records.append(record)
        confusion = ({"missing": missing or "no test set"} if test is None else
                     _confusion(model, test, loaded.normalizer, dtype, classes, test_where, bar))
        slides = slide_table()
        bar.update(1)
    data = build_page_data(
        title=f"numbacnn explore: {checkpoint}",
        source=f"checkpoint {checkpoint} (epoch {loaded.epoch}, {config.dataset})",
        classes=classes, layers=layers, params=conv_parameters(model), records=records,
        history=loaded.meta.get("history", []), confusion=confusion, slides=slides,
        kernel_sources=kernel_sources)
    size = write_page(out, render_page(data))
    predicted = [classes[int(np.argmax(r.logits))] for r in records]
    return ExploreResult(path=out, bytes=size, sources=list(chosen.sources), predicted=predicted,
                         confusion_images=0 if test is None else len(test))


__all__ = ["ExploreResult", "MAX_SAMPLES", "explore"]
