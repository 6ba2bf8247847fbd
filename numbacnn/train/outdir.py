"""The output folder of a training run: checked before any work, locked while in use.

- :func:`check_writable` (from :mod:`numbacnn.files`) creates the folder and writes
  (then removes) a probe file in it, so a read-only folder, a file in the way or a
  full disk is reported before any data is loaded or any kernel compiled.
- :class:`FolderLock` holds an exclusive ``fcntl.flock`` on ``OUT/.numbacnn.lock``
  (opened with ``O_NOFOLLOW``; it holds the owner's PID) for the whole run: a second run into the same
  folder is refused, naming that PID. The kernel drops the lock when its process
  dies, so the lock of a killed run is simply taken over.
- :func:`clean_stale_temp_files` removes the ``.checkpoint.npz.*.tmp``-style files a
  killed run left behind (only while holding the lock: a running writer's
  temporary file is never touched).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

from numbacnn.errors import FolderInUseError, OutputError
from numbacnn.files import (PROBE_PREFIX, check_writable, current_umask, open_fixed, output_error,
                            set_umask_mode)

try:
    import fcntl
except ImportError:  # not on Windows: runs there are not locked
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".numbacnn.lock"
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


class FolderLock:
    """An exclusive lock on a folder for one run (a context manager).

    ``OUT/.numbacnn.lock`` holds the PID of the process that has it. The lock is an
    ``fcntl.flock``, which the kernel releases when the process exits or is killed,
    so a lock file left by a killed run does not block the next one.

    Attributes
    ----------
    previous_pid : int or None
        The PID found in a lock file that was free to take: a run that ended
        without cleaning up (killed), or None.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.fd: int | None = None
        self.previous_pid: int | None = None

    def _read_pid(self) -> int | None:
        try:
            text = os.pread(self.fd, 64, 0).decode(errors="replace").strip() if self.fd is not None else ""
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> "FolderLock":
        """Take the lock or raise :class:`numbacnn.errors.FolderInUseError` naming the holder's PID."""
        try:
            # O_NOFOLLOW (open_fixed): a symlink planted as the lock file is refused, so the
            # truncation below never empties a file outside the folder
            self.fd = open_fixed(self.path, os.O_RDWR | os.O_CREAT)  # the umask applies
        except OSError as exc:
            if isinstance(exc, OutputError):  # a symlink, refused by open_fixed: already one line
                raise
            raise output_error(exc, self.path, "create the lock file") from None
        if fcntl is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = self._read_pid()
                os.close(self.fd)
                self.fd = None
                holder = f"PID {pid}" if pid else "another process"
                raise FolderInUseError(f"another numbacnn run ({holder}) is using the output folder",
                                       self.path.parent, "wait for it to finish, or choose another --out") from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                # a file system without flock: run unlocked rather than not at all
        self.previous_pid = self._read_pid()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def release(self) -> None:
        """Drop the lock (the lock file stays: removing it would let two runs lock
        two different files of the same name)."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        if fcntl is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            except OSError:
                pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


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


__all__ = ["FolderLock", "LOCK_NAME", "PROBE_PREFIX", "check_writable", "clean_stale_temp_files",
           "current_umask", "open_output_folder", "set_umask_mode", "tidy_output_folder"]
