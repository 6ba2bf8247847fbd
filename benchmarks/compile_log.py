"""Summarise a compile log written by the test suite (tests/conftest.py).

Usage::

    NUMBACNN_COMPILE_LOG=/tmp/compiles python -m pytest
    python benchmarks/compile_log.py /tmp/compiles [--top 30]

Prints the seconds of compiling per test file, per test and per kernel, largest first:
where CI's time goes, since most of it is Numba compiling.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=pathlib.Path, help="the NUMBACNN_COMPILE_LOG folder")
    parser.add_argument("--top", type=int, default=25, help="rows per table (default 25)")
    options = parser.parse_args()
    paths = sorted(options.folder.glob("*.jsonl")) if options.folder.is_dir() else []
    if not paths:
        print(f"compile_log.py: error: no compile log (*.jsonl) in {options.folder} (run the tests with "
              f"NUMBACNN_COMPILE_LOG={options.folder} first)", file=sys.stderr)
        sys.exit(2)
    records = []
    for path in paths:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:  # a folder named *.jsonl, unreadable, not text
            print(f"compile_log.py: error: cannot read {path}: {exc.strerror if isinstance(exc, OSError) else exc} "
                  f"(remove it, or rerun the tests with a fresh NUMBACNN_COMPILE_LOG folder)", file=sys.stderr)
            sys.exit(2)
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:  # a worker killed mid-write leaves a partial last line
                record = None
            if not (isinstance(record, dict) and isinstance(record.get("seconds"), (int, float))
                    and isinstance(record.get("test"), str) and isinstance(record.get("kernel"), str)):
                print(f"compile_log.py: skipped {path}:{number}, not a compile record", file=sys.stderr)
                continue
            records.append(record)
    total = sum(record["seconds"] for record in records)
    print(f"{len(records)} compiles, {total:.0f} s")
    tables = {
        "file": lambda record: record["test"].split("::")[0],
        "test": lambda record: record["test"],
        "kernel": lambda record: record["kernel"],
    }
    same = collections.defaultdict(list)  # the same kernel, arguments and compiled-in sizes compiled again
    for record in records:
        if "closure" in record:
            same[(record["kernel"], record["args"], str(record["closure"]))].append(record)
    again = [r for group in same.values() for r in group[1:]]
    print(f"compiled more than once (by another worker at the same time, or a cache miss): {len(again)}, "
          f"{sum(r['seconds'] for r in again):.0f} s")
    for title, key in tables.items():
        seconds = collections.Counter()
        count = collections.Counter()
        for record in records:
            seconds[key(record)] += record["seconds"]
            count[key(record)] += 1
        print(f"\nby {title}:")
        for name, value in seconds.most_common(options.top):
            print(f"{value:8.1f} s {count[name]:5d}  {name}")


if __name__ == "__main__":
    main()
