"""Hyperparameter sweeps of Tiny VGG, in this process or on a Dask cluster.

``numbacnn.sweep.run(grid, base, out)`` trains every combination of ``grid``
(TrainConfig fields, seeds included) and appends one JSON line per finished trial
to ``out/results.jsonl``; :func:`write_report` turns that file into
``results.csv``, ``summary.md`` and ``sweep.png``, stating CNN Explainer's
hyperparameter lessons with the measured figures.

Modules: :mod:`~numbacnn.sweep.grid` (grid expansion, trial identity),
:mod:`~numbacnn.sweep.task` (one training, run on a worker),
:mod:`~numbacnn.sweep.driver` (Dask client side: submit, record, resume),
:mod:`~numbacnn.sweep.records` (``results.jsonl`` and ``sweep.json`` on disk, read back as untrusted input),
:mod:`~numbacnn.sweep.report`. Dask ``distributed`` is imported only when a
cluster is used (the ``numbacnn[distributed]`` extra).
"""

from numbacnn.sweep.driver import INSTALL_HINT, SweepResult, local_cluster, run
from numbacnn.sweep.records import RESULTS_NAME, SWEEP_NAME, read_results
from numbacnn.sweep.grid import Trial, expand, parse_grid, trial_id
from numbacnn.sweep.report import write_report
from numbacnn.sweep.task import STATUSES, run_trial

__all__ = ["INSTALL_HINT", "RESULTS_NAME", "STATUSES", "SWEEP_NAME", "SweepResult", "Trial", "expand", "local_cluster",
           "parse_grid", "read_results", "run", "run_trial", "trial_id", "write_report"]
