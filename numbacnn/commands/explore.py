"""``numbacnn explore CHECKPOINT --out page.html``: CNN Explainer's interactive views
on a trained model, as one self-contained HTML page (no server, no network).

Exit codes: 0 written; 2 refused before any work (bad checkpoint, images, --out);
1 failed while working (disk full, ...). See :mod:`numbacnn.explore`.
"""

from __future__ import annotations

import argparse

from numbacnn.commands import DefaultsHelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explore", help="one self-contained HTML page to explore a trained model interactively",
        description="Write one HTML page (open it from disk; nothing is fetched) with CNN Explainer's views on "
                    "a checkpoint: every layer's maps per image, a click on a map pixel opens the convolution "
                    "/ ReLU / max-pool arithmetic, the softmax, saliency maps, training curves, the confusion "
                    "matrix and the hyperparameter view. The maps, logits and gradients come from numbacnn's "
                    "kernels; sums the page works out are shown beside the values they recompute.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", help="checkpoint.npz written by `numbacnn train` (or its folder)")
    parser.add_argument("--images", nargs="+", metavar="FILE_OR_FOLDER", default=None,
                        help="image files or folders to show (default: test images of the checkpoint's dataset, "
                             "one per class)")
    parser.add_argument("--samples", type=int, default=10,
                        help="how many test images to show (or the most --images may hold), 1 to 100")
    parser.add_argument("--data-dir", default=None, help="read the dataset from here instead of the saved place")
    parser.add_argument("--out", required=True, metavar="FILE", help="the HTML page to write, e.g. explore.html")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from numbacnn.explore import explore

    result = explore(args.checkpoint, args.out, images=args.images, samples=args.samples, data_dir=args.data_dir)
    for source, predicted in zip(result.sources, result.predicted):
        print(f"  {source}: {predicted}")
    confusion = (f", confusion matrix of {result.confusion_images:,} test images" if result.confusion_images
                 else "")
    print(f"wrote {result.path} ({result.bytes / 1e6:.2f} MB, {len(result.sources)} images{confusion}; "
          f"open it in a browser)")
    return 0
