"""What runs on a worker: one training, always returning a record (never raising).

:func:`run_trial` sets Numba's thread count first (Numba ignores
``OMP_NUM_THREADS``; two single-threaded Dask workers whose tasks each start a
thread per core oversubscribe the cores: a sweep here took 187-261 s instead of
14-17 s), then classifies the trial before training it:

- ``failed``: the dataset cannot be loaded on this worker (the loader's message),
  or anything else went wrong (exception type and message);
- ``impossible``: some layer's output would be below 1x1 (tiny_vgg's message,
  naming the layer);
- ``asymmetric``: a kernel leaves input pixels uncovered, which ``train`` refuses
  (the slide explanation); a strided conv that skips only its last padding
  row/column (28x28, 3x3, padding 1, stride 2) is trained, its verdict recorded
  as ``padding skipped``;
- ``diverged``: the loss became NaN/Inf (TrainingDiverged's message);
- ``done``: trained; test/val accuracy and loss, seconds per epoch.

Every record also has the model's parameters and forward FLOPs per image (when it
can be built), the slide verdict, the thread count and the versions.
"""

from __future__ import annotations

import functools
import os
import platform
import time
import traceback
from typing import Any

STATUSES = ("done", "diverged", "impossible", "asymmetric", "failed")
FINAL_STATUSES = ("done", "diverged", "impossible", "asymmetric")  # a re-run retries only "failed"


