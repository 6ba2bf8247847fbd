"""Training and evaluation loops, checkpoints and metrics: what ``numbacnn train`` runs.

A package along the job's seams: ``config`` (:class:`TrainConfig`), ``checkpoint``
(save/load, :func:`atomic_write`), ``loop`` (fit/evaluate), ``outdir`` (the output
folder's checks and lock), ``job`` (:func:`train`). Every name is importable from
``numbacnn.train`` itself.

- :func:`fit` trains a model for some epochs (tqdm bar with loss, accuracy and
  images/s on a terminal, one summary line per epoch), validating after each.
- :func:`evaluate` reports loss and accuracy on a loader.
- :func:`save_checkpoint` / :func:`load_checkpoint`: one ``.npz`` with the weights,
  the optimizer and schedule state, the epoch, the config and the history. It is
  written to a temporary file in the same folder and renamed over the old one
  (``os.replace`` is atomic), so a crash never leaves a half-written checkpoint.
- :func:`train` is the whole job from a :class:`TrainConfig`: data, model,
  optimizer, fit, test accuracy, ``checkpoint.npz`` and ``metrics.json`` in ``out``.

Reproducibility: the weights come from ``seed``, the validation split from
``seed``, and epoch k's batch order from ``(seed, k)``; so the same seed on the
same device gives identical metrics, and ``resume`` continues to exactly the
result of an uninterrupted run.
"""

from __future__ import annotations

import numbacnn.functional as _functional
from numbacnn.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    Checkpoint,
    atomic_write,
    load_checkpoint,
    save_checkpoint,
)
from numbacnn.train.config import DTYPES, EVAL_BATCH_SIZE, NORMALIZATIONS, OPTIMIZERS, SCHEDULES, TrainConfig
from numbacnn.train.job import (
    CURVES_NAME,
    METRICS_NAME,
    PreparedData,
    _write_curves,
    _write_json,
    make_optimizer,
    make_scheduler,
    prepare_data,
    train,
)
from numbacnn.train.loop import TrainingDiverged, _progress_bar, evaluate, fit, train_one_epoch

# numbacnn.train.F was the functional module before the split; code (and tests) that
# patch numbacnn.train.F.softmax_cross_entropy still reach the function the loop calls.
F = _functional

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "CURVES_NAME", "DTYPES", "EVAL_BATCH_SIZE", "METRICS_NAME",
    "NORMALIZATIONS", "OPTIMIZERS", "SCHEDULES",
    "Checkpoint", "PreparedData", "TrainConfig", "TrainingDiverged", "atomic_write", "evaluate", "fit",
    "load_checkpoint", "make_optimizer", "make_scheduler", "prepare_data", "save_checkpoint", "train",
    "train_one_epoch", "_progress_bar", "_write_curves", "_write_json",
]
