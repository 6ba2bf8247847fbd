"""The Dask driver: submit trials, write each result as it arrives, resume.

The client process owns ``OUT/results.jsonl``: workers return records, the
client appends one JSON line per finished trial (flushed and fsynced) and then
releases that trial's future. Releasing matters: a future the client still holds
keeps its result on a worker, and when that worker dies the scheduler recomputes
the lost result, i.e. trains the finished trial again.

Trials are submitted all at once and Dask hands them to workers as threads free
up (``as_completed`` order, not submission batches): their durations differ by
5-10x across a grid, so fixed batches would leave workers idle.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from numbacnn.sweep.grid import Trial, expand, field_name
from numbacnn.sweep.records import (RESULTS_NAME, SWEEP_NAME, append_result, finished, load_results, read_results,
                                    write_sweep_meta)
from numbacnn.sweep.task import run_trial
from numbacnn.train import TrainConfig
from numbacnn.train.outdir import open_output_folder
INSTALL_HINT = 'pip install "numbacnn[distributed]"'
# Dask's nanny puts MALLOC_TRIM_THRESHOLD_=65536 in the environment of every worker it
# spawns (and leaves it in the spawning process's os.environ). Trimming the heap back to
# the OS that eagerly, plus the worker's statistical profiler sampling every 10 ms, made
# a Tiny VGG epoch 1.6x slower here; sweep workers get neither.
SWEEP_DASK_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
}
# Numba sizes its thread pool from NUMBA_NUM_THREADS, not OMP_NUM_THREADS (which Dask sets).
SWEEP_WORKER_ENV = {"NUMBA_NUM_THREADS": "1"}


def import_distributed():
    """``distributed``, or ImportError saying what to install."""
    try:
        import distributed
    except ImportError:
        raise ImportError(f"Dask distributed is not installed; install it with {INSTALL_HINT} "
                          f"(or run the trials in this process with workers=0 / --workers 0)") from None
    return distributed


# --------------------------------------------------------------------------- #
# where trials run
# --------------------------------------------------------------------------- #


def local_cluster(workers: int | None = None):
    """A LocalCluster for sweeps: ``workers`` single-threaded worker processes
    (default: one per core), NUMBA_NUM_THREADS=1 in their environment, no
    MALLOC_TRIM_THRESHOLD_ and no profiler (see ``SWEEP_DASK_CONFIG``)."""
    import dask

    distributed = import_distributed()
    n = workers if workers else (os.cpu_count() or 1)
    # An earlier cluster in this process may have left Dask's value in os.environ, which
    # the new workers would inherit; only Dask's own default is removed, never a user's.
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") == str(
            dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_", None)):
        del os.environ["MALLOC_TRIM_THRESHOLD_"]
    with dask.config.set(SWEEP_DASK_CONFIG):
        return distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        env=dict(SWEEP_WORKER_ENV), silence_logs=logging.ERROR,
                                        dashboard_address=":0")  # any free port: 8787 may be taken


def threads_on_host(client: Any) -> dict[str, int]:
    """Host -> Dask threads of all workers on it: how many trials share its cores."""
    hosts: dict[str, int] = {}
    for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
        host = address.rsplit(":", 1)[0]
        hosts[host] = hosts.get(host, 0) + int(info.get("nthreads", 1))
    return hosts


def dashboard_link(client: Any) -> str | None:
    """The Dask dashboard's address, or None when the scheduler serves none (no bokeh)."""
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        return client.dashboard_link
    except Exception:  # dashboard is informational only
        return None


# --------------------------------------------------------------------------- #
# progress
# --------------------------------------------------------------------------- #


