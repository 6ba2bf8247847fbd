"""Which images the explore page shows, as uint8 (C, H, W) arrays at the model's input size.

- :func:`test_set` loads the checkpoint's own dataset (as ``numbacnn evaluate``) and
  checks its test images against the model;
- :func:`pick_one_per_class` chooses N of them, one per class in class order, then a
  second per class, ... (the same images every run);
- :func:`read_user_images` reads files and folders given with ``--images``, refusing an
  image whose own channel count differs from the model's (a colour photo for a
  grey model would be silently converted otherwise, and the page would explain
  an input the user did not give).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from numbacnn.data import IMAGE_EXTENSIONS, Dataset, image_files, load_dataset, load_image
from numbacnn.errors import DatasetError, ImageError, NumbacnnError, UsageError

# Pillow modes by channel count (alpha is dropped; a palette image is colour)
GREY_MODES = ("1", "L", "LA", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass
class ChosenImages:
    """The page's images.

    Attributes
    ----------
    pixels : uint8 array (N, C, H, W)
    labels : list of int or None
        True classes when known (test-set images), else None per image.
    sources : list of str
        ``test image 17`` or the file's path, per image.
    """

    pixels: np.ndarray
    labels: list[int | None]
    sources: list[str]


def test_set(config, classes: Sequence[str], model_shape: tuple[int, int, int],
             data_dir: str | os.PathLike | None = None) -> tuple[Dataset, str]:
    """The checkpoint's test split (its dataset, from ``data_dir`` or the saved place),
    checked against the model's (C, H, W) and classes; returns it and its location."""
    splits = load_dataset(config.dataset, data_dir or config.data_dir, image_size=config.image_size,
                          channels=config.channels, seed=config.seed)
    where = str(splits.folder or data_dir or config.data_dir or config.dataset)
    if splits.test.image_shape != tuple(model_shape):
        raise DatasetError(f"the test images are {'x'.join(map(str, splits.test.image_shape))}, the checkpoint's "
                           f"model takes {'x'.join(map(str, model_shape))}", where,
                           "use the dataset the checkpoint was trained on, or give --images")
    if config.dataset == "imagefolder" and tuple(splits.classes) != tuple(classes):
        raise DatasetError(f"the folder's classes {tuple(splits.classes)} differ from the checkpoint's "
                           f"{tuple(classes)}", where, "use the dataset the checkpoint was trained on")
    if len(splits.test) == 0:
        raise DatasetError("the test split has no images", where, "give --images")
    labels = np.asarray(splits.test.labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DatasetError(f"test labels outside 0..{len(classes) - 1}", where,
                           "use the dataset the checkpoint was trained on")
    return splits.test, where


def pick_one_per_class(labels: np.ndarray, samples: int) -> np.ndarray:
    """Indices of ``samples`` images: the first of each class (class order), then the
    second of each, ...; fewer when the split has fewer images."""
    labels = np.asarray(labels)
    per_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    chosen: list[int] = []
    rank = 0
    while len(chosen) < samples and any(rank < len(ix) for ix in per_class):
        chosen.extend(int(ix[rank]) for ix in per_class if rank < len(ix))
        rank += 1
    return np.asarray(chosen[:samples], dtype=np.int64)


def from_test_set(dataset: Dataset, samples: int) -> ChosenImages:
    """:func:`pick_one_per_class` of a test split, as :class:`ChosenImages`."""
    indices = pick_one_per_class(dataset.labels, samples)
    return ChosenImages(pixels=np.ascontiguousarray(dataset.images[indices]),
                        labels=[int(dataset.labels[i]) for i in indices],
                        sources=[f"test image {int(i)}" for i in indices])


def _expand(paths: Sequence[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise UsageError("the folder holds no images", f"--images {given}",
                                 f"put {', '.join(IMAGE_EXTENSIONS)} files in it, or name image files")
            files.extend(found)
        elif not path.exists():
            raise FileNotFoundError(f"image: the file does not exist, --images {given} (check the path)")
        else:
            files.append(path)
    return files


def image_channels(path: Path) -> int:
    """1 for a grey image file, 3 for colour (Pillow's mode; alpha ignored)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return 1 if img.mode in GREY_MODES else 3
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError("not an image file Pillow can read", path,
                         f"use PNG, JPEG, BMP, GIF or WebP ({', '.join(IMAGE_EXTENSIONS)})") from exc


def read_user_images(paths: Sequence[str | os.PathLike], image_size: int, channels: int,
                     limit: int) -> ChosenImages:
    """Read ``--images`` files and folders (a folder: its image files, sorted) at the
    model's size; at most ``limit`` images.

    Raises
    ------
    FileNotFoundError, numbacnn.errors.ImageError, numbacnn.errors.UsageError
        A missing path, an unreadable image, an image with another channel count
        than the model's, an empty folder, or more than ``limit`` images; each names the file.
    """
    files = _expand(paths)
    if len(files) > limit:
        raise UsageError(f"{len(files)} images given, more than --samples {limit}",
                         f"--images {' '.join(map(str, paths))}",
                         f"give at most {limit} images, or raise --samples")
    pixels = []
    for path in files:
        if path.is_file() and path.stat().st_size:
            found = image_channels(path)
            if found != channels:
                kinds = {1: "grey (1 channel)", 3: "colour (3 channels)"}
                raise ImageError(f"the image is {kinds[found]} but the model takes {kinds[channels]} images", path,
                                 f"give {kinds[channels].split(' ')[0]} images, or explore a model trained on "
                                 f"{kinds[found].split(' ')[0]} ones")
        try:
            pixels.append(load_image(path, image_size, channels))
        except (NumbacnnError, FileNotFoundError):
            raise
        except (OSError, ValueError) as exc:
            raise ImageError(f"cannot read the image ({getattr(exc, 'strerror', None) or exc})", path,
                             "give a PNG or JPEG image file") from exc
    return ChosenImages(pixels=np.stack(pixels), labels=[None] * len(files), sources=[str(p) for p in files])


__all__ = ["ChosenImages", "from_test_set", "image_channels", "pick_one_per_class", "read_user_images",
           "test_set"]
