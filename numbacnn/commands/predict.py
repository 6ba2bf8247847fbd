"""``numbacnn predict CHECKPOINT IMAGE...``: the top-3 classes of each image."""

from __future__ import annotations

import argparse

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="top classes with probabilities for image files",
        description="Classify image files (PNG/JPEG; resized and converted to the model's input) with a "
                    "checkpoint. Needs Pillow: pip install \"numbacnn[viz]\".",
    )
    parser.add_argument("checkpoint", help="checkpoint.npz written by `numbacnn train` (or its folder)")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--top", type=int, default=3, help="how many classes to show per image")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--invert", action="store_true",
                        help="invert grey levels first (Fashion-MNIST/MNIST images are light-on-dark; "
                             "photos of dark objects on white need this)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from numbacnn.data import load_image
    from numbacnn.report import softmax
    from numbacnn.device import to_device, to_host
    from numbacnn.errors import printable
    from numbacnn.train import load_checkpoint
    from numbacnn.train.config import resolve_device_option

    # errors (bad checkpoint, unreadable image, ...) become one line in numbacnn.cli.main
    ckpt = load_checkpoint(args.checkpoint)
    device = resolve_device_option(args.device)
    model = ckpt.build_model(device).eval()
    kwargs = ckpt.meta["model"]["kwargs"]
    images = np.stack([load_image(p, kwargs["image_size"], kwargs["in_channels"]) for p in args.images])
    if args.invert:
        images = 255 - images
    x = ckpt.normalizer(images, np.dtype(ckpt.config.dtype))
    probabilities = softmax(to_host(model(to_device(x, device))))
    classes = ckpt.classes
    top = max(1, min(args.top, len(classes)))
    for path, p in zip(args.images, probabilities):
        best = np.argsort(-p, kind="stable")[:top]
        # printable: one line per image even for a class or file name holding a newline or
        # bytes that are not UTF-8
        print(f"{printable(path)}: " + ", ".join(f"{printable(classes[i])} {p[i]:.1%}" for i in best))
    return 0