class _Progress:
    """A tqdm bar over trials: done / running / not trained / failed, with ETA."""

    def __init__(self, total: int, initial: int, enabled: bool | None, log: Callable[[str], None] | None):
        from tqdm.auto import tqdm

        if enabled is None:
            enabled = sys.stderr.isatty()
        self.counts = {"done": 0, "running": 0, "refused": 0, "failed": 0}
        self.bar = tqdm(total=total, initial=initial, desc="trials", unit="trial", disable=not enabled,
                        file=sys.stderr, dynamic_ncols=True)
        self.log = log
        self._show()

    def _show(self) -> None:
        self.bar.set_postfix(self.counts, refresh=True)

    def running(self, n: int) -> None:
        self.counts["running"] = n
        self._show()

    def finished(self, record: Mapping[str, Any], text: str) -> None:
        status = record["status"]
        key = "done" if status == "done" else "failed" if status == "failed" else "refused"
        self.counts[key] += 1
        self.bar.update(1)
        self._show()
        if self.log is not None:
            if self.bar.disable:
                self.log(text)
            else:
                self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _describe_record(record: Mapping[str, Any], position: int, total: int) -> str:
    values = " ".join(f"{k}={v}" for k, v in record["values"].items())
    if record["status"] == "done":
        what = (f"test {record['test_accuracy']:.2%}, {record['seconds_per_epoch']:.1f} s/epoch, "
                f"{record['numba_threads']} thread(s)")
    else:
        what = record["message"].split(". ")[0][:160]
    return f"[{position}/{total}] {values}: {record['status']}: {what}"


# --------------------------------------------------------------------------- #
# the sweep
# --------------------------------------------------------------------------- #


@dataclass
class SweepResult:
    """What :func:`run` did.

    Attributes
    ----------
    out : Path
    trials : int
        Trials in the grid.
    skipped : int
        Already finished in ``out/results.jsonl`` before this run.
    ran : int
        Trials this run recorded.
    counts : dict status -> int
        Over this run's records.
    seconds : float
        Wall time of this run.
    dashboard : str or None
    load_average : list of float
        1-minute load average sampled as trials finished.
    """

    out: Path
    trials: int
    skipped: int
    ran: int
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    dashboard: str | None = None
    load_average: list[float] = field(default_factory=list)


def _record(trial: Trial, result: Mapping[str, Any]) -> dict[str, Any]:
    """The line written for a trial: identity and values first, its config last."""
    record: dict[str, Any] = {"trial": trial.id, "values": trial.values}
    record.update(result)
    record["config"] = trial.config
    return record


def run(grid: Mapping[str, Iterable[Any]], base: TrainConfig | None = None, out: str | os.PathLike = "runs/sweep",
        client: Any = None, workers: int | None = None, progress: bool | None = None,
        log: Callable[[str], None] | None = print,
        on_result: Callable[[dict[str, Any]], None] | None = None, report: bool = True) -> SweepResult:
    """Train Tiny VGG on every combination of ``grid`` over ``base``.

    Parameters
    ----------
    grid : dict name -> list of values
        TrainConfig fields, e.g. ``{"kernel_size": [3, 5, 7], "padding": [0, 1], "seed": [0, 1, 2]}``.
    base : TrainConfig or None
        Every other setting (default ``TrainConfig()``).
    out : folder
        ``results.jsonl`` (one line per finished trial), ``sweep.json`` and the report.
        Trials already finished there are skipped (a ``failed`` one runs again).
    client : distributed.Client or None
        Run on this existing cluster (e.g. ``Client("tcp://host:8786")``).
    workers : int or None
        Without ``client``: None starts a LocalCluster with one single-threaded
        worker process per core, N starts N, 0 runs the trials in this process,
        one after the other (no Dask needed).
    progress : bool or None
        tqdm bar over trials; None means only when stderr is a terminal.
    log : callable or None
        Gets one line per finished trial and the dashboard address.
    on_result : callable(record) or None
        Called after each record is written and its future released.
    report : bool
        Write ``results.csv``, ``summary.md`` and ``sweep.png`` at the end.

    Returns
    -------
    SweepResult

    Raises
    ------
    ValueError
        A bad grid.
    ImportError
        Dask distributed is needed (``workers != 0`` or a client) and missing.
    """
    started = time.perf_counter()
    grid = {field_name(name): list(values) for name, values in grid.items()}
    trials = expand(grid, base)
    out = Path(out)
    # one lock per output folder, as for train: a second sweep into the same folder is
    # refused (two sweeps appending to one results.jsonl recorded every trial twice)
    lock = open_output_folder(out, log=log)
    try:
        return _run_locked(grid, trials, base, Path(lock.path.parent), client, workers, progress, log, on_result,
                           report, started)
    finally:
        lock.release()


