"""The training and evaluation loops: :func:`fit`, :func:`train_one_epoch`, :func:`evaluate`."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable

import numpy as np

import numbacnn.functional as F
from numbacnn.data import BatchLoader
from numbacnn.device import synchronize, to_device, to_host
from numbacnn.errors import NumbacnnError
from numbacnn.functional.loss import _check_labels
from numbacnn.nn import Module
from numbacnn.optim import LRScheduler, Optimizer
from numbacnn.train.threads import ThreadGovernor, default_threads, governed


# On a GPU, reading the loss back every step waits for each step to finish and
# costs a transfer; every this many batches is often enough for the NaN check and
# the progress bar (issue 12).
GPU_READBACK_EVERY = 20


class TrainingDiverged(NumbacnnError, RuntimeError):
    """The loss became NaN or infinite; the message says where and what to try."""

    exit_code = 1


def _progress_bar(total: int, desc: str, enabled: bool | None):
    """A tqdm bar on stderr; disabled when stderr is not a terminal (logs, CI)."""
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


def train_one_epoch(model: Module, optimizer: Optimizer, loader: BatchLoader, device: str, epoch: int,
                    epochs: int, progress: bool | None = None,
                    readback_every: int = GPU_READBACK_EVERY,
                    governor: ThreadGovernor | None = None) -> dict[str, float]:
    """One pass over ``loader`` (set to ``epoch`` first); returns loss, accuracy, seconds, images/s.

    On CUDA the loss and the correct predictions are summed on the device and read
    back every ``readback_every`` batches and after the last one (one small copy each
    time, see ``functional/metrics.py``); the NaN/Inf check runs on each read. The
    labels are range-checked once for the whole dataset, on the host. On the CPU,
    ``governor`` (see ``train/threads.py``) sets the thread count step by step and
    gives the caller's back at the end.

    Raises
    ------
    TrainingDiverged
        The loss is NaN or infinite; the model has already been changed by the
        earlier batches of this epoch, so reload the last checkpoint.
    """
    model.train()
    loader.set_epoch(epoch)
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    if not isinstance(readback_every, int) or readback_every < 1:
        raise ValueError(f"train_one_epoch: readback_every is {readback_every!r}, expected an integer >= 1 (batches)")
    on_gpu = device == "cuda"
    metrics = F.RunningMetrics(device) if on_gpu else None
    checked = 0  # batches whose loss has been read back (on the GPU)
    with _progress_bar(len(loader), f"epoch {epoch + 1}/{epochs}", progress) as bar, governed(governor) as on_step:
        for step, (images, labels) in enumerate(loader):
            on_step()
            x = to_device(images, device)
            y = to_device(labels, device)
            logits = model(x)
            if on_gpu:
                if step == 0:  # the whole dataset's labels, on the host: no per-batch read-back
                    dataset_labels = getattr(getattr(loader, "dataset", None), "labels", labels)
                    _check_labels("train", np.asarray(dataset_labels), len(dataset_labels), int(logits.shape[1]))
                losses, grad = F.softmax_cross_entropy_rows(logits, y, check_labels=False)
            else:
                loss, grad = F.softmax_cross_entropy(logits, y)
                if not math.isfinite(loss):
                    raise TrainingDiverged(
                        f"the training loss became {loss} at epoch {epoch + 1}, batch {step + 1}/{len(loader)} "
                        f"(lr {optimizer.lr:g}); training stopped. Try a smaller --lr"
                    )
            optimizer.zero_grad()
            model.backward(grad, input_grad=False)
            optimizer.step()
            n = len(labels)
            if on_gpu:
                metrics.add(losses, logits, y)
                if (step + 1) % readback_every == 0 or step == len(loader) - 1:
                    loss_sum, correct, seen = metrics.read()
                    if not math.isfinite(loss_sum):
                        raise TrainingDiverged(
                            f"the training loss became {loss_sum} at epoch {epoch + 1}, between batches "
                            f"{checked + 1} and {step + 1}/{len(loader)} (lr {optimizer.lr:g}); training stopped. "
                            f"Try a smaller --lr"
                        )
                    checked = step + 1
            else:
                loss_sum += loss * n
                correct += int(np.sum(np.argmax(to_host(logits), axis=1) == labels))
                seen += n
            bar.update(1)
            if (step % 20 == 0 and not on_gpu) or step + 1 == checked or step == len(loader) - 1:
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.2%}",
                                img_s=f"{seen / max(elapsed, 1e-9):.0f}", refresh=False)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "seconds": seconds, "images_per_second": seen / max(seconds, 1e-9), "train_images": seen}


def evaluate(model: Module, loader: BatchLoader, device: str = "cpu",
             keep_predictions: bool = False) -> dict[str, Any]:
    """Mean loss and accuracy of ``model`` on every batch of ``loader`` (in eval mode).

    Parameters
    ----------
    keep_predictions : bool
        Also return every image's predicted class, in the loader's order (one
        extra copy of the logits to the host per batch on a GPU).

    Returns
    -------
    dict
        ``loss`` (mean cross-entropy), ``accuracy`` (fraction in [0, 1]), ``images``;
        with ``keep_predictions``, ``predictions`` (int64 (N,)) and ``labels`` (int64 (N,)).
    """
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    predicted: list[np.ndarray] = []
    true: list[np.ndarray] = []
    metrics = F.RunningMetrics(device) if device == "cuda" else None  # read back once, at the end
    try:
        for images, labels in loader:
            logits = model(to_device(images, device))
            if keep_predictions:
                predicted.append(np.argmax(to_host(logits), axis=1).astype(np.int64))
                true.append(np.asarray(labels, dtype=np.int64))
            if metrics is not None:
                _check_labels("evaluate", np.asarray(labels), len(labels), int(logits.shape[1]))  # on the host
                y = to_device(labels, device)
                losses, _ = F.softmax_cross_entropy_rows(logits, y, check_labels=False)
                metrics.add(losses, logits, y)
                continue
            loss, _ = F.softmax_cross_entropy(logits, to_device(labels, device))
            n = len(labels)
            loss_sum += loss * n
            correct += int(np.sum(np.argmax(to_host(logits), axis=1) == labels))
            seen += n
        if metrics is not None:
            loss_sum, correct, seen = metrics.read()
    finally:
        model.train(was_training)
    result: dict[str, Any] = {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "images": seen}
    if keep_predictions:
        empty = np.zeros(0, dtype=np.int64)
        result["predictions"] = np.concatenate(predicted) if predicted else empty
        result["labels"] = np.concatenate(true) if true else empty
    return result


# A mean training loss this many times that of a uniform guess (ln K for K classes)
# means the weights are blowing up while staying finite (--lr 1000 reached 6e11 at
# chance accuracy with no NaN): the run goes on, with a warning each such epoch.
DIVERGING_LOSS_FACTOR = 10.0


def _class_count(loader: BatchLoader) -> int:
    """K, from the dataset's class names, else its largest label + 1."""
    dataset = loader.dataset
    if getattr(dataset, "classes", ()):
        return len(dataset.classes)
    return int(np.max(dataset.labels)) + 1 if len(dataset) else 2


