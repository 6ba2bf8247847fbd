"""A sweep's files on disk: ``results.jsonl`` (one record per finished trial) and
``sweep.json`` (the grid), written by the driver and read back by the driver
(resume) and the report. Both files are untrusted input when read back: a client
killed mid-write, a disk error or a hand edit can put anything in them.

- A line of ``results.jsonl`` that is not a well-formed record (not UTF-8, not
  JSON, nested too deeply, not an object, a missing or mistyped field, a number
  out of its range) is *skipped* and counted, as the docs promise: the trial it
  belonged to runs again on the next resume. :func:`load_results` returns the
  count and the first reasons, so callers can say so.
- A damaged ``sweep.json`` is refused (:class:`numbacnn.errors.RecordError`, one
  line naming the file and the entry): it is rewritten by every sweep run.
- Both are opened with ``O_NOFOLLOW`` (:func:`numbacnn.files.open_fixed`) when
  written: a symlink planted at either name is refused, never written through.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from numbacnn.errors import RecordError
from numbacnn.files import atomic_write_text, open_fixed
from numbacnn.sweep.task import FINAL_STATUSES, STATUSES
from numbacnn.train import TrainConfig

RESULTS_NAME = "results.jsonl"
SWEEP_NAME = "sweep.json"
MAX_LINE_BYTES = 1 << 20  # one record is a few kB; a longer line is damage, not a record
MAX_SWEEP_BYTES = 16 << 20

# field -> (low, high): numbers a trial's record may hold; None is allowed for every one
_RANGES = {
    "test_accuracy": (0.0, 1.0), "val_accuracy": (0.0, 1.0), "train_accuracy": (0.0, 1.0),
    "test_loss": (0.0, 1e6), "val_loss": (0.0, 1e6), "train_loss": (0.0, 1e6),
    "seconds_per_epoch": (0.0, 1e9), "seconds": (0.0, 1e9), "compile_seconds": (0.0, 1e9),
}
_COUNTS = {"parameters": 0, "flops": 0, "numba_threads": 1}
_TEXTS = ("message", "worker", "slides", "traceback")


@dataclass
class LoadedResults:
    """What :func:`load_results` found.

    Attributes
    ----------
    records : list of dict
        The well-formed records, in file order.
    skipped : int
        Lines skipped as unreadable (blank lines are not counted).
    reasons : list of str
        ``"line N: why"`` for the first few skipped lines.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def describe_skipped(self, path: str | os.PathLike) -> str:
        """One line saying how many lines were skipped and why (empty when none were)."""
        if not self.skipped:
            return ""
        return (f"skipped {self.skipped} unreadable line(s) of {path} ({'; '.join(self.reasons)}); "
                f"their trials run again")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_record(record: Any) -> str | None:
    """Why ``record`` (one parsed line) is not a usable trial record, or None when it is."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    if not isinstance(record.get("trial"), str) or not record["trial"]:
        return "no 'trial' id"
    if record.get("status") not in STATUSES:
        return f"status {record.get('status')!r:.40} is not one of {', '.join(STATUSES)}"
    if not isinstance(record.get("values"), dict):
        return "'values' is not an object"
    if not all(isinstance(v, (str, int, float, bool)) or v is None for v in record["values"].values()):
        return "'values' holds a non-scalar value"
    config = record.get("config")
    if not isinstance(config, dict):
        return "no 'config' object"
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        TrainConfig(**{k: v for k, v in config.items() if k in known}).validate()
    except (TypeError, ValueError) as exc:
        return f"config: {exc}"[:160]
    for name, (low, high) in _RANGES.items():
        value = record.get(name)
        if value is not None and not (_is_number(value) and low <= value <= high):
            return f"{name} {value!r:.40} is not a number in [{low:g}, {high:g}]"
    for name, minimum in _COUNTS.items():
        value = record.get(name)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                      and minimum <= value < 10**18):
            return f"{name} {value!r:.40} is not a whole number >= {minimum}"
    for name in _TEXTS:
        if record.get(name) is not None and not isinstance(record[name], str):
            return f"{name} is not text"
    sizes = record.get("feature_sizes")
    if sizes is not None and not (isinstance(sizes, list) and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**6 for v in sizes)):
        return "feature_sizes is not a list of sizes"
    versions = record.get("versions")
    if versions is not None and not (isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values())):
        return "versions is not an object of strings"
    if record["status"] == "done" and not all(_is_number(record.get(k)) for k in ("test_accuracy", "seconds_per_epoch")):
        return "a 'done' record without test_accuracy and seconds_per_epoch"
    return None


def parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) for a well-formed line of ``results.jsonl``, else (None, why)."""
    if len(raw) > MAX_LINE_BYTES:
        return None, f"{len(raw):,} bytes long"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    try:
        record = json.loads(text)
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        return None, f"not JSON ({str(exc)[:60]})"
    why = check_record(record)
    return (None, why) if why else (record, None)