def versions() -> dict[str, str]:
    """numbacnn, numba, numpy and Python versions of this process."""
    import numba
    import numpy

    import numbacnn

    return {"numbacnn": numbacnn.__version__, "numba": numba.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def _cores() -> int:
    """Cores Numba may use in this process (NUMBA_NUM_THREADS caps it)."""
    import numba

    return max(1, min(numba.config.NUMBA_NUM_THREADS, os.cpu_count() or 1))


def trial_threads(threads_on_host: dict[str, int] | None = None) -> int:
    """Numba threads for one trial: this host's cores shared among the Dask threads
    running on it (so N single-threaded workers on N cores each get 1).

    Outside a Dask worker (the sequential run) the trial gets every core.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return _cores()
    host = worker.address.rsplit(":", 1)[0]
    sharing = (threads_on_host or {}).get(host) or worker.state.nthreads
    return max(1, _cores() // max(1, sharing))


@functools.lru_cache(maxsize=8)
def _image_shape(dataset: str, data_dir: str | None, image_size: int, channels: int
                 ) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), number of classes) of a dataset, loaded once per worker process."""
    from numbacnn.data import load_dataset

    splits = load_dataset(dataset, data_dir, image_size=image_size, channels=channels)
    return tuple(int(s) for s in splits.train.image_shape), len(splits.classes)  # type: ignore[return-value]


def _describe(config: Any, image_shape: tuple[int, int, int], classes: int) -> dict[str, Any]:
    """Parameters, forward FLOPs per image, feature sizes and slide verdict of the
    trial's Tiny VGG (built with strict=False so an asymmetric slide is described,
    not refused). Raises ValueError when a layer's output would be below 1x1."""
    import numpy as np

    from numbacnn.models import drops_input_pixels, tiny_vgg, tiny_vgg_sizes
    from numbacnn.report import describe_layers

    channels, height, _ = image_shape
    sizes = tiny_vgg_sizes(height, config.kernel_size, config.padding, strict=False, stride=config.stride)
    model = tiny_vgg(in_channels=channels, num_classes=classes, image_size=height, filters=config.filters,
                     kernel_size=config.kernel_size, padding=config.padding, stride=config.stride,
                     dtype=np.dtype(config.dtype), strict=False, seed=0)
    layers = describe_layers(model, (1, channels, height, height))
    uneven = [layer for layer in layers if not layer.symmetric]
    asymmetric = [f"{layer.explainer_name}: {layer.slide.message}" for layer in uneven
                  if drops_input_pixels(layer.slide)]
    padding_skipped = [f"{layer.explainer_name}: skips only its last padding row/column (every input pixel "
                       f"is covered)" for layer in uneven if not drops_input_pixels(layer.slide)]
    verdict = "asymmetric" if asymmetric else "padding skipped" if padding_skipped else "symmetric"
    return {"parameters": int(model.num_parameters()), "flops": int(sum(layer.flops for layer in layers)),
            "feature_sizes": [size for _, size in sizes], "slides": verdict,
            "slide_messages": asymmetric + padding_skipped}


def _warm_up(config: Any, image_shape: tuple[int, int, int], classes: int) -> None:
    """One forward, backward and optimizer step of a throw-away copy of the trial's
    model on two blank images, so JIT compilation (tens of seconds for a new
    kernel specialisation, seconds to load one from Numba's disk cache) happens
    here and not inside the first timed epoch: seconds per epoch then compare
    trials, whichever worker compiled first. The trial's own model, data order
    and random numbers are untouched."""
    import numpy as np

    import numbacnn.functional as F
    from numbacnn.device import resolve_device, to_device
    from numbacnn.models import tiny_vgg
    from numbacnn.train import make_optimizer

    device = resolve_device(config.device)
    channels, height, width = image_shape
    model = tiny_vgg(in_channels=channels, num_classes=classes, image_size=height, filters=config.filters,
                     kernel_size=config.kernel_size, padding=config.padding, stride=config.stride,
                     dtype=np.dtype(config.dtype), device=device, seed=0)
    x = to_device(np.zeros((2, channels, height, width), np.dtype(config.dtype)), device)
    labels = to_device(np.zeros(2, np.int64), device)
    _, grad = F.softmax_cross_entropy(model(x), labels)
    model.backward(grad, input_grad=False)
    make_optimizer(config, model).step()


def run_trial(config: dict[str, Any], threads_on_host: dict[str, int] | None = None) -> dict[str, Any]:
    """Train one configuration and return its record; exceptions become records.

    Parameters
    ----------
    config : dict
        A whole TrainConfig as a dict (``Trial.config``); ``data_dir`` absolute.
    threads_on_host : dict host -> Dask threads, or None
        How many trials may run at once on each host (see :func:`trial_threads`).

    Returns
    -------
    dict
        ``status`` (one of STATUSES), ``message``, and when trained
        ``test_accuracy``, ``test_loss``, ``val_accuracy``, ``val_loss``,
        ``train_accuracy``, ``train_loss`` (last epoch), ``seconds_per_epoch``;
        ``parameters``, ``flops`` (forward, per image), ``feature_sizes``,
        ``slides`` / ``slide_messages`` when the model can be built;
        ``compile_seconds`` (JIT warm-up before training) when trained; always
        ``seconds``, ``numba_threads``, ``worker``, ``versions``.
    """
    import numba

    start = time.perf_counter()
    threads = trial_threads(threads_on_host)
    numba.set_num_threads(threads)
    record: dict[str, Any] = {"status": "failed", "message": ""}
    try:
        from numbacnn.data import DatasetNotFoundError
        from numbacnn.train import TrainConfig, TrainingDiverged, train

        cfg = TrainConfig(**config)
        cfg.validate()
        try:
            image_shape, classes = _image_shape(cfg.dataset, cfg.data_dir, cfg.image_size, cfg.channels)
        except (DatasetNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
            record["message"] = str(exc)  # the loader's own message, e.g. where it looked
            return record
        try:
            record.update(_describe(cfg, image_shape, classes))
        except ValueError as exc:
            record.update(status="impossible", slides="impossible", message=str(exc))
            return record
        if record["slides"] == "asymmetric":
            record.update(status="asymmetric", message="; ".join(record["slide_messages"]))
            return record
        warm = time.perf_counter()
        _warm_up(cfg, image_shape, classes)
        record["compile_seconds"] = time.perf_counter() - warm
        try:
            metrics = train(cfg, out=None, progress=False, log=None)
        except TrainingDiverged as exc:
            record.update(status="diverged", message=str(exc))
            return record
        last = metrics["history"][-1] if metrics["history"] else {}
        record.update(
            status="done", test_accuracy=metrics["test_accuracy"], test_loss=metrics["test_loss"],
            val_accuracy=last.get("val_accuracy"), val_loss=last.get("val_loss"),
            train_accuracy=last.get("train_accuracy"), train_loss=last.get("train_loss"),
            seconds_per_epoch=metrics.get("mean_epoch_seconds"),
        )
    except Exception as exc:  # a record, never an exception: the sweep goes on
        record.update(status="failed", message=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=8))
    finally:
        record.update(seconds=time.perf_counter() - start, numba_threads=numba.get_num_threads(),
                      worker=_worker_name(), versions=versions())
    return record


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"in-process (pid {os.getpid()})"


__all__ = ["FINAL_STATUSES", "STATUSES", "run_trial", "trial_threads", "versions"]
