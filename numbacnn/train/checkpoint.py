"""Checkpoints: one ``.npz`` with the weights, the optimizer and schedule state, the
epoch, the config and the history, written atomically (:func:`atomic_write`)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from numbacnn.data import Normalizer
from numbacnn.device import resolve_device
from numbacnn.errors import CheckpointError, format_message
from numbacnn.models import STRIDE_RULE, tiny_vgg, tiny_vgg_parameter_count
from numbacnn.nn import Module
from numbacnn.optim import Optimizer
from numbacnn.train.config import DTYPES, TrainConfig
from numbacnn.files import atomic_write

CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_FORMAT = 1


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    Attributes
    ----------
    model_state : dict name -> array
    optimizer_state : dict or None
        As :meth:`numbacnn.optim.Optimizer.state_dict`.
    meta : dict
        ``epoch``, ``config``, ``history``, ``normalizer``, ``classes``, ``model``
        (builder name and keyword arguments), ``scheduler``.
    """

    model_state: dict[str, np.ndarray]
    optimizer_state: dict[str, Any] | None
    meta: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])

    @property
    def config(self) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in self.meta["config"].items() if k in known})

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer(tuple(self.meta["normalizer"]["mean"]), tuple(self.meta["normalizer"]["std"]))

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])

    def build_model(self, device: str = "cpu") -> Module:
        """The model described by ``meta["model"]`` with these weights (checked by
        name, shape and dtype), on ``device``."""
        spec = self.meta["model"]
        if spec["name"] != "tiny_vgg":
            raise CheckpointError(f"unknown model {spec['name']!r}", "meta.model.name", "expected 'tiny_vgg'")
        model = tiny_vgg(**spec["kwargs"], device=resolve_device(device))
        model.load_state_dict(self.model_state)
        return model


def save_checkpoint(path: str | os.PathLike, model: Module, optimizer: Optimizer | None,
                    meta: dict[str, Any]) -> None:
    """Write weights (``model/<name>``), optimizer buffers (``optim/<i>.<buffer>``)
    and ``meta`` (JSON: epoch, config, history, ...) to one ``.npz``, atomically."""
    arrays: dict[str, np.ndarray] = {f"model/{k}": v for k, v in model.state_dict().items()}
    meta = dict(meta, format=CHECKPOINT_FORMAT)
    if optimizer is not None:
        opt_state = optimizer.state_dict()
        arrays.update({f"optim/{k}": v for k, v in opt_state.pop("buffers").items()})
        meta["optimizer"] = opt_state
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda f: np.savez(f, **arrays))


