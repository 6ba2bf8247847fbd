"""The whole job from a :class:`TrainConfig`: :func:`train` (data, model, optimizer,
fit, test accuracy, ``checkpoint.npz`` and ``metrics.json`` in the output folder)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from numbacnn.data import BatchLoader, Normalizer, load_dataset, stratified_split
from numbacnn.errors import CheckpointError, DatasetError, OutputError, UsageError
from numbacnn.models import STRIDE_RULE, tiny_vgg
from numbacnn.nn import Module
from numbacnn.optim import SGD, Adam, CosineAnnealingLR, LRScheduler, Optimizer, StepLR
from numbacnn.train.checkpoint import CHECKPOINT_NAME, atomic_write, load_checkpoint, save_checkpoint
from numbacnn.train.config import EVAL_BATCH_SIZE, TrainConfig, resolve_device_option
from numbacnn.train.loop import TrainingDiverged, evaluate, fit
from numbacnn.train.memory import check_training_memory
from numbacnn.train.outdir import check_output_names, open_output_folder

METRICS_NAME = "metrics.json"
CURVES_NAME = "curves.png"
BEST_NAME = "best.npz"  # --keep-best: the epoch with the highest validation accuracy


def make_optimizer(config: TrainConfig, model: Module) -> Optimizer:
    """The optimizer named by ``config.optimizer`` over the model's parameters."""
    if config.optimizer == "sgd":
        return SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                decoupled_weight_decay=config.optimizer == "adamw")


def make_scheduler(config: TrainConfig, optimizer: Optimizer) -> LRScheduler | None:
    """None, StepLR (x0.1 every third of the epochs) or cosine annealing over ``epochs``."""
    if config.schedule == "step":
        return StepLR(optimizer, step_size=max(1, config.epochs // 3), gamma=0.1)
    if config.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=config.epochs)
    return None


@dataclass
class PreparedData:
    """Loaders and facts about the data, built once per run."""

    train: BatchLoader
    val: BatchLoader | None
    test: BatchLoader
    normalizer: Normalizer
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    folder: Path | None = None  # where the files were read


def prepare_data(config: TrainConfig, normalizer: Normalizer | None = None) -> PreparedData:
    """Load ``config.dataset``, hold out the validation split (seeded, stratified),
    choose the normaliser (``config.normalize``; fitted on the training part) unless
    one is given, and build loaders."""
    splits = load_dataset(config.dataset, config.data_dir, image_size=config.image_size,
                          channels=config.channels, seed=config.seed)
    where = splits.folder if splits.folder is not None else config.dataset
    if not len(splits.test):
        raise DatasetError(f"{config.dataset}: the test split has no images", where, "the test files are empty")
    if not len(splits.train):
        raise DatasetError(f"{config.dataset}: the training split has no images", where, "the training files are empty")
    train_set, val_set = splits.train, None
    if config.val_fraction > 0:
        keep, held = stratified_split(splits.train.labels, config.val_fraction, config.seed)
        train_set, val_set = splits.train.subset(keep), splits.train.subset(held)
        before = np.bincount(splits.train.labels, minlength=len(splits.classes))
        after = np.bincount(train_set.labels, minlength=len(splits.classes))
        lost = np.flatnonzero((before > 0) & (after == 0))
        if lost.size:
            raise UsageError(
                f"val fraction {config.val_fraction:g} leaves {len(train_set)} of {len(splits.train)} images for "
                f"training and class {splits.classes[lost[0]]!r} none", "--val-fraction",
                "use a smaller --val-fraction; 0 keeps every image for training")
    if normalizer is None:
        normalizer = (Normalizer.fit(train_set.images) if config.normalize == "standardize"
                      else Normalizer.scale_only(train_set.images.shape[1]))
    dtype = np.dtype(config.dtype)
    train = BatchLoader(train_set, config.batch_size, normalizer, shuffle=True, seed=config.seed, dtype=dtype)
    val = BatchLoader(val_set, EVAL_BATCH_SIZE, normalizer, shuffle=False, dtype=dtype) if val_set else None
    test = BatchLoader(splits.test, EVAL_BATCH_SIZE, normalizer, shuffle=False, dtype=dtype)
    return PreparedData(train, val, test, normalizer, splits.classes, train_set.image_shape, splits.folder)


def _write_curves(path: Path, metrics: dict[str, Any]) -> bool:
    """Loss and accuracy per epoch as a PNG, when matplotlib (the viz extra) is
    installed; False (nothing written) without it: the final log line says so."""
    try:
        from numbacnn.viz import plot_training_curves

        plot_training_curves(metrics, path)
    except ImportError:
        return False  # curves are a bonus; metrics.json holds the same numbers
    return True


def _dropout_generator_states(model: Any) -> dict[str, Any]:
    """Each Dropout layer's mask generator state (JSON-ready), by layer name: saved with
    the checkpoint so that a resumed run draws the masks the uninterrupted run would."""
    from numbacnn.nn.dropout import Dropout

    return {name: layer._rng.bit_generator.state for name, layer in model.named_modules()
            if isinstance(layer, Dropout)}


def _restore_dropout_generators(model: Any, saved: dict[str, Any] | None, resume: Path) -> None:
    """Put the saved generator states back (a checkpoint without them, written before
    they were saved, resumes with fresh masks as it always did)."""
    if saved is None:
        return
    current = _dropout_generator_states(model)
    if not isinstance(saved, dict) or set(saved) != set(current):
        names = sorted(saved) if isinstance(saved, dict) else saved
        raise CheckpointError(f"the checkpoint's dropout generators {names!r} do not match the model's "
                              f"{sorted(current)}", f"{resume} [meta.dropout_generators]",
                              "the file was edited or written by another program")
    layers = dict(model.named_modules())
    for name, state in saved.items():
        try:
            layers[name]._rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"cannot restore the dropout generator of {name} ({exc})",
                                  f"{resume} [meta.dropout_generators]",
                                  "the file was edited or written by another program") from None


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(payload, indent=2) + "\n").encode()))


