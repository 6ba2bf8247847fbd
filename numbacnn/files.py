"""File safety for every folder numbacnn writes: atomic replacement, writability
probes, and fixed names that are never followed through symlinks.

One module below ``train``, ``sweep``, ``report`` and ``viz`` (all of them write
files), so none of them imports another for it.

- :func:`atomic_write` writes a temporary file beside the target, fsyncs it and
  renames it over the target: a reader (or a killed run) sees the old file or the
  new one, never half. ``os.replace`` replaces a symlink planted at the target's
  name by the new file; it never writes through it.
- :func:`open_fixed` opens a fixed name (``.numbacnn.lock``, ``results.jsonl``) in
  a folder numbacnn did not just create with ``O_NOFOLLOW``: a symlink planted
  there is refused, so nothing outside the folder is truncated or appended to.
- :func:`check_writable` creates the folder and proves it writable with a probe
  file, before any work is spent.
- :class:`FolderLock` holds an exclusive ``flock`` on ``OUT/.numbacnn.lock`` (opened
  with ``O_NOFOLLOW``) while a command writes into ``OUT``: one lock per output
  folder for every command that writes one (train, sweep, sweep report, explain
  report).
- :func:`set_umask_mode` gives a finished file the permissions ``open()`` would.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from numbacnn.errors import FolderInUseError, OutputError

try:
    import fcntl
except ImportError:  # not on Windows: runs there are not locked
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".numbacnn.lock"
PROBE_PREFIX = ".numbacnn-probe."
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # 0 where the platform has none (Windows has no symlink attacks here)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore
    os.umask(mask)
    return mask


def set_umask_mode(path: str | os.PathLike) -> None:
    """chmod ``path`` to ``0o666 & ~umask``: what a plain ``open(path, "w")`` gives."""
    os.chmod(path, 0o666 & ~current_umask())


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (a power cut after os.replace could
    otherwise bring back the old name); not possible on every system."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync it, then
    rename it over ``path``: readers see the old file or the new one, never half.

    The file gets the permissions ``open()`` would give (``0o666 & ~umask``). A
    symlink at ``path`` is replaced, not written through. The temporary file is
    ``.<name>.<random>.tmp``; one left by a kill is removed by the next run
    holding the folder's lock (:func:`numbacnn.train.outdir.clean_stale_temp_files`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        set_umask_mode(tmp)  # mkstemp made it 0600; the user's umask decides, as for open()
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        # Ctrl-C inside np.savez makes zipfile's cleanup raise a ValueError ("Can't close
        # the ZIP file while there is an open writing handle") that hides the interrupt;
        # the interrupt is what happened, so it is what propagates (exit 130, one line)
        cause = exc.__context__
        while cause is not None and not isinstance(exc, KeyboardInterrupt):
            if isinstance(cause, KeyboardInterrupt):
                raise cause from None
            cause = cause.__context__
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def open_fixed(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """``os.open(path, flags | O_NOFOLLOW)``: the descriptor of a fixed name in a folder
    numbacnn writes, refusing a symlink planted at that name.

    Raises
    ------
    numbacnn.errors.OutputError
        ``path`` is a symlink (``ELOOP``): named, with what to do.
    OSError
        Any other failure to open, as ``os.open`` raises it.
    """
    try:
        return os.open(path, flags | _NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.EMLINK and os.path.islink(path)):
            raise OutputError("a symlink stands where numbacnn writes its own file (never followed)", path,
                              "remove the symlink or choose another folder") from None
        raise


def output_error(exc: OSError, path: Path, doing: str, option: str = "--out") -> OutputError:
    """An :class:`OutputError` for an OSError met while ``doing`` something to ``path``."""
    reason = (exc.strerror or str(exc)).lower()
    todo = {errno.ENOSPC: f"free some disk space or choose another {option}",
            errno.EDQUOT: f"free some disk space or choose another {option}",
            errno.EROFS: f"choose an {option} on a writable file system"}.get(
                exc.errno or 0, f"choose another {option} or fix its permissions")
    return OutputError(f"cannot {doing} ({reason})", path, todo)


def check_writable(out: str | os.PathLike, needed_bytes: int = 0) -> Path:
    """Create ``out`` if needed and prove it writable by writing a probe file there.

    Parameters
    ----------
    out : folder
    needed_bytes : int
        Also refuse when the file system has less free space than this (bytes).

    Returns
    -------
    Path
        ``out`` made absolute.

    Raises
    ------
    numbacnn.errors.OutputError
        (an ``OSError``) ``out`` is a file or a dangling symlink, lies below a
        file, cannot be created or written, or its disk has less than
        ``needed_bytes`` free.
    """
    out = Path(out).absolute()
    if out.is_symlink() and not out.exists():
        raise OutputError(f"the output folder is a symlink to {os.readlink(out)}, which does not exist", out,
                          "create its target, remove the symlink or choose another --out")
    if out.exists() and not out.is_dir():
        raise OutputError("the output folder is a file", out, "choose another --out")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"the output folder would be below a file ({parent})", out,
                                  "choose another --out")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, out, "create the output folder") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, suffix=".tmp", dir=out)
        try:
            os.write(fd, b"numbacnn")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise output_error(exc, out, "write in the output folder") from None
    if needed_bytes:
        free = shutil.disk_usage(out).free
        if free < needed_bytes:
            raise OutputError(f"the disk has {free / 2**20:.1f} MiB free, the checkpoint and metrics need about "
                              f"{needed_bytes / 2**20:.1f} MiB", out, "free some disk space or choose another --out")
    return out


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


__all__ = ["FolderLock", "LOCK_NAME", "PROBE_PREFIX", "atomic_write", "atomic_write_text", "check_writable", "current_umask",
           "fsync_folder", "open_fixed", "output_error", "set_umask_mode"]
