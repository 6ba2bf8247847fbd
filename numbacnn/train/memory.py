"""How much memory a training run needs, from the shapes alone, checked before any work.

The figures come from the model's own shape arithmetic
(:func:`numbacnn.models.tiny_vgg_sizes`, :func:`numbacnn.models.tiny_vgg_parameter_count`),
so nothing is allocated to find out that it would not fit: ``--filters 1000000``
or ``--image-size 100000`` is refused in microseconds with the figure, instead of
a ``MemoryError`` after minutes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numbacnn.errors import ResourceError, UsageError
from numbacnn.models import tiny_vgg_parameter_count, tiny_vgg_sizes
from numbacnn.train.config import EVAL_BATCH_SIZE, TrainConfig

# Training keeps every layer's output for the backward pass, the gradients of
# about the same size, and the layers' reusable workspaces: three copies of the
# forward activations is a deliberately round upper estimate.
ACTIVATION_COPIES = 3
# weights, their gradients, and the optimizer's buffers (SGD momentum: 1, Adam: 2)
OPTIMIZER_BUFFERS = {"sgd": 1, "adam": 2, "adamw": 2}

# images and classes of the fixed-size datasets: (count, channels, size, classes)
KNOWN_DATASETS = {"fashion-mnist": (70000, 1, 28, 10), "mnist": (70000, 1, 28, 10), "cifar10": (60000, 3, 32, 10)}


def available_memory_bytes() -> int | None:
    """Memory this process can still use: ``MemAvailable`` of /proc/meminfo (else
    free physical pages), capped by a cgroup (container) limit; None if unknown."""
    figures = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    figures.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError):
        pass
    if not figures:
        try:
            figures.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit.isdigit() and int(limit) < 2**60:
                figures.append(max(0, int(limit) - int(Path(usage_file).read_text().strip())))
                break
        except (OSError, ValueError):
            continue
    return min(figures) if figures else None


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


@dataclass
class MemoryEstimate:
    """Bytes a run needs, by part (see :func:`estimate_training_memory`)."""

    parameters: int
    parameter_bytes: int
    activation_bytes: int
    dataset_bytes: int

    @property
    def total(self) -> int:
        return self.parameter_bytes + self.activation_bytes + self.dataset_bytes

    @property
    def checkpoint_bytes(self) -> int:
        """About the size of checkpoint.npz: weights and optimizer buffers."""
        return self.parameter_bytes


def data_facts(config: TrainConfig) -> tuple[int, int, int, int]:
    """(images, channels, image size, classes) of ``config``'s dataset, known without
    reading it: the IDX files' headers (the standard counts when they are not found),
    fixed for CIFAR-10, counted from the file names for an image folder."""
    key = config.dataset.lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key in KNOWN_DATASETS:
        images, channels, size, classes = KNOWN_DATASETS[key]
        from numbacnn.data import count_idx_images

        # the files that will be read may be a smaller (or larger) set in the same format
        counted = count_idx_images(key, config.data_dir)
        return (counted if counted is not None else images), channels, size, classes
    from numbacnn.data import count_images

    images, classes = count_images(config.data_dir) if config.data_dir else (0, 0)
    return images, config.channels, config.image_size, max(classes, 1)


def estimate_training_memory(config: TrainConfig, images: int, channels: int, size: int,
                             classes: int) -> MemoryEstimate:
    """Parameters, activation and dataset memory of training ``config``'s Tiny VGG.

    Parameters
    ----------
    config : TrainConfig
    images, channels, size, classes : int
        The dataset: image count, channels, height = width, classes.

    Returns
    -------
    MemoryEstimate
        In bytes: parameters with gradients and optimizer buffers; forward
        activations of the largest batch (training or evaluation) times
        ``ACTIVATION_COPIES``; the uint8 images.

    Raises
    ------
    numbacnn.errors.UsageError
        The kernel size, padding and stride leave a layer below 1x1 (from
        :func:`tiny_vgg_sizes`), naming those options.
    """
    stride = getattr(config, "stride", 1)
    try:
        sizes = tiny_vgg_sizes(size, config.kernel_size, config.padding, strict=False, stride=stride)
        parameters = tiny_vgg_parameter_count(channels, classes, size, config.filters, config.kernel_size,
                                              config.padding, stride)
    except ValueError as exc:
        options = f"--kernel-size {config.kernel_size} --padding {config.padding}" + (
            f" --stride {stride}" if stride != 1 else "") + (
            f" --image-size {size}" if config.dataset == "imagefolder" else f" ({size}x{size} images)")
        raise UsageError(f"impossible model ({exc})", options, "choose another kernel size, padding or stride") \
            from None
    itemsize = np.dtype(config.dtype).itemsize
    per_image = channels * size * size  # the input batch
    for name, layer_size in sizes:
        outputs = config.filters * layer_size * layer_size
        per_image += 2 * outputs if name.startswith("conv") else outputs  # a conv's ReLU output too
    per_image += classes
    # the largest batch that can occur: a --batch-size above the image count is one batch of
    # every image per epoch (as a PyTorch DataLoader does), not a batch of --batch-size images
    batch = max(config.batch_size, EVAL_BATCH_SIZE)
    if images > 0:
        batch = min(batch, images)
    buffers = 2 + OPTIMIZER_BUFFERS.get(config.optimizer, 2)
    return MemoryEstimate(parameters=parameters, parameter_bytes=parameters * itemsize * buffers,
                          activation_bytes=ACTIVATION_COPIES * batch * per_image * itemsize,
                          dataset_bytes=images * channels * size * size)


def _largest_factor(config: TrainConfig, estimate: MemoryEstimate, size: int) -> str:
    """The option that most likely made the run too big, as it was given."""
    padded = (size + 2 * config.padding) / max(size, 1)
    growth = {f"--filters {config.filters}": config.filters / 10, f"--batch-size {config.batch_size}":
              config.batch_size / 64 if estimate.activation_bytes > estimate.parameter_bytes else 0,
              f"--padding {config.padding}": padded ** 2}
    if config.dataset == "imagefolder":
        growth[f"--image-size {config.image_size}"] = (config.image_size / 64) ** 2
    return max(growth, key=growth.get)


def check_training_memory(config: TrainConfig, available: int | None = None) -> MemoryEstimate:
    """Refuse a run whose estimated memory exceeds what the machine has available.

    Raises
    ------
    numbacnn.errors.ResourceError
        (a ``MemoryError``) with the estimate, its parts, the memory available and
        the option most responsible.
    numbacnn.errors.UsageError
        The sizes do not fit at all (a layer below 1x1).
    """
    images, channels, size, classes = data_facts(config)
    estimate = estimate_training_memory(config, images, channels, size, classes)
    available = available_memory_bytes() if available is None else available
    if available is not None and estimate.total > available:
        raise ResourceError(
            f"the run needs about {format_bytes(estimate.total)} of memory ({estimate.parameters:,} parameters "
            f"{format_bytes(estimate.parameter_bytes)} with gradients and optimizer state, activations "
            f"{format_bytes(estimate.activation_bytes)}, images {format_bytes(estimate.dataset_bytes)}), more than "
            f"the {format_bytes(available)} available", _largest_factor(config, estimate, size),
            "choose smaller values")
    return estimate


__all__ = ["MemoryEstimate", "available_memory_bytes", "check_training_memory", "estimate_training_memory",
           "format_bytes"]
