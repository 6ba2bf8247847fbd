"""Errors a user can meet, and the one line the ``numbacnn`` command prints for each.

Every message follows one shape, modelled on argparse's ``prog: error: message``
and git's ``fatal: ...``::

    numbacnn <command>: error: <what>, <where> (<what to do>)

The exception classes below carry the ``<what>, <where> (<what to do>)`` part as
their message, so the Python API raises the same text the command prints. Each
also subclasses the built-in exception a Python user would catch (``ValueError``,
``FileNotFoundError``, ``OSError``, ``MemoryError``), so ``except ValueError``
keeps working.

Exit codes of the command (see :func:`exit_code`):

- 2: the input was refused before any work: bad arguments, a dataset, checkpoint
  or image that cannot be used, a folder that is not writable or is in use
  (argparse uses 2 for usage errors too).
- 1: the command failed while working: the disk filled, memory ran out, the loss
  diverged, or an unexpected internal error (``--debug`` shows its traceback).
- 130: interrupted with Ctrl-C (128 + SIGINT, as shells report it).
"""

from __future__ import annotations

import errno
import os
import re

__all__ = [
    "CheckpointError", "DatasetError", "DatasetNotFoundError", "FolderInUseError", "ImageError",
    "NumbacnnError", "OutputError", "RecordError", "ResourceError", "UsageError", "describe", "error_line", "exit_code",
    "format_message", "one_line", "printable",
]

MAX_MESSAGE_CHARS = 800  # the CLI shortens longer messages (a few terminal rows), keeping both ends


def format_message(what: str, where: str | os.PathLike | None = None, todo: str | None = None) -> str:
    """``"<what>, <where> (<todo>)"`` with the parts that are given, on one line."""
    text = str(what)
    if where is not None and str(where):
        text += f", {where}"
    if todo:
        text += f" ({todo})"
    return one_line(text, limit=None)


def one_line(text: str, limit: int | None = MAX_MESSAGE_CHARS) -> str:
    """Collapse ``text`` to one line (newlines and runs of spaces become one space)
    and shorten it to ``limit`` characters, keeping the start and the end."""
    text = printable(re.sub(r"\s+", " ", str(text)).strip())
    if limit is not None and len(text) > limit:
        keep = (limit - 5) // 2
        text = f"{text[:keep]} ... {text[-keep:]}"
    return text


def printable(text: object) -> str:
    """``text`` safe to print on one terminal line: control characters (a newline in a
    class name) and undecodable bytes of a file name (``caf\\xe9``, held by Python as
    a lone surrogate) become visible escapes such as ``\\n`` and ``\\xe9``."""
    out = []
    for char in str(text):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the raw byte of a non-UTF-8 name
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            out.append(char.encode("unicode_escape", errors="backslashreplace").decode("ascii")
                       if code < 0xD800 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


class NumbacnnError(Exception):
    """Base of numbacnn's user-facing errors; the message is ``<what>, <where> (<todo>)``.

    Parameters
    ----------
    what : str
        What is wrong ("labels out of range: 12 >= 10 classes").
    where : str or path, optional
        The file, option or argument concerned.
    todo : str, optional
        What the user can do about it.
    """

    exit_code = 2

    def __init__(self, what: str, where: str | os.PathLike | None = None, todo: str | None = None) -> None:
        self.what, self.where, self.todo = str(what), (str(where) if where is not None else None), todo
        super().__init__(format_message(what, where, todo))

    def __str__(self) -> str:  # OSError subclasses would otherwise print "[Errno ...]"
        return self.args[0] if self.args else ""


class UsageError(NumbacnnError, ValueError):
    """An option or argument out of its range, or options that contradict each other."""


class DatasetError(NumbacnnError, ValueError):
    """A dataset file or folder that cannot be used (corrupt, truncated, bad labels, empty)."""


class DatasetNotFoundError(NumbacnnError, FileNotFoundError):
    """The dataset's files are not where the user said (or where they were looked for)."""


class ImageError(DatasetError):
    """An image file that cannot be read (truncated, zero bytes, not an image, a folder)."""


class CheckpointError(NumbacnnError, ValueError):
    """A checkpoint that cannot be used: unreadable, foreign, incomplete, or holding NaN weights."""


class RecordError(NumbacnnError, ValueError):
    """A file numbacnn wrote earlier and reads back (a sweep's ``results.jsonl`` or
    ``sweep.json``, a run's ``metrics.json``) that is damaged or was edited: untrusted
    input, refused naming the file and the entry."""


class OutputError(NumbacnnError, OSError):
    """The output folder cannot be written (read-only, a file, disk full) or would
    overwrite another run's results."""


class FolderInUseError(OutputError):
    """Another numbacnn process holds the output folder's lock."""


class ResourceError(NumbacnnError, MemoryError):
    """The run cannot fit: the estimated memory exceeds what the machine has."""


def describe(exc: BaseException) -> str:
    """One line ``<what>, <where> (<todo>)`` for any exception a command can meet.

    numbacnn's own errors already carry that text; OSErrors are described from
    their errno and file name; anything else keeps its type name, since the
    message alone may not say what went wrong (``KeyError: 'model'``).
    """
    if isinstance(exc, NumbacnnError):
        return one_line(str(exc))
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else None
        todo = {
            errno.ENOSPC: "free some disk space or choose another --out, then run again",
            errno.EDQUOT: "free some disk space or choose another --out, then run again",
            errno.EACCES: "check the permissions, or choose another path",
            errno.EPERM: "check the permissions, or choose another path",
            errno.EROFS: "choose a folder on a writable file system",
            errno.ENOENT: "check the path",
            errno.EISDIR: "name a file, not a folder",
            errno.ENOTDIR: "a part of the path is a file, not a folder",
        }.get(exc.errno or 0)
        return format_message(exc.strerror.lower(), where, todo)
    if isinstance(exc, MemoryError):
        return format_message(f"out of memory ({exc})" if str(exc) else "out of memory", None,
                              "try a smaller --batch-size, --image-size or --filters")
    if isinstance(exc, (ValueError, TypeError, FileNotFoundError, ImportError)):
        return one_line(str(exc)) or type(exc).__name__
    return format_message(f"internal error {type(exc).__name__}: {exc}", None,
                          "run again with --debug for the traceback, and please report it")


def exit_code(exc: BaseException) -> int:
    """The command's exit status for ``exc`` (see the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, NumbacnnError):
        return exc.exit_code
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        return 1  # the environment failed mid-work (disk full, permissions found late)
    if isinstance(exc, (ValueError, TypeError, FileNotFoundError, ImportError)):
        return 2
    return 1


def error_line(command: str | None, exc: BaseException) -> str:
    """``numbacnn <command>: error: <what>, <where> (<todo>)`` for ``exc``; ``command``
    is the subcommand's name as typed ("train", "explain report") or None."""
    prog = f"numbacnn {command}" if command else "numbacnn"
    if isinstance(exc, KeyboardInterrupt):
        return f"{prog}: error: interrupted (Ctrl-C; files already written are complete)"
    return f"{prog}: error: {describe(exc)}"

