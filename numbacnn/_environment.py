"""The environment Numba reads at import, made safe before numbacnn imports Numba.

- **The disk cache.** Every kernel is ``cache=True``, and Numba refuses to even
  *define* such a function (``RuntimeError: cannot cache function ...``) when no
  cache folder is writable: a read-only install (the package's ``__pycache__``)
  with an unwritable home (``~/.cache/numba``), as in many containers. Then
  numbacnn points ``NUMBA_CACHE_DIR`` at a temporary folder removed at exit, so
  kernels are compiled in each process (no disk cache between runs), and says so
  once on stderr. A ``NUMBA_CACHE_DIR`` the user set that is writable wins.
- **NUMBA_NUM_THREADS.** Numba prints a 16-line warning for a value that is not a
  number and fails only later (mid-run) for 0 or more than the cores. A bad value
  is removed from the environment before Numba reads it and kept in
  :data:`ENVIRONMENT_PROBLEMS`: the command line refuses it in one line (exit 2),
  naming the variable; the Python API runs with Numba's default (every core).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# variable -> (value, what is wrong, what to do): bad settings found at import, refused by the CLI
ENVIRONMENT_PROBLEMS: dict[str, tuple[str, str, str]] = {}
CACHE_NOTE: list[str] = []  # the note printed when the disk cache is off (tests read it)
FULL_WIDTH_FEATURE = "-prefer-256-bit"  # LLVM's tuning flag, turned off: AVX-512 code uses 512-bit vectors


def _writable_folder(folder: Path) -> bool:
    """Numba's own test: the folder can be created and a file written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def user_cache_dir(environ: dict[str, str] | os._Environ = os.environ) -> Path | None:
    """Numba's user-wide cache folder on Linux and macOS (appdirs): $XDG_CACHE_HOME/numba or ~/.cache/numba."""
    base = environ.get("XDG_CACHE_HOME")
    if not base:
        home = environ.get("HOME")
        if not home:
            return None
        base = str(Path(home) / (".cache" if sys.platform != "darwin" else "Library/Caches"))
    return Path(base) / "numba"


def numba_cache_usable(package_dir: Path = PACKAGE_DIR,
                       environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Whether one of Numba's cache locators can write for numbacnn's kernels: the
    user's NUMBA_CACHE_DIR, the package's ``__pycache__`` folders, or the user-wide one."""
    if environ.get("NUMBA_CACHE_DIR") and _writable_folder(Path(environ["NUMBA_CACHE_DIR"])):
        return True
    if _writable_folder(package_dir / "kernels" / "cpu" / "__pycache__"):
        return True
    cache = user_cache_dir(environ)
    return cache is not None and _writable_folder(cache)


def _check_num_threads(environ: dict[str, str] | os._Environ) -> None:
    value = environ.get("NUMBA_NUM_THREADS")
    if value is None:
        return
    cores = os.cpu_count() or 1
    try:
        number = int(value.strip())
    except ValueError:
        number = None
    if number is None or number < 1:
        ENVIRONMENT_PROBLEMS["NUMBA_NUM_THREADS"] = (
            value, f"NUMBA_NUM_THREADS={value!r} is not a whole number >= 1",
            f"unset it, or set it to 1..{cores} (the cores here)")
        del environ["NUMBA_NUM_THREADS"]  # Numba would warn for 16 lines, or fail mid-run


def full_width_features(environ: dict[str, str] | os._Environ = os.environ,
                        host_features: dict[str, bool] | None = None) -> str | None:
    """The ``NUMBA_CPU_FEATURES`` value that compiles for whole AVX-512 vectors, or None
    where numbacnn leaves Numba's choice alone (see the module docstring).

    Parameters
    ----------
    environ
        The environment: a ``NUMBA_CPU_FEATURES`` or ``NUMBA_CPU_NAME`` set there wins (None).
    host_features
        Feature name -> enabled, as ``llvmlite.binding.get_host_cpu_features()`` gives
        them (that is asked when None).

    Returns
    -------
    str or None
        The host's features in LLVM's ``+name,-name`` form followed by
        ``-prefer-256-bit``, when the host has AVX-512 (``avx512f``); else None.
    """
    if environ.get("NUMBA_CPU_FEATURES") is not None or environ.get("NUMBA_CPU_NAME"):
        return None
    if host_features is None:
        try:
            import llvmlite.binding as llvm

            host_features = llvm.get_host_cpu_features()
        except (ImportError, RuntimeError):  # no llvmlite, or LLVM cannot read this CPU's features
            return None
    if not host_features.get("avx512f"):
        return None
    features = ",".join(("+" if enabled else "-") + name for name, enabled in sorted(host_features.items()))
    return f"{features},{FULL_WIDTH_FEATURE}"


def _prefer_full_vectors(environ: dict[str, str] | os._Environ) -> None:
    """Sets NUMBA_CPU_FEATURES from :func:`full_width_features` before Numba reads it (or
    Numba's config, when Numba was imported first but has compiled nothing yet)."""
    features = full_width_features(environ)
    if features is None:
        return
    if "numba" in sys.modules:
        from numba.core import config, registry

        if "_toplevel_target_context" in vars(registry.cpu_target):
            return  # Numba has compiled already: its code generator keeps the features it started with
        config.CPU_FEATURES = features
    environ["NUMBA_CPU_FEATURES"] = features


def prepare_numba(environ: dict[str, str] | os._Environ = os.environ) -> None:
    """Make the environment safe for Numba's import (see the module docstring); idempotent."""
    _check_num_threads(environ)
    _prefer_full_vectors(environ)
    if CACHE_NOTE or numba_cache_usable(environ=environ):
        return
    folder = tempfile.mkdtemp(prefix="numbacnn-numba-cache-")
    atexit.register(shutil.rmtree, folder, True)
    environ["NUMBA_CACHE_DIR"] = folder
    if "numba" in sys.modules:  # imported before numbacnn: its config already read the environment
        from numba.core import config

        config.CACHE_DIR = folder
    CACHE_NOTE.append(f"numbacnn: note: no writable folder for Numba's disk cache ({PACKAGE_DIR} is read-only "
                      f"and so is {user_cache_dir(environ) or 'the home folder'}); kernels are compiled in this "
                      f"process only (set NUMBA_CACHE_DIR to a writable folder to keep them)")
    print(CACHE_NOTE[0], file=sys.stderr)


__all__ = ["CACHE_NOTE", "ENVIRONMENT_PROBLEMS", "FULL_WIDTH_FEATURE", "full_width_features", "numba_cache_usable",
           "prepare_numba", "user_cache_dir"]