def load_results(out: str | os.PathLike) -> LoadedResults:
    """Every well-formed record in ``out/results.jsonl`` and a count of the lines skipped.

    Raises
    ------
    numbacnn.errors.RecordError
        ``results.jsonl`` exists but is not a regular file (a folder, a device).
    """
    path = Path(out) / RESULTS_NAME
    loaded = LoadedResults()
    if not os.path.lexists(path):
        return loaded
    if path.is_symlink() or not path.is_file():
        raise RecordError("not a regular file (a symlink, folder or device)", path,
                          "remove it, or choose another --out")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            record, why = parse_line(raw)
            if record is not None:
                loaded.records.append(record)
            else:
                loaded.skipped += 1
                if len(loaded.reasons) < 3:
                    loaded.reasons.append(f"line {number}: {why}")
    return loaded


def read_results(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The well-formed records of ``out/results.jsonl`` in file order (see :func:`load_results`;
    a malformed line, e.g. the half-written last line of a killed client, is skipped and
    its trial runs again)."""
    return load_results(out).records


def finished(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """trial id -> its last record with a final status (``failed`` trials are retried)."""
    return {r["trial"]: dict(r) for r in records if r.get("status") in FINAL_STATUSES}


def append_result(out: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line and fsync, so a finished trial survives a crash of the client.

    Opened with ``O_NOFOLLOW``: a symlink planted as ``results.jsonl`` is refused."""
    path = Path(out) / RESULTS_NAME
    line = (json.dumps(record, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")
    fd = open_fixed(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a client killed mid-write left half a line: end it, do not extend it
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_sweep_meta(out: str | os.PathLike, grid: Mapping[str, list[Any]], base: Mapping[str, Any],
                     trials: list[str]) -> None:
    """``out/sweep.json``: the grid, the base configuration and the trial ids (atomically)."""
    atomic_write_text(Path(out) / SWEEP_NAME, json.dumps(
        {"grid": dict(grid), "base": dict(base), "trials": list(trials)}, indent=2) + "\n")


def read_sweep_grid(out: str | os.PathLike) -> list[str]:
    """The grid's field names from ``out/sweep.json`` (empty when there is none).

    Raises
    ------
    numbacnn.errors.RecordError
        The file cannot be read, is not JSON, or its ``grid`` is not an object of
        field -> list of values: one line naming the file and the entry.
    """
    path = Path(out) / SWEEP_NAME
    if not os.path.lexists(path):
        return []
    todo = "it is rewritten by the next `numbacnn sweep` run into this folder; or remove it"
    if path.is_symlink() or not path.is_file():
        raise RecordError("not a regular file (a symlink, folder or device)", path, todo)
    if path.stat().st_size > MAX_SWEEP_BYTES:
        raise RecordError(f"{path.stat().st_size:,} bytes, far more than a sweep's grid", path, todo)
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise RecordError("not UTF-8 text", path, todo) from None
    except RecursionError:
        raise RecordError("JSON nested too deeply", path, todo) from None
    except ValueError as exc:
        raise RecordError(f"not JSON ({str(exc)[:80]})", path, todo) from None
    if not isinstance(meta, dict):
        raise RecordError(f"a JSON {type(meta).__name__}, not an object", f"{path} [sweep]", todo)
    grid = meta.get("grid", {})
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise RecordError("'grid' is not an object of name -> list of values", f"{path} [grid]", todo)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in grid:
        if name not in known:
            raise RecordError(f"{name!r:.60} is not a training setting", f"{path} [grid.{name:.60}]", todo)
    return list(grid)


__all__ = ["LoadedResults", "MAX_LINE_BYTES", "RESULTS_NAME", "SWEEP_NAME", "append_result", "check_record",
           "finished", "load_results", "parse_line", "read_results", "read_sweep_grid", "write_sweep_meta"]