FOREIGN = "the file was edited or written by another program; use a checkpoint written by numbacnn train"
HISTORY_NUMBERS = ("train_loss", "train_accuracy", "lr", "seconds", "images_per_second")
NORMALIZER_LIMIT = 1e3
MIN_STD = 1e-6  # Normalizer.fit's floor
MODEL_INTS = ("in_channels", "num_classes", "image_size", "filters", "kernel_size", "padding")


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _finite_numbers(value: Any, length: int) -> bool:
    return (isinstance(value, list) and len(value) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def _check_meta(path: Path, meta: Any, model_state: dict[str, np.ndarray]) -> None:
    """Every metadata entry a command reads, checked once at load (see load_checkpoint)."""

    def fail(what: str, key: str, todo: str = FOREIGN) -> None:
        raise CheckpointError(what, f"{path} [{key}]", todo)

    if not isinstance(meta, dict):
        fail(f"the metadata is a {type(meta).__name__}, not a JSON object", "meta")
    if meta.get("format") != CHECKPOINT_FORMAT:
        fail(f"format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT}", "meta.format",
             "written by another numbacnn version or program" if "format" in meta else FOREIGN)
    for key in ("epoch", "model", "config", "classes", "normalizer"):
        if key not in meta:
            fail(f"the metadata has no {key!r} entry", f"meta.{key}")
    if not _is_int(meta["epoch"], 0):
        fail(f"epoch must be an int >= 0, got {meta['epoch']!r}", "meta.epoch")
    spec = meta["model"]
    if not isinstance(spec, dict) or spec.get("name") != "tiny_vgg" or not isinstance(spec.get("kwargs"), dict):
        fail(f"model must be {{'name': 'tiny_vgg', 'kwargs': {{...}}}}, got {spec!r:.120}", "meta.model")
    kwargs = spec["kwargs"]
    allowed = set(inspect.signature(tiny_vgg).parameters) - {"device"}
    for name in sorted(set(kwargs) - allowed):
        fail(f"unknown model setting {name!r}", f"meta.model.kwargs.{name}")
    for name in MODEL_INTS:
        if not _is_int(kwargs.get(name), 0 if name == "padding" else 1):
            fail(f"{name} must be an int >= {0 if name == 'padding' else 1}, got {kwargs.get(name)!r}",
                 f"meta.model.kwargs.{name}")
    if "stride" in kwargs and not _is_int(kwargs["stride"], 1):
        fail(f"stride must be an int >= 1, got {kwargs['stride']!r}", "meta.model.kwargs.stride")
    if kwargs.get("stride", 1) != 1 and spec.get("stride_rule") != STRIDE_RULE:
        fail(f"stride {kwargs['stride']} was saved when tiny_vgg's stride applied to every convolution; it now "
             f"applies to the {STRIDE_RULE}, so these weights describe another model", "meta.model.kwargs.stride",
             "train it again (checkpoints with stride 1 are unaffected)")
    if kwargs.get("dtype") not in DTYPES:
        fail(f"dtype must be one of {DTYPES}, got {kwargs.get('dtype')!r}", "meta.model.kwargs.dtype")
    classes = meta["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        fail("classes must be a list of names", "meta.classes")
    if len(classes) != kwargs["num_classes"]:
        fail(f"{len(classes)} class names for a model with {kwargs['num_classes']} outputs", "meta.classes")
    normalizer, channels = meta["normalizer"], kwargs["in_channels"]
    if (not isinstance(normalizer, dict) or not _finite_numbers(normalizer.get("mean"), channels)
            or not _finite_numbers(normalizer.get("std"), channels) or min(normalizer["std"]) <= 0):
        fail(f"normalizer must hold {channels} finite means and {channels} stds > 0", "meta.normalizer")
    # means and stds of [0, 1]-scaled pixels: Normalizer.fit gives |mean| <= 1 and std >= 1e-6;
    # far outside, the float32 scale 1/(255 std) or shift mean/std overflows or vanishes and
    # every prediction is NaN
    for name, low, high in (("mean", -NORMALIZER_LIMIT, NORMALIZER_LIMIT), ("std", MIN_STD, NORMALIZER_LIMIT)):
        for channel, value in enumerate(normalizer[name]):
            if not low <= value <= high:
                fail(f"normalizer {name} {value!r} of channel {channel} is outside [{low:g}, {high:g}] (pixels are "
                     f"scaled to [0, 1])", f"meta.normalizer.{name}")
    if not isinstance(meta["config"], dict):
        fail("config must be a JSON object", "meta.config")
    try:
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        TrainConfig(**{k: v for k, v in meta["config"].items() if k in known}).validate()
    except (TypeError, ValueError) as exc:
        fail(f"invalid training settings ({exc})", "meta.config")
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        fail("history must be a list of per-epoch records", "meta.history")
    if len(history) > meta["epoch"]:  # fewer is allowed: a hand-shortened history breaks nothing
        fail(f"history holds {len(history)} epochs, the checkpoint says {meta['epoch']} were done", "meta.history")
    for index, entry in enumerate(history):
        # every field fit() writes and a resumed run reads back (metrics, the epoch line, curves.png)
        if entry.get("epoch") != index + 1 or isinstance(entry.get("epoch"), bool):
            fail(f"entry {index} is for epoch {entry.get('epoch')!r:.40}, expected {index + 1}",
                 f"meta.history[{index}].epoch")
        for name in HISTORY_NUMBERS:
            if not _finite_numbers([entry.get(name)], 1) or entry[name] < 0:
                fail(f"{name} must be a finite number >= 0, got {entry.get(name)!r:.40}",
                     f"meta.history[{index}].{name}")
        for name in ("val_loss", "val_accuracy"):
            if name in entry and (not _finite_numbers([entry[name]], 1) or entry[name] < 0):
                fail(f"{name} must be a finite number >= 0, got {entry[name]!r:.40}", f"meta.history[{index}].{name}")
    if "optimizer" in meta and not isinstance(meta["optimizer"], dict):
        fail("optimizer must be a JSON object", "meta.optimizer")
    # the weights: a model built from the settings says which names, shapes and dtypes
    # to expect; the count from the shapes alone comes first, so a hand-edited
    # "filters": 1000000000 is refused without allocating it
    stored = sum(int(v.size) for v in model_state.values())
    try:
        counted = tiny_vgg_parameter_count(**{k: kwargs[k] for k in MODEL_INTS if k != "in_channels"},
                                           in_channels=kwargs["in_channels"], stride=kwargs.get("stride", 1))
    except ValueError as exc:
        fail(f"the model settings are impossible ({exc})", "meta.model.kwargs")
    if counted > max(2 * stored, 10**7):  # far more than the file holds: do not build it to find out
        fail(f"the settings describe {counted:,} weights, the file holds {stored:,}", "meta.model.kwargs")
    try:
        expected = tiny_vgg(**kwargs, device="cpu").state_dict()
    except (TypeError, ValueError) as exc:
        fail(f"the model settings cannot build tiny_vgg ({exc})", "meta.model.kwargs")
    for name, reference in expected.items():
        if name not in model_state:
            fail(f"weight {name} is missing", f"model/{name}")
        value = model_state[name]
        if value.shape != reference.shape:
            fail(f"weight {name} has shape {value.shape}, expected {reference.shape}", f"model/{name}")
        if value.dtype != reference.dtype:
            fail(f"weight {name} has dtype {value.dtype}, expected {reference.dtype}", f"model/{name}")
    for name in model_state:
        if name not in expected:
            fail(f"unexpected weight {name} (not in tiny_vgg with these settings)", f"model/{name}")


def load_checkpoint(path: str | os.PathLike, check_finite: bool = True) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (no pickles are loaded)
    and check all of it: every metadata entry a command reads (format, epoch, model
    settings, class names against the model's outputs, normaliser, config), and every
    weight against the model those settings build (name, shape, dtype).

    Parameters
    ----------
    path : checkpoint file, or a folder holding ``checkpoint.npz``
    check_finite : bool
        Refuse NaN or infinite weights and optimizer buffers (a model that cannot
        predict anything); False loads them, e.g. to inspect a broken run.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    numbacnn.errors.CheckpointError
        (a ``ValueError``) anything above is wrong; the message names the file
        and the entry (``[meta.model]``, ``[model/features.0.weight]``).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(format_message("checkpoint: the file does not exist", path, "check the path"))
    # Say what the file is before NumPy does: its error for a text file is advice to
    # load pickles (allow_pickle), which numbacnn never does with untrusted input.
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot be read ({exc.strerror or exc})", path, "check the file") from exc
    if head != b"PK\x03\x04":
        raise CheckpointError("cannot be read as a checkpoint: the file is not an .npz (zip) archive", path,
                              "give the checkpoint.npz that numbacnn train wrote, or its folder")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):  # a bare .npy array, not an .npz archive
                raise ValueError("not an .npz archive")
            files = list(data.files)
            meta_text = str(data["meta"]) if "meta" in files else None
            model_state = {k[len("model/"):]: data[k] for k in files if k.startswith("model/")}
            buffers = {k[len("optim/"):]: data[k] for k in files if k.startswith("optim/")}
    except Exception as exc:  # truncated or foreign file: BadZipFile, OSError, pickled data refused...
        raise CheckpointError(f"cannot be read as a numbacnn .npz ({type(exc).__name__}: {exc})", path,
                              "the file is damaged or not a checkpoint; use another one or train again") from exc
    if meta_text is None:
        raise CheckpointError("no 'meta' entry; not a numbacnn checkpoint", path, FOREIGN)
    try:
        meta = json.loads(meta_text)
    except RecursionError:  # a deeply nested hand-made value
        raise CheckpointError("an unreadable 'meta' entry (JSON nested too deeply)", f"{path} [meta]",
                              FOREIGN) from None
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        raise CheckpointError(f"an unreadable 'meta' entry ({exc})", f"{path} [meta]", FOREIGN) from None
    _check_meta(path, meta, model_state)
    if check_finite:
        for prefix, arrays in (("model/", model_state), ("optim/", buffers)):
            for name, value in arrays.items():
                if value.dtype.kind == "f" and not np.isfinite(value).all():
                    bad = int(np.size(value) - np.isfinite(value).sum())
                    raise CheckpointError(
                        f"{prefix}{name} holds {bad} NaN or infinite values", f"{path} [{prefix}{name}]",
                        "the run diverged or the file was changed; use an earlier checkpoint or train again")
    optimizer_state = None
    if "optimizer" in meta:
        optimizer_state = dict(meta["optimizer"], buffers=buffers)
    return Checkpoint(model_state, optimizer_state, meta)
