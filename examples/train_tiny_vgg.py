"""Train CNN Explainer's Tiny VGG on Fashion-MNIST with the Python API.

The same job as ``numbacnn train``, spelled out: load data, build the model,
train with SGD, evaluate, save and reload a checkpoint, classify a few images.

    python examples/train_tiny_vgg.py --epochs 1
    NUMBACNN_DATA=/my/fashion-mnist python examples/train_tiny_vgg.py

Needs the Fashion-MNIST IDX files (``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse

import numpy as np

import numbacnn
import numbacnn.functional as F
from numbacnn.data import BatchLoader, Normalizer, load_dataset, stratified_split
from numbacnn.models import tiny_vgg
from numbacnn.optim import SGD, CosineAnnealingLR
from numbacnn.train import evaluate, fit, load_checkpoint, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--padding", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="use only the first LIMIT training images")
    args = parser.parse_args()

    device = numbacnn.set_default_device(args.device)  # new parameters are created there
    splits = load_dataset("fashion-mnist")
    train_set = splits.train if args.limit is None else splits.train.subset(np.arange(args.limit))
    keep, held = stratified_split(train_set.labels, 0.05, seed=0)
    normalize = Normalizer.fit(train_set.images[keep])  # per-channel mean/std of the training images
    train_loader = BatchLoader(train_set.subset(keep), 64, normalize, shuffle=True, seed=0)
    val_loader = BatchLoader(train_set.subset(held), 256, normalize, shuffle=False)
    test_loader = BatchLoader(splits.test, 256, normalize, shuffle=False)

    # 1x28x28 -> 28 -> 28 -> 14 -> 14 -> 14 -> 7 with padding 1
    model = tiny_vgg(in_channels=1, num_classes=10, image_size=28, padding=args.padding, seed=0)
    model.summary((1, 28, 28))
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = CosineAnnealingLR(optimizer, T_max=args.epochs)

    # One step by hand: forward caches, backward fills .grad, the optimizer updates.
    images, labels = next(iter(train_loader))
    logits = model(numbacnn.to_device(images))
    loss, grad_logits = F.softmax_cross_entropy(logits, numbacnn.to_device(labels))
    optimizer.zero_grad()
    model.backward(grad_logits, input_grad=False)  # the first conv needs no input gradient
    optimizer.step()
    print(f"first batch loss {loss:.4f}")

    # The rest with the library's loop (tqdm bar on a terminal, a line per epoch).
    fit(model, optimizer, train_loader, val_loader, epochs=args.epochs, device=device, scheduler=scheduler)
    result = evaluate(model, test_loader, device)
    print(f"test accuracy {result['accuracy']:.2%}")

    meta = {"epoch": args.epochs, "config": {"dataset": "fashion-mnist", "padding": args.padding},
            "model": {"name": "tiny_vgg", "kwargs": dict(in_channels=1, num_classes=10, image_size=28,
                                                        filters=10, kernel_size=3, padding=args.padding,
                                                        dtype="float32", seed=0)},
            "normalizer": {"mean": list(normalize.mean), "std": list(normalize.std)},
            "classes": list(splits.classes)}
    save_checkpoint("tiny_vgg_example.npz", model, optimizer, meta)
    restored = load_checkpoint("tiny_vgg_example.npz").build_model(device).eval()
    logits = numbacnn.to_host(restored(numbacnn.to_device(normalize(splits.test.images[:3]))))
    for scores, label in zip(logits, splits.test.labels[:3]):
        print(f"true {splits.classes[label]:>12}  predicted {splits.classes[int(np.argmax(scores))]}")


if __name__ == "__main__":
    main()
