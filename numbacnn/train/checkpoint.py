"""Checkpoints: one ``.npz`` with the weights, the optimizer and schedule state, the
epoch, the config and the history, written atomically (:func:`atomic_write`)."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from numbacnn.data import Normalizer
from numbacnn.device import resolve_device
from numbacnn.models import tiny_vgg
from numbacnn.nn import Module
from numbacnn.optim import Optimizer
from numbacnn.train.config import TrainConfig

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
            raise ValueError(f"checkpoint: unknown model {spec['name']!r}")
        model = tiny_vgg(**spec["kwargs"], device=resolve_device(device))
        model.load_state_dict(self.model_state)
        return model


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync it, then
    rename it over ``path``: readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (no pickles are loaded).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a numbacnn checkpoint, or an unknown format version.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):  # a bare .npy array, not an .npz archive
                raise ValueError("not an .npz archive")
            files = list(data.files)
            meta_text = str(data["meta"]) if "meta" in files else None
            model_state = {k[len("model/"):]: data[k] for k in files if k.startswith("model/")}
            buffers = {k[len("optim/"):]: data[k] for k in files if k.startswith("optim/")}
    except Exception as exc:  # truncated or foreign file: BadZipFile, OSError, pickled data refused...
        raise ValueError(f"checkpoint: {path} cannot be read as a numbacnn .npz ({type(exc).__name__}: {exc})") from exc
    if meta_text is None:
        raise ValueError(f"checkpoint: {path} has no 'meta' entry; not a numbacnn checkpoint")
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"checkpoint: {path} has an unreadable 'meta' entry ({exc})") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint: {path} has format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    optimizer_state = None
    if "optimizer" in meta:
        optimizer_state = dict(meta["optimizer"], buffers=buffers)
    return Checkpoint(model_state, optimizer_state, meta)