def _refuse_overwrite(out_dir: Path, resume: Path | None, overwrite: bool) -> None:
    """A new run never replaces another run's checkpoint silently."""
    existing = out_dir / CHECKPOINT_NAME
    if overwrite or not existing.exists():
        return
    if resume is not None and resume.resolve() == existing.resolve():
        return  # continuing the run that lives here
    try:
        described = f"a checkpoint of epoch {load_checkpoint(existing, check_finite=False).epoch}"
    except (ValueError, OSError):
        described = "a checkpoint"
    raise OutputError(f"the output folder already holds {described}", existing,
                      "continue it with --resume, replace it with --overwrite, or choose another --out")


def _save_failed(exc: OSError, path: Path, epoch: int) -> OutputError:
    """One line for a checkpoint or metrics file that could not be written mid-run."""
    reason = (exc.strerror or str(exc)).lower()
    if path.name != CHECKPOINT_NAME:  # the checkpoint of this epoch was written before metrics.json failed
        kept = f"the checkpoint of epoch {epoch} was written; free space and continue with --resume"
    elif epoch > 1:
        kept = f"the checkpoint of epoch {epoch - 1} is kept; free space and continue with --resume"
    else:
        kept = "no earlier checkpoint exists; free space and train again"
    error = OutputError(f"could not save epoch {epoch} ({reason})", path, kept)
    error.exit_code = 1  # failed while working, not refused up front
    return error


def train(config: TrainConfig, out: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
          progress: bool | None = None, log: Callable[[str], None] | None = print,
          overwrite: bool = False, keep_best: bool = False) -> dict[str, Any]:
    """Run a whole training job: data, Tiny VGG, optimizer, fit, test accuracy.

    Before any data is read or any kernel compiled, everything that can be checked
    is: the settings (:meth:`TrainConfig.validate`), the memory the model and its
    activations need (:func:`numbacnn.train.memory.check_training_memory`), the
    output folder (writable, free space, not locked by another run, no other run's
    checkpoint in it) and the checkpoint to resume from.

    Parameters
    ----------
    config : TrainConfig
        When resuming, pass the checkpoint's config (``load_checkpoint(p).config``),
        changing at most ``epochs`` and ``device``.
    out : folder or None
        Gets ``checkpoint.npz`` after every epoch and ``metrics.json``; locked for
        the run (``OUT/.numbacnn.lock``).
    resume : checkpoint path (or its folder) or None
        Continue from that checkpoint's epoch.
    progress : bool or None
        Show the tqdm bar; None: only when stderr is a terminal.
    log : callable or None
        Receives the progress lines.
    overwrite : bool
        Allow replacing a checkpoint already in ``out`` that this run does not
        resume from.
    keep_best : bool
        Also keep ``out/best.npz``, the checkpoint of the epoch with the highest
        validation accuracy so far (the first such epoch on a tie); needs a
        validation split (``val_fraction > 0``) and ``out``.

    Returns
    -------
    dict
        The metrics (also written to ``out/metrics.json``): config, per-epoch
        history, test_loss, test_accuracy, device.

    Raises
    ------
    numbacnn.errors.UsageError, ResourceError, OutputError, FolderInUseError,
    DatasetError, DatasetNotFoundError, CheckpointError
        Refused before any training, with a one-line message.
    TrainingDiverged
        NaN/Inf loss; ``out/checkpoint.npz`` still holds the last good epoch.
    """
    config.validate()
    if keep_best and (config.val_fraction <= 0 or out is None):
        raise UsageError("keeping the best checkpoint needs a validation split and an output folder",
                         "--keep-best", "leave out --val-fraction 0, or leave out --keep-best")
    estimate = check_training_memory(config)
    device = resolve_device_option(config.device)
    resume_path = Path(resume).absolute() if resume is not None else None
    if resume_path is not None and resume_path.is_dir():
        resume_path = resume_path / CHECKPOINT_NAME
    if out is None:
        return _train(config, None, resume_path, device, progress, log)
    out_dir = Path(out).absolute()
    # a checkpoint beside its temporary copy, plus metrics: twice the weights and buffers
    lock = open_output_folder(out_dir, needed_bytes=(3 if keep_best else 2) * estimate.checkpoint_bytes + 2**20,
                              log=log)
    try:
        check_output_names(out_dir, (CHECKPOINT_NAME, METRICS_NAME, CURVES_NAME))
        _refuse_overwrite(out_dir, resume_path, overwrite)
        return _train(config, out_dir, resume_path, device, progress, log, keep_best)
    finally:
        lock.release()