def _run_locked(grid: dict[str, list[Any]], trials: list[Trial], base: TrainConfig | None, out: Path, client: Any,
                workers: int | None, progress: bool | None, log: Callable[[str], None] | None,
                on_result: Callable[[dict[str, Any]], None] | None, report: bool, started: float) -> SweepResult:
    """:func:`run` once ``out`` is checked and locked."""
    loaded = load_results(out)
    if log and loaded.skipped:
        log(loaded.describe_skipped(out / RESULTS_NAME))
    done = finished(loaded.records)
    pending = [trial for trial in trials if trial.id not in done]
    base_config = dataclasses.asdict(base if base is not None else TrainConfig())
    write_sweep_meta(out, grid, base_config, [t.id for t in trials])
    result = SweepResult(out=out, trials=len(trials), skipped=len(trials) - len(pending), ran=0)
    if log and result.skipped:
        log(f"{result.skipped} of {len(trials)} trials already finished in {out / RESULTS_NAME}; "
            f"running the other {len(pending)}")
    bar = _Progress(len(trials), result.skipped, progress, log)

    def write(trial: Trial, outcome: Mapping[str, Any]) -> dict[str, Any]:
        record = _record(trial, outcome)
        append_result(out, record)
        result.ran += 1
        result.counts[record["status"]] = result.counts.get(record["status"], 0) + 1
        result.load_average.append(os.getloadavg()[0])
        bar.finished(record, _describe_record(record, result.skipped + result.ran, len(trials)))
        return record

    try:
        if client is None and workers == 0:
            for trial in pending:
                bar.running(1)
                record = write(trial, run_trial(trial.config))
                if on_result is not None:
                    on_result(record)
        elif pending:
            _run_on_dask(pending, client, workers, write, bar, result, log, on_result)
    finally:
        bar.close()
        result.seconds = time.perf_counter() - started
    if report:
        from numbacnn.sweep.report import write_report

        try:
            write_report(out, locked=True)
        except ImportError as exc:  # matplotlib missing: csv and summary are written, the plot is not
            if log:
                log(f"sweep.png not written: {exc}")
    return result


def _run_on_dask(pending: list[Trial], client: Any, workers: int | None,
                 write: Callable[[Trial, Mapping[str, Any]], dict[str, Any]], bar: _Progress,
                 result: SweepResult, log: Callable[[str], None] | None,
                 on_result: Callable[[dict[str, Any]], None] | None) -> None:
    distributed = import_distributed()
    own_cluster = own_client = None
    if client is None:
        own_cluster = local_cluster(workers)
        client = own_client = distributed.Client(own_cluster)
    futures: dict[Any, Trial] = {}
    try:
        result.dashboard = dashboard_link(client)
        if log and result.dashboard:
            log(f"Dask dashboard: {result.dashboard}")
        hosts = threads_on_host(client)
        run_id = uuid.uuid4().hex[:8]  # keys unique per run: a cancelled key of an earlier run may linger
        for trial in pending:
            future = client.submit(run_trial, trial.config, hosts, key=f"numbacnn-trial-{trial.id}-{run_id}")
            futures[future] = trial
        running = lambda: sum(  # noqa: E731
            1 for keys in client.processing().values() for key in keys if str(key).endswith(run_id))
        bar.running(running())
        for future in distributed.as_completed(list(futures)):
            trial = futures.pop(future)
            try:
                outcome = future.result()
            except Exception as exc:  # e.g. KilledWorker: the task crashed its worker too often
                outcome = {"status": "failed", "message": f"{type(exc).__name__}: {exc}"}
            record = write(trial, outcome)
            future.release()
            del future
            bar.running(running())
            if on_result is not None:
                on_result(record)
    finally:
        if futures:  # interrupted: stop the trials nobody will record
            client.cancel(list(futures))
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()


__all__ = ["INSTALL_HINT", "RESULTS_NAME", "SWEEP_NAME", "SweepResult", "append_result",
           "finished", "import_distributed", "local_cluster", "read_results", "run", "threads_on_host"]
