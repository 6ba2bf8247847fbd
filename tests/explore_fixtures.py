"""Checkpoints and pages shared by tests/test_explore.py and tests/test_explore_browser.py:
tiny models trained for a few batches by numbacnn.train on generated data (seconds)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from numbacnn.train import CHECKPOINT_NAME, TrainConfig, train
from test_data import write_fake_idx_dataset

IMAGE_SIZE = 12


def trained_checkpoint(folder: Path, **config) -> Path:
    """numbacnn.train on the given config (one short epoch), returning the checkpoint path."""
    settings = dict(epochs=1, batch_size=8, lr=0.05, filters=3, val_fraction=0.2, device="cpu", seed=0)
    settings.update(config)
    train(TrainConfig(**settings), out=folder / "run", progress=False, log=None)
    return folder / "run" / CHECKPOINT_NAME


def write_colour_folder(root: Path, size: int = 16, per_class: int = 6, classes=("cat", "dog", "fox")) -> Path:
    """An imagefolder dataset of RGB PNGs whose dominant colour is the class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            pixels[..., k % 3] += 150 - 40 * (k // 3)
            Image.fromarray(pixels, "RGB").save(root / name / f"{n}.png")
    return root


@pytest.fixture(scope="session")
def grey_checkpoint(tmp_path_factory) -> Path:
    """A Tiny VGG on generated 12x12 MNIST-format data, padding 1, 3 filters, 2 epochs (a history to draw)."""
    folder = tmp_path_factory.mktemp("explore-grey")
    data = write_fake_idx_dataset(folder / "mnist", n_train=40, n_test=20, size=IMAGE_SIZE)
    return trained_checkpoint(folder, dataset="mnist", data_dir=str(data), padding=1, epochs=2)


@pytest.fixture(scope="session")
def grey_page(grey_checkpoint, tmp_path_factory) -> Path:
    from numbacnn.explore import explore

    out = tmp_path_factory.mktemp("explore-page") / "explore.html"
    explore(grey_checkpoint, out, samples=10, progress=False)
    return out


def page_data(path: Path) -> dict:
    """The JSON the page embeds."""
    text = path.read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))