def _train(config: TrainConfig, out_dir: Path | None, resume: Path | None, device: str,
           progress: bool | None, log: Callable[[str], None] | None,
           keep_best: bool = False) -> dict[str, Any]:
    """:func:`train` once the output folder is checked and locked."""
    checkpoint = load_checkpoint(resume) if resume is not None else None
    if checkpoint is not None and config.epochs < checkpoint.epoch:
        raise UsageError(f"epochs {config.epochs} is less than the {checkpoint.epoch} epochs the checkpoint has done",
                         f"--epochs {config.epochs}", f"use --epochs {checkpoint.epoch + 1} or more to continue")
    if config.data_dir is not None:
        # absolute, so a resume started from another folder reads the same files
        config = dataclasses.replace(config, data_dir=str(Path(config.data_dir).absolute()))
    data = prepare_data(config, checkpoint.normalizer if checkpoint else None)
    if config.data_dir is None and data.folder is not None:
        config = dataclasses.replace(config, data_dir=str(Path(data.folder).absolute()))
    channels, height, width = data.image_shape
    if height != width:
        raise DatasetError(f"tiny_vgg needs square images, the dataset's are {height}x{width}",
                           data.folder or config.dataset, "resize the images")
    model_kwargs = dict(in_channels=channels, num_classes=len(data.classes), image_size=height,
                        filters=config.filters, kernel_size=config.kernel_size, padding=config.padding,
                        dtype=config.dtype, seed=config.seed)
    if config.stride != 1:  # only when set, so checkpoints written before stride existed still resume
        model_kwargs["stride"] = config.stride
    if config.batch_norm:  # likewise only when set (issue 11)
        model_kwargs["batch_norm"] = True
    if config.dropout:
        model_kwargs["dropout"] = float(config.dropout)
    try:
        model = tiny_vgg(**model_kwargs, device=device)
    except ValueError as exc:  # an asymmetric slide (strict): the sizes were checked to fit
        stride = f" --stride {config.stride}" if config.stride != 1 else ""
        raise UsageError(str(exc), f"--kernel-size {config.kernel_size} --padding {config.padding}{stride}",
                         "choose a kernel size and padding that slide evenly (numbacnn explain conv helps)") from None
    optimizer = make_optimizer(config, model)
    scheduler = make_scheduler(config, optimizer)
    start_epoch, history = 0, []
    if checkpoint is not None:
        saved_kwargs = checkpoint.meta["model"]["kwargs"]
        if saved_kwargs != json.loads(json.dumps(model_kwargs)):
            raise CheckpointError(f"the checkpoint's model {saved_kwargs} differs from this run's {model_kwargs}",
                                  resume, "resume with the checkpoint's own settings (numbacnn train --resume)")
        if checkpoint.optimizer_state is None:
            raise CheckpointError("the checkpoint has no optimizer state", f"{resume} [meta.optimizer]",
                                  "it cannot be resumed; train again")
        try:
            model.load_state_dict(checkpoint.model_state)
            optimizer.load_state_dict(checkpoint.optimizer_state)
            if scheduler is not None and checkpoint.meta.get("scheduler"):
                scheduler.load_state_dict(checkpoint.meta["scheduler"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"cannot restore the training state ({exc})", f"{resume} [meta.optimizer]",
                                  "the file was edited or written by another program") from None
        _restore_dropout_generators(model, checkpoint.meta.get("dropout_generators"), resume)
        start_epoch, history = checkpoint.epoch, list(checkpoint.meta.get("history", []))
        if log:
            log(f"resuming from {resume} at epoch {start_epoch}/{config.epochs}")
    model_spec: dict[str, Any] = {"name": "tiny_vgg", "kwargs": model_kwargs}
    if config.stride != 1:  # what the stride means (load_checkpoint refuses a stride saved without it)
        model_spec["stride_rule"] = STRIDE_RULE
    base_meta = {"config": dataclasses.asdict(config), "model": model_spec,
                 "normalizer": {"mean": list(data.normalizer.mean), "std": list(data.normalizer.std)},
                 "classes": list(data.classes)}
    metrics: dict[str, Any] = {"config": dataclasses.asdict(config), "device": device,
                               "parameters": model.num_parameters(), "history": history}

    def on_epoch_end(epoch_done: int, hist: list[dict[str, Any]]) -> None:
        metrics["history"] = hist
        if out_dir is None:
            return
        path = out_dir / CHECKPOINT_NAME
        try:
            save_checkpoint(path, model, optimizer,
                            dict(base_meta, epoch=epoch_done, history=hist,
                                 scheduler=scheduler.state_dict() if scheduler else None,
                                 dropout_generators=_dropout_generator_states(model)))
            previous = [h["val_accuracy"] for h in hist[:-1] if h.get("val_accuracy") is not None]
            latest = hist[-1].get("val_accuracy")
            if keep_best and latest is not None and (not previous or latest > max(previous)):
                path = out_dir / BEST_NAME  # the same checkpoint, under a second name
                save_checkpoint(path, model, optimizer,
                                dict(base_meta, epoch=epoch_done, history=hist,
                                     scheduler=scheduler.state_dict() if scheduler else None,
                                     dropout_generators=_dropout_generator_states(model)))
                if log:
                    log(f"best validation accuracy so far ({latest:.2%}): saved {path}")
            path = out_dir / METRICS_NAME
            _write_json(path, metrics)
        except OSError as exc:
            raise _save_failed(exc, path, epoch_done) from exc

    if log:
        log(f"training tiny_vgg ({model.num_parameters():,} parameters, padding {config.padding}) on "
            f"{config.dataset}: {len(data.train.dataset):,} train / "
            f"{len(data.val.dataset) if data.val else 0:,} val / {len(data.test.dataset):,} test images, "
            f"{channels}x{height}x{width}, device {device}")
    try:
        history = fit(model, optimizer, data.train, data.val, config.epochs, device, scheduler, start_epoch,
                      history, on_epoch_end, progress, log)
    except TrainingDiverged as exc:
        metrics["stopped"] = str(exc)
        if out_dir is not None:
            _write_json(out_dir / METRICS_NAME, metrics)
            kept = out_dir / CHECKPOINT_NAME
            what = str(exc).split("; training stopped")[0]  # "the training loss became nan at epoch 2, ..."
            raise TrainingDiverged(
                what, kept if kept.exists() else out_dir,
                "training stopped; try a smaller --lr; " + (
                    f"the last good checkpoint (epoch {len(metrics['history'])}) is kept" if kept.exists()
                    else "no epoch finished, so there is no checkpoint")) from None
        raise
    test = evaluate(model, data.test, device)
    metrics.update(history=history, test_loss=test["loss"], test_accuracy=test["accuracy"],
                   test_images=test["images"])
    if history:
        epoch_seconds = [h["seconds"] for h in history]
        metrics["mean_epoch_seconds"] = float(np.mean(epoch_seconds))
        metrics["mean_images_per_second"] = float(np.mean([h["images_per_second"] for h in history]))
    if out_dir is not None:
        try:
            # the picture first: metrics.json with its test accuracy marks the run complete,
            # so a run killed while drawing is finished by --resume, which also removes the
            # picture's temporary file
            curves = _write_curves(out_dir / CURVES_NAME, metrics)
            _write_json(out_dir / METRICS_NAME, metrics)
        except OSError as exc:
            error = OutputError(f"could not write the final metrics ({(exc.strerror or str(exc)).lower()})",
                                out_dir / METRICS_NAME,
                                f"the checkpoint of epoch {len(history)} is complete; free space and run the "
                                f"same command with --resume, which finishes the run (test accuracy, "
                                f"curves.png, metrics.json) without training again")
            error.exit_code = 1
            raise error from exc
    if log:
        log(f"test accuracy {test['accuracy']:.2%} (loss {test['loss']:.4f}, {test['images']:,} images)")
        if out_dir is not None:  # issue 21: say where everything went, and what was not drawn
            best = [h.get("val_accuracy", -1.0) for h in history]
            best_text = f", {BEST_NAME} (epoch {best.index(max(best)) + 1})" if keep_best and best else ""
            log(f"saved {CHECKPOINT_NAME}{best_text}, {METRICS_NAME}" + (f" and {CURVES_NAME}" if curves else "")
                + f" in {out_dir}" + ("" if curves else
                                      f"; {CURVES_NAME} needs matplotlib: pip install \"numbacnn[viz]\""))
    return metrics
