"""What a trained Tiny VGG sees: one Fashion-MNIST test image's activation maps as HTML.

Loads a checkpoint written by ``numbacnn train`` (or trains one epoch first when
there is none), takes one test image and writes ``OUT/index.html`` with the input,
every conv / ReLU / pool layer's activation maps, the first-layer kernels and the
class probabilities. Open the page in any browser; it needs no server.

    numbacnn train --epochs 3 --out runs/tiny_vgg        # or let this script train 1 epoch
    python examples/activation_maps.py --checkpoint runs/tiny_vgg --index 0 --out runs/report

The command-line equivalent for an image file:
``numbacnn explain report runs/tiny_vgg/checkpoint.npz shoe.png --out runs/report``.
Needs matplotlib and Pillow: ``pip install "numbacnn[viz]"``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from numbacnn.data import load_dataset
from numbacnn.report import write_report
from numbacnn.train import CHECKPOINT_NAME, TrainConfig, load_checkpoint, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/tiny_vgg", help="checkpoint.npz or its folder")
    parser.add_argument("--index", type=int, default=0, help="which Fashion-MNIST test image")
    parser.add_argument("--out", default="runs/report", help="report folder")
    args = parser.parse_args()

    checkpoint_path = Path(args.checkpoint)
    if checkpoint_path.is_dir():
        checkpoint_path = checkpoint_path / CHECKPOINT_NAME
    if not checkpoint_path.exists():
        print(f"no checkpoint at {checkpoint_path}: training one epoch first (a few minutes on a CPU)")
        train(TrainConfig(epochs=1), out=checkpoint_path.parent)
    checkpoint = load_checkpoint(checkpoint_path)
    model = checkpoint.build_model("cpu")

    test_set = load_dataset(checkpoint.config.dataset, checkpoint.config.data_dir).test
    image, label = test_set.images[args.index], int(test_set.labels[args.index])
    report = write_report(
        model, image, args.out, checkpoint.classes, normalizer=checkpoint.normalizer,
        dtype=checkpoint.config.dtype,
        source=f"{checkpoint_path} (epoch {checkpoint.epoch}); {checkpoint.config.dataset} test image "
               f"{args.index}, true class {checkpoint.classes[label]}",
    )
    print(f"true class {checkpoint.classes[label]}, predicted {report.predicted_class} "
          f"({report.probabilities[report.predicted]:.1%})")
    for layer in report.layers:
        print(f"  {layer.explainer_name:<11} {layer.shape[0]} maps of {layer.shape[1]}x{layer.shape[2]}, "
              f"values {layer.value_range[0]:.2f} to {layer.value_range[1]:.2f}")
    print(f"open {report.index.resolve().as_uri()}")


if __name__ == "__main__":
    main()