def diverging_warning(train_loss: float, classes: int, lr: float) -> str:
    """The warning for a finite loss far above chance level, or "" (see :data:`DIVERGING_LOSS_FACTOR`)."""
    chance = math.log(max(classes, 2))
    if not math.isfinite(train_loss) or train_loss <= DIVERGING_LOSS_FACTOR * chance:
        return ""
    return (f"the training loss {train_loss:.3g} is more than {DIVERGING_LOSS_FACTOR:g}x that of a uniform guess "
            f"({chance:.2f} for {classes} classes): the weights are diverging; the learning rate {lr:g} is "
            f"probably too large (the default is 0.01)")


def fit(model: Module, optimizer: Optimizer, train_loader: BatchLoader, val_loader: BatchLoader | None = None,
        epochs: int = 1, device: str = "cpu", scheduler: LRScheduler | None = None, start_epoch: int = 0,
        history: list[dict[str, Any]] | None = None,
        on_epoch_end: Callable[[int, list[dict[str, Any]]], None] | None = None,
        progress: bool | None = None, log: Callable[[str], None] | None = print,
        threads: str | int | ThreadGovernor | None = None) -> list[dict[str, Any]]:
    """Train from epoch ``start_epoch`` up to ``epochs`` (exclusive), validating after each.

    Parameters
    ----------
    model, optimizer, train_loader, val_loader
        The loaders yield (images (B, C, H, W), labels (B,)) NumPy batches; they
        are moved to ``device`` here.
    scheduler : LRScheduler or None
        Stepped once after every epoch.
    history : list of dict or None
        Metrics of earlier epochs (when resuming); new epochs are appended.
    on_epoch_end : callable(epoch_done, history) or None
        Called after each epoch, e.g. to write a checkpoint and metrics.
    progress : bool or None
        Show the tqdm bar; None means only when stderr is a terminal.
    log : callable or None
        Receives one summary line per epoch.
    threads : "auto", int, ThreadGovernor or None
        CPU training threads: "auto" adapts the count to what the machine gives
        (``train/threads.py``), an int fixes it; the caller's count is restored.
        None: ``threads.default_threads()`` ("auto" unless ``--threads`` set it).

    Returns
    -------
    list of dict
        Per epoch: epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr,
        seconds, images_per_second.
    """
    history = list(history or [])
    if threads is None:
        threads = default_threads()
    governor = None if device == "cuda" else threads if isinstance(threads, ThreadGovernor) else ThreadGovernor(threads)
    for epoch in range(start_epoch, epochs):
        lr = optimizer.lr
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
        record.update(train_one_epoch(model, optimizer, train_loader, device, epoch, epochs, progress,
                                      governor=governor))
        if val_loader is not None and len(val_loader.dataset):
            val = evaluate(model, val_loader, device)
            record["val_loss"], record["val_accuracy"] = val["loss"], val["accuracy"]
        if scheduler is not None:
            scheduler.step()
        warning = diverging_warning(record["train_loss"], _class_count(train_loader), optimizer.lr)
        if warning:
            record["warning"] = warning
        history.append(record)
        if log is not None:
            val_text = f"  val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.2%}" if "val_loss" in record else ""
            log(f"epoch {epoch + 1}/{epochs}  train loss {record['train_loss']:.4f} acc "
                f"{record['train_accuracy']:.2%}{val_text}  {record['seconds']:.1f} s  "
                f"{record['images_per_second']:.0f} images/s")
            if warning:
                log(f"warning: {warning}")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, history)
    return history
