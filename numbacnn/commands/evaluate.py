"""``numbacnn evaluate CHECKPOINT``: test accuracy of a saved model."""

from __future__ import annotations

import argparse
import json
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="test loss and accuracy of a checkpoint",
        description="Evaluate a checkpoint on its dataset's test split (or another folder of the same kind).",
    )
    parser.add_argument("checkpoint", help="checkpoint.npz written by `numbacnn train` (or its folder)")
    parser.add_argument("--data-dir", default=None,
                        help="read the dataset from here instead of the saved place ($NUMBACNN_DATA, when set, "
                             "also wins over the saved place)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from numbacnn.data import DATA_ENV, BatchLoader, check_labels, load_dataset
    from numbacnn.errors import DatasetError, UsageError
    from numbacnn.train import evaluate, load_checkpoint
    from numbacnn.train.config import resolve_device_option

    # errors (bad checkpoint, missing data, ...) become one line in numbacnn.cli.main
    if args.batch_size < 1:
        raise UsageError(f"batch size must be an int >= 1, got {args.batch_size}", "--batch-size",
                         "use --batch-size 1 or more")
    ckpt = load_checkpoint(args.checkpoint)
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
    result = evaluate(model, loader, device)
    result = dict(result, checkpoint=str(args.checkpoint), epoch=ckpt.epoch, dataset=config.dataset)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{config.dataset} test: accuracy {result['accuracy']:.2%}, loss {result['loss']:.4f} "
              f"({result['images']:,} images, checkpoint epoch {ckpt.epoch})")
    return 0
