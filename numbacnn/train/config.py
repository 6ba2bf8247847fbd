"""What defines a training run: :class:`TrainConfig` and the choices it accepts."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from numbacnn.data import DATASETS
from numbacnn.errors import UsageError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine")
NORMALIZATIONS = ("scale", "standardize")
DTYPES = ("float32", "float64")
EVAL_BATCH_SIZE = 256


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint).

    The defaults train Tiny VGG on Fashion-MNIST with PyTorch's reference recipe
    (batch 64, SGD lr 0.01 momentum 0.9) and padding 1.
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    seed: int = 0
    device: str = "auto"
    padding: int = 1
    filters: int = 10
    kernel_size: int = 3
    stride: int = 1  # of each block's first convolution (tiny_vgg's stride); the 2x2 pools keep stride 2
    batch_norm: bool = False  # BatchNorm2d after every convolution (tiny_vgg's batch_norm)
    dropout: float = 0.0  # Dropout before the classifier's Linear when > 0 (tiny_vgg's dropout)
    image_size: int = 64  # imagefolder only: images are resized to this; other datasets have fixed sizes
    channels: int = 3  # imagefolder only
    val_fraction: float = 0.05
    dtype: str = "float32"
    # "standardize": per-channel mean/std of the training images; "scale": x / 255
    # (PyTorch's ToTensor). Measured on Fashion-MNIST, padding 1, 3 epochs:
    # standardize 87.9%, scale 86.8% test accuracy.
    normalize: str = "standardize"

    def validate(self) -> None:
        """Check every field's type and range before any work.

        Raises
        ------
        numbacnn.errors.UsageError
            (a ``ValueError``) naming the first bad field as its command-line
            option (``--val-fraction``) and what it accepts.
        """
        choices = {"dataset": DATASETS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
                   "normalize": NORMALIZATIONS, "dtype": DTYPES, "device": DEVICES}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if name == "dataset" and isinstance(value, str):  # load_dataset's spellings
                value = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(
                    value.lower().replace("_", "-"), value.lower().replace("_", "-"))
            if value not in allowed:
                _refuse(name, f"must be one of {', '.join(allowed)}, got {value!r}", f"use {_option(name)} {allowed[0]}")
        minimums = {"epochs": 1, "batch_size": 1, "filters": 1, "kernel_size": 1, "stride": 1, "image_size": 1,
                    "padding": 0, "seed": 0}
        for name, minimum in minimums.items():
            value = getattr(self, name, minimum)  # stride and any later field may be absent in old configs
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                _refuse(name, f"must be an int >= {minimum}, got {value!r}", f"use {_option(name)} {minimum} or more")
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            _refuse("channels", f"must be 1 (grey) or 3 (RGB), got {self.channels!r}", "use --channels 1 or 3")
        if self.data_dir is not None and not isinstance(self.data_dir, (str, os.PathLike)):
            _refuse("data_dir", f"must be a path, got {self.data_dir!r}", "use --data-dir FOLDER")
        numbers = {"lr": (False, "a finite number > 0"), "momentum": (True, "a finite number >= 0"),
                   "weight_decay": (True, "a finite number >= 0")}
        for name, (zero_ok, text) in numbers.items():
            value = getattr(self, name)
            good = (isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
                    and math.isfinite(value) and (value >= 0 if zero_ok else value > 0))
            if not good:
                _refuse(name, f"must be {text}, got {value!r}", f"e.g. {_option(name)} {getattr(TrainConfig, name)}")
        if not isinstance(getattr(self, "batch_norm", False), (bool, np.bool_)):
            _refuse("batch_norm", f"must be true or false, got {self.batch_norm!r}", "use --batch-norm or leave it out")
        value = getattr(self, "dropout", 0.0)
        if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value)
                or not 0.0 <= value < 1.0):
            _refuse("dropout", f"must be a probability in [0, 1), got {value!r}", "e.g. --dropout 0.25, or 0 for none")
        value = self.val_fraction
        if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value)
                or not 0.0 <= value < 1.0):
            _refuse("val_fraction", f"must be in [0, 1), got {value!r}", "e.g. --val-fraction 0.05, or 0 for none")


DEVICES = ("auto", "cpu", "cuda")


def _option(name: str) -> str:
    """The command-line option of a TrainConfig field: ``val_fraction`` -> ``--val-fraction``."""
    return "--" + name.replace("_", "-")


def _refuse(name: str, what: str, todo: str) -> None:
    raise UsageError(f"{name.replace('_', ' ')} {what}", _option(name), todo)


def resolve_device_option(device: str) -> str:
    """:func:`numbacnn.device.resolve_device`, with an unusable device reported as a
    :class:`numbacnn.errors.UsageError` naming ``--device``."""
    from numbacnn.device import DeviceError, resolve_device

    import sys
    import warnings

    from numbacnn.device import SimulatorWarning

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SimulatorWarning)
            resolved = resolve_device(device)
    except DeviceError as exc:
        what = str(exc).split(". ")[0].split("; install")[0]  # the reason; the advice is the todo below
        raise UsageError(what, f"--device {device}", "use --device cpu") from None
    for warning in caught:  # one line on stderr, not Python's two-line warning format
        print(f"numbacnn: warning: {warning.message}", file=sys.stderr)
    return resolved

