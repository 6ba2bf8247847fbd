"""``numbacnn sweep``: train Tiny VGG over a grid of hyperparameters, here or on a Dask cluster.

- ``numbacnn sweep --grid kernel_size=3,5,7 padding=0,1 stride=1,2 seed=0,1,2 --epochs 3
  --out runs/sweep [--workers N | --cluster tcp://host:8786]``: every ``numbacnn
  train`` option sets the base configuration the grid varies; one JSON line per
  finished trial in ``OUT/results.jsonl``; the same command again resumes.
- ``numbacnn sweep report OUT``: ``results.csv``, ``summary.md``, ``sweep.png``
  (also written at the end of a sweep).

Exit codes: 0 every trial recorded (a diverged or impossible trial is a result);
1 some trial failed (its message is recorded; a re-run retries it); 2 bad
arguments, no cluster, or (trials on this machine) no dataset, checked before any
trial with ``numbacnn train``'s message; 130 interrupted by Ctrl-C or SIGTERM (a
re-run resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys

from numbacnn.commands import DefaultsHelpFormatter
from numbacnn.commands.train import add_config_arguments

EXIT_OK, EXIT_FAILED_TRIALS, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def _error(what: str, where: str, todo: str) -> int:
    from numbacnn.errors import format_message

    print(f"numbacnn sweep: error: {format_message(what, where, todo)}", file=sys.stderr)
    return EXIT_ERROR


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="train Tiny VGG over a grid of hyperparameters (locally or on Dask)",
        # argparse would print the optional `report` subcommand as if it were required
        usage="%(prog)s [-h] [--grid NAME=V1,V2 [NAME=V1,V2 ...]] [train options] [--workers N | --cluster ADDRESS] "
              "[--out OUT]\n       %(prog)s report OUT",
        description="Train CNN Explainer's Tiny VGG on every combination of --grid and report what each "
                    "hyperparameter did to accuracy, parameters, FLOPs and time. The train options set "
                    "everything the grid does not vary. Trials run on a Dask LocalCluster with one "
                    "single-threaded worker per core (--workers N for N, 0 for this process) or on an "
                    "existing cluster (--cluster). `numbacnn sweep report OUT` rewrites the report.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--grid", nargs="+", metavar="NAME=V1,V2",
                        help="hyperparameters to vary: TrainConfig fields, e.g. kernel_size=3,5,7 padding=0,1 "
                             "stride=1,2 seed=0,1,2")
    add_config_arguments(parser)
    parser.add_argument("--out", default="runs/sweep", help="folder for results.jsonl and the report")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="local worker processes (default: one per core); 0 runs the trials in this process")
    where.add_argument("--cluster", metavar="ADDRESS", default=None,
                       help="address of a running Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show the progress bar over trials (default: only when stderr is a terminal)")
    parser.set_defaults(func=run)
    # prog given: argparse would otherwise build it from the two-line usage above
    actions = parser.add_subparsers(dest="sweep_command", metavar="report", prog="numbacnn sweep")
    report = actions.add_parser("report", help="write results.csv, summary.md and sweep.png of a sweep",
                                description="Read OUT/results.jsonl and write OUT/results.csv, OUT/summary.md "
                                            "and OUT/sweep.png (matplotlib, numbacnn[viz]).")
    report.add_argument("folder", metavar="OUT", help="the sweep's --out folder")
    report.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from numbacnn.sweep import write_report
    from numbacnn.sweep.records import RESULTS_NAME, load_results

    try:
        written = write_report(args.folder)
        skipped = load_results(args.folder).describe_skipped(os.path.join(args.folder, RESULTS_NAME))
    except FileNotFoundError as exc:
        return _error(str(exc), "numbacnn sweep report", f"run `numbacnn sweep --out {args.folder} ...` first")
    except ImportError as exc:
        return _error(f"sweep.png needs matplotlib ({exc})", "numbacnn sweep report",
                      'pip install "numbacnn[viz]"; results.csv and summary.md were written')
    if skipped:  # as the docs promise: unreadable lines are skipped, with a count
        print(skipped)
    for path in written.values():
        print(f"wrote {path}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    from numbacnn.sweep import INSTALL_HINT, RESULTS_NAME, parse_grid
    from numbacnn.sweep import run as run_sweep
    from numbacnn.train import TrainConfig

    if not args.grid:
        return _error("no --grid given", "numbacnn sweep", "e.g. --grid kernel_size=3,5,7 seed=0,1,2")
    if args.workers is not None and args.workers < 0:
        return _error(f"--workers must be >= 0, got {args.workers}", "numbacnn sweep",
                      "0 runs the trials in this process")
    try:
        grid = parse_grid(args.grid)
    except ValueError as exc:
        return _error(str(exc), "in --grid", "write NAME=V1,V2 with TrainConfig field names")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    base = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    client = None
    if args.cluster or args.workers != 0:
        try:
            import distributed
        except ImportError:
            return _error("Dask distributed is not installed", "needed for --workers N and --cluster",
                          f"{INSTALL_HINT}, or --workers 0 to run the trials in this process")
        if args.cluster:
            try:
                client = distributed.Client(args.cluster, timeout="15s")
            except (OSError, TimeoutError) as exc:
                return _error(f"cannot reach a Dask scheduler ({exc})", f"--cluster {args.cluster}",
                              "check the address and that the scheduler is running")
    if not args.cluster:
        # Trials run on this machine: find the dataset before any trial, with the same loader
        # and one-line error as `numbacnn train` (a DatasetError that cli.main prints). Workers
        # of a --cluster may see another file system, so there each trial reports its own.
        from numbacnn.data import load_dataset

        if "dataset" not in grid and "data_dir" not in grid:
            load_dataset(base.dataset, base.data_dir, image_size=base.image_size, channels=base.channels)
    # A sweep started with nohup or `&` ignores Ctrl-C's SIGINT, and schedulers stop jobs with
    # SIGTERM: both end the sweep the way Ctrl-C does (trials cancelled, local cluster closed).
    previous = signal.signal(signal.SIGTERM, _interrupt)
    from numbacnn.errors import NumbacnnError

    try:
        result = run_sweep(grid, base, args.out, client=client, workers=args.workers, progress=args.progress)
    except NumbacnnError:
        raise  # already one line naming its file or option (a locked or damaged folder): cli.main prints it
    except ValueError as exc:
        return _error(str(exc), "in --grid and the train options", "fix the values named")
    except KeyboardInterrupt:
        print(f"numbacnn sweep: interrupted; finished trials are in {os.path.join(args.out, RESULTS_NAME)}, "
              f"run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        if client is not None:
            client.close()
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts.items()))
    load = (f"; 1-min load average {min(result.load_average):.2f}-{max(result.load_average):.2f}"
            if result.load_average else "")
    print(f"{result.ran} trials in {result.seconds:.0f} s ({counts or 'none to run'}), {result.skipped} already "
          f"done{load}; report in {args.out}/summary.md")
    return EXIT_FAILED_TRIALS if result.counts.get("failed") else EXIT_OK
