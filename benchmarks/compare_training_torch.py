"""PyTorch's Tiny VGG trained through numbacnn's own data pipeline, for accuracy.

    python benchmarks/compare_training_torch.py --seed 0 --padding 1

Same split, normalisation, batch order (``numbacnn.train.prepare_data``), network,
initialisation scheme and recipe as ``numbacnn train`` (batch 64, SGD lr 0.01,
momentum 0.9, 3 epochs), so the two test accuracies differ only by the framework
and the random initial weights. Needs ``pip install torch==2.13.0`` (CPU build).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from numbacnn.models import tiny_vgg_sizes
from numbacnn.train import TrainConfig, prepare_data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--padding", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = TrainConfig(seed=args.seed, padding=args.padding, image_size=28, channels=1, epochs=args.epochs)
    data = prepare_data(config)
    filters, kernel = config.filters, config.kernel_size
    final_size = tiny_vgg_sizes(28, kernel, args.padding)[-1][1]
    model = nn.Sequential(
        nn.Conv2d(1, filters, kernel, padding=args.padding), nn.ReLU(),
        nn.Conv2d(filters, filters, kernel, padding=args.padding), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(filters, filters, kernel, padding=args.padding), nn.ReLU(),
        nn.Conv2d(filters, filters, kernel, padding=args.padding), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(filters * final_size * final_size, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        data.train.set_epoch(epoch)
        model.train()
        for images, labels in data.train:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(torch.from_numpy(images)), torch.from_numpy(labels.astype(np.int64)))
            loss.backward()
            optimizer.step()
    seconds_per_epoch = (time.perf_counter() - start) / args.epochs
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in data.test:
            correct += int((model(torch.from_numpy(images)).argmax(1).numpy() == labels).sum())
            total += len(labels)
    print(f"torch, seed {args.seed}, padding {args.padding}: test accuracy {correct / total:.2%} "
          f"({seconds_per_epoch:.1f} s/epoch)")


if __name__ == "__main__":
    main()
