"""The output folder of a training run: checked before any work, locked while in use.

- :func:`check_writable` (from :mod:`numbacnn.files`) creates the folder and writes
  (then removes) a probe file in it, so a read-only folder, a file in the way or a
  full disk is reported before any data is loaded or any kernel compiled.
- :class:`FolderLock` (from :mod:`numbacnn.files`) holds an exclusive ``fcntl.flock`` on ``OUT/.numbacnn.lock``
  (opened with ``O_NOFOLLOW``; it holds the owner's PID) for the whole run: a second run into the same
  folder is refused, naming that PID. The kernel drops the lock when its process
  dies, so the lock of a killed run is simply taken over.
- :func:`clean_stale_temp_files` removes the ``.checkpoint.npz.*.tmp``-style files a
  killed run left behind (only while holding the lock: a running writer's
  temporary file is never touched).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from numbacnn.errors import OutputError
from numbacnn.files import (LOCK_NAME, PROBE_PREFIX, FolderLock, check_writable, current_umask,
                            set_umask_mode)

# the files train and sweep write through atomic_write into a folder they lock; their
# temporary names are ".<name>.<random>.tmp"
OUTPUT_NAMES = ("checkpoint.npz", "metrics.json", "curves.png",  # train
                "sweep.json", "results.csv", "summary.md", "sweep.png")  # sweep and its report


def clean_stale_temp_files(out: str | os.PathLike) -> list[Path]:
    """Remove temporary files a killed run left in ``out`` (call it holding the lock).

    Returns the paths removed."""
    removed = []
    prefixes = tuple(f".{name}." for name in OUTPUT_NAMES) + (PROBE_PREFIX,)
    for path in Path(out).iterdir():
        if path.name.startswith(prefixes) and path.name.endswith(".tmp") and path.is_file():
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed


def check_output_names(folder: str | os.PathLike, names: tuple[str, ...]) -> None:
    """Refuse, before any work, a folder where one of the file names a run writes is
    taken by something that is not a regular file (a folder named ``metrics.json``
    was found only after an epoch had been trained).

    Raises
    ------
    numbacnn.errors.OutputError
    """
    for name in names:
        path = Path(folder) / name
        if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
            kind = "a symlink" if path.is_symlink() else "a folder" if path.is_dir() else "not a regular file"
            raise OutputError(f"{name} in the output folder is {kind}; numbacnn writes a file of that name", path,
                              "move it away, or choose another --out")


def tidy_output_folder(out: str | os.PathLike) -> list[Path]:
    """Remove a killed run's temporary files from an existing ``out`` when no other run
    holds its lock, and return them; nothing else is touched, and a folder in use,
    missing or unwritable is left alone. Used where a run is refused before it opens
    the folder (``--resume`` with no checkpoint), so the refusal leaves no litter."""
    folder = Path(out)
    if folder.is_symlink() or not folder.is_dir():
        return []
    lock = FolderLock(folder)
    try:
        lock.acquire()
    except OSError:  # in use (FolderInUseError), read-only, a symlink as the lock file
        return []
    try:
        return clean_stale_temp_files(folder)
    except OSError:
        return []
    finally:
        lock.release()


def open_output_folder(out: str | os.PathLike, needed_bytes: int = 0,
                       log: Callable[[str], None] | None = None) -> FolderLock:
    """Everything about ``out`` that can be checked before a run: writable, enough
    free space, not in use (returns the held :class:`FolderLock`), and stale
    temporary files of a killed run removed."""
    folder = check_writable(out, needed_bytes)
    lock = FolderLock(folder).acquire()
    try:
        removed = clean_stale_temp_files(folder)
    except OSError:
        lock.release()
        raise
    if log and lock.previous_pid and lock.previous_pid != os.getpid():
        log(f"took over {folder} from an earlier run (PID {lock.previous_pid}) that did not finish")
    if log and removed:
        log(f"removed {len(removed)} temporary file(s) left in {folder} by an interrupted run")
    return lock


__all__ = ["FolderLock", "LOCK_NAME", "PROBE_PREFIX", "check_output_names", "check_writable", "clean_stale_temp_files",
           "current_umask", "open_output_folder", "set_umask_mode", "tidy_output_folder"]
