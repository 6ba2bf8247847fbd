"""``numbacnn evaluate CHECKPOINT``: test accuracy of a saved model, per class, with
its confusion matrix and the misclassified test images.

Prints the accuracy and loss, then one line per class (accuracy, images, the class
it is most often mistaken for); writes ``confusion.png`` and ``misclassified.png``
to ``--out`` (default: ``evaluation/`` beside the checkpoint) when matplotlib is
installed, and says so when it is not. ``--export-images N`` also writes the first
N test images as PNG files in one folder per class (``OUT/images/<class>/<index>.png``):
images for ``numbacnn predict`` and ``explain report``, and a small image folder for
``numbacnn train --dataset imagefolder``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import numpy as np

from numbacnn.commands import DefaultsHelpFormatter

EVALUATION_DIR = "evaluation"
IMAGES_DIR = "images"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="test accuracy of a checkpoint, per class, with a confusion matrix",
        description="Evaluate a checkpoint on its dataset's test split (or another folder of the same kind): "
                    "accuracy and loss, per-class accuracy and the most frequent confusions; writes "
                    "OUT/confusion.png and OUT/misclassified.png (needs numbacnn[viz]).",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", help="checkpoint.npz written by `numbacnn train` (or its folder)")
    parser.add_argument("--data-dir", default=None,
                        help="read the dataset from here instead of the saved place ($NUMBACNN_DATA, when set, "
                             "also wins over the saved place)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run the model (auto: CUDA when a GPU is usable)")
    parser.add_argument("--batch-size", type=int, default=256, help="test images per forward pass (memory only; "
                        "the result does not depend on it)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help=f"folder for the pictures (default: {EVALUATION_DIR}/ beside the checkpoint)")
    parser.add_argument("--export-images", type=int, default=0, metavar="N",
                        help="also write the first N test images as OUT/images/<class>/<index>.png (needs Pillow)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def folder_name(name: str) -> str:
    """A class name as a folder name: ``"T-shirt/top"`` -> ``"t-shirt_top"``, ``"Ankle boot"`` -> ``"ankle_boot"``."""
    return re.sub(r"[^a-z0-9.-]+", "_", name.lower()).strip("_.") or "class"


def _check_out(out: Path) -> None:
    """Refuse, before any work, a folder that cannot be created or written."""
    from numbacnn.errors import OutputError

    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{existing} is a file", f"--out {out}", "choose a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in {existing} (permission denied)", f"--out {out}",
                          "choose a writable folder")


def per_class_lines(matrix: np.ndarray, classes: list[str]) -> list[str]:
    """One line per class: accuracy, images, and the class it is most often predicted as instead."""
    from numbacnn.report.confusion import per_class_accuracy

    accuracy = per_class_accuracy(matrix)
    width = max(len(name) for name in classes)
    lines = [f"  {'class':<{width}}  accuracy  images  most often mistaken for"]
    for t, name in enumerate(classes):
        wrong = matrix[t].copy()
        wrong[t] = 0
        images = int(matrix[t].sum())
        mistaken = f"{classes[int(np.argmax(wrong))]} ({int(wrong.max()):,})" if wrong.max() else "-"
        value = "-" if not images else f"{100 * accuracy[t]:.1f}%"
        lines.append(f"  {name:<{width}}  {value:>8}  {images:>6,}  {mistaken}")
    return lines


def run(args: argparse.Namespace) -> int:
    from numbacnn.data import DATA_ENV, BatchLoader, check_labels, load_dataset
    from numbacnn.errors import DatasetError, OutputError, UsageError
    from numbacnn.report.confusion import confusion_matrix, per_class_accuracy
    from numbacnn.train import evaluate, load_checkpoint
    from numbacnn.train.config import resolve_device_option

    # errors (bad checkpoint, missing data, ...) become one line in numbacnn.cli.main
    if args.batch_size < 1:
        raise UsageError(f"batch size must be an int >= 1, got {args.batch_size}", "--batch-size",
                         "use --batch-size 1 or more")
    if args.export_images < 0:
        raise UsageError(f"export images must be an int >= 0, got {args.export_images}", "--export-images",
                         "use --export-images 0 (none) or more")
    ckpt = load_checkpoint(args.checkpoint)
    checkpoint_path = Path(args.checkpoint)
    run_dir = checkpoint_path if checkpoint_path.is_dir() else checkpoint_path.parent
    out = Path(args.out) if args.out is not None else run_dir / EVALUATION_DIR
    _check_out(out)
    if args.export_images:
        try:
            import PIL  # noqa: F401
        except ImportError:
            from numbacnn.viz import VIZ_INSTALL_HINT

            raise UsageError("cannot write PNG files: Pillow is not installed", "--export-images",
                             VIZ_INSTALL_HINT) from None
    config = ckpt.config
    device = resolve_device_option(args.device)
    model = ckpt.build_model(device)
    # where the user said, or refused: --data-dir, else $NUMBACNN_DATA (for the named datasets
    # it applies to), else where the checkpoint was trained; the variable used to be ignored
    # because every checkpoint stores its data folder
    data_dir = args.data_dir
    if data_dir is None and not (os.environ.get(DATA_ENV) and config.dataset != "imagefolder"):
        data_dir = config.data_dir
    splits = load_dataset(config.dataset, data_dir, image_size=config.image_size,
                          channels=config.channels, seed=config.seed)
    where = splits.folder or data_dir or config.dataset
    kwargs = ckpt.meta["model"]["kwargs"]
    expected_shape = (kwargs["in_channels"], kwargs["image_size"], kwargs["image_size"])
    if splits.test.image_shape != expected_shape:
        raise DatasetError(f"the test images are {'x'.join(map(str, splits.test.image_shape))}, the checkpoint's "
                           f"model takes {'x'.join(map(str, expected_shape))}", where,
                           "evaluate on the dataset the checkpoint was trained on")
    if splits.classes != ckpt.classes and config.dataset == "imagefolder":
        raise DatasetError(f"the folder's classes {splits.classes} differ from the checkpoint's {ckpt.classes}",
                           where, "evaluate on the dataset the checkpoint was trained on")
    check_labels(splits.test.labels, len(ckpt.classes), where)
    if not len(splits.test):
        raise DatasetError("the test split has no images", where, "evaluate on a dataset with test images")
    loader = BatchLoader(splits.test, args.batch_size, ckpt.normalizer, shuffle=False, dtype=config.dtype)
    result = evaluate(model, loader, device, keep_predictions=True)
    labels, predictions = result.pop("labels"), result.pop("predictions")
    classes = list(ckpt.classes)
    matrix = confusion_matrix(labels, predictions, len(classes))
    accuracy = per_class_accuracy(matrix)
    result = dict(result, checkpoint=str(args.checkpoint), epoch=ckpt.epoch, dataset=config.dataset,
                  per_class_accuracy={name: (None if np.isnan(a) else float(a)) for name, a in zip(classes, accuracy)},
                  confusion_matrix=matrix.tolist(), classes=classes)

    written, notes, shown = [], [], 0
    try:
        from numbacnn import viz

        try:
            written.append(viz.draw_confusion_matrix(
                matrix, classes, out / viz.CONFUSION_FILE_NAME,
                title=f"{config.dataset} test, checkpoint epoch {ckpt.epoch}: accuracy {result['accuracy']:.2%}"))
            shown = viz.draw_misclassified(splits.test.images, labels, predictions, classes,
                                           out / viz.MISCLASSIFIED_FILE_NAME)
            if shown:
                written.append(out / viz.MISCLASSIFIED_FILE_NAME)
                notes.append(f"the first {shown} of {int((labels != predictions).sum()):,} misclassified test images")
        except ImportError:
            notes.append("confusion.png and misclassified.png need matplotlib: pip install \"numbacnn[viz]\"")
        for index in range(min(args.export_images, len(splits.test))):
            name = folder_name(classes[int(splits.test.labels[index])])
            written.append(viz.save_image(splits.test.images[index], out / IMAGES_DIR / name / f"{index:05d}.png",
                                          min_size=0))
    except OSError as exc:
        raise OutputError(f"cannot write the pictures ({(exc.strerror or str(exc)).lower()})", f"--out {out}",
                          "choose a writable folder with free space") from exc
    if args.json:
        result["written"] = [str(path) for path in written]
        print(json.dumps(result, indent=2))
        return 0
    print(f"{config.dataset} test: accuracy {result['accuracy']:.2%}, loss {result['loss']:.4f} "
          f"({result['images']:,} images, checkpoint epoch {ckpt.epoch})")
    print("per class:")
    print("\n".join(per_class_lines(matrix, classes)))
    pictures = [p for p in written if p.suffix == ".png" and p.parent == out]
    if pictures:
        print(f"wrote {', '.join(str(p) for p in pictures)}" + (f" ({notes.pop(0)})" if notes and shown else ""))
    exported = min(args.export_images, len(splits.test))
    if exported:
        print(f"wrote {exported:,} test image{'s' if exported != 1 else ''} to {out / IMAGES_DIR}/<class>/<index>.png")
    for note in notes:
        print(note)
    return 0
