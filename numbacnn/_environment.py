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
- **Vector width.** The fast kernels are written for 64-byte vectors (16 float32
  lanes, ``conv_tuning.VECTOR_BYTES``), but LLVM's tuning for many Intel CPUs with
  AVX-512 (Skylake-SP to Sapphire Rapids, Rocket Lake) prefers 256-bit vectors, to
  avoid the clock drop of 512-bit instructions on the older ones. Numba then compiled
  the kernels for 8 lanes: Tiny VGG's 14x14 3x3 convolution ran at 86 GFLOP/s instead
  of 155 and its training steps 2-12% slower (2-core Rocket Lake Xeon; the gain was
  measured there, and the AMD EPYC of earlier sessions got 512-bit code anyway). On a
  CPU with AVX-512, numbacnn sets ``NUMBA_CPU_FEATURES`` to the host's features plus
  ``-prefer-256-bit``. Any of ``NUMBA_CPU_FEATURES``, ``NUMBA_CPU_NAME`` or
  ``NUMBA_ENABLE_AVX`` set by the user wins (``NUMBA_CPU_FEATURES=`` empty gives
  LLVM's own choice back), and so does Numba on the CPUs it turns AVX off for.
  ``numbacnn info`` prints the width (:data:`VECTOR_WIDTH`).
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
VECTOR_WIDTH: list[str] = []  # the CPU kernels' vector width in words, once prepare_numba ran (numbacnn info)
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


# the user's settings that decide the CPU code instead of numbacnn (set, even to "", wins)
CPU_CODE_VARIABLES = ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME", "NUMBA_ENABLE_AVX")
# CPU names for which Numba turns AVX off itself (numba/core/config.py: LLVM's AVX trouble on
# these, and VMs that report "nocona" with AVX-512 features, numba#9582): left to Numba
NUMBA_NO_AVX_CPUS = frozenset({"corei7-avx", "core-avx-i", "sandybridge", "ivybridge", "nocona"})


def full_width_features(environ: dict[str, str] | os._Environ = os.environ,
                        host_features: dict[str, bool] | None = None,
                        host_name: str | None = None) -> tuple[str | None, str]:
    """The ``NUMBA_CPU_FEATURES`` value that compiles for whole AVX-512 vectors, and the
    vector width that results, in words (``numbacnn info`` prints it).

    Parameters
    ----------
    environ
        The environment: any of :data:`CPU_CODE_VARIABLES` set there, even to "", wins.
    host_features, host_name
        Feature name -> enabled and LLVM's CPU name, as ``llvmlite.binding`` gives them
        (asked when None).

    Returns
    -------
    features : str or None
        The host's features in LLVM's ``+name,-name`` form followed by
        ``-prefer-256-bit`` when the host has AVX-512 (``avx512f``) and the user set
        none of the variables; else None (Numba's own choice).
    width : str
        e.g. "512-bit (AVX-512; set NUMBA_CPU_FEATURES= for LLVM's choice)".
    """
    features, width = _full_width_host(host_features, host_name)
    chosen = [name for name in CPU_CODE_VARIABLES if name in environ]
    if chosen == ["NUMBA_CPU_FEATURES"] and features is not None and environ["NUMBA_CPU_FEATURES"] == features:
        return None, width  # set by numbacnn in a parent process (sweep worker, subprocess): the same code
    if chosen:
        return None, f"as {', '.join(chosen)} set here"
    return features, width


def _full_width_host(host_features: dict[str, bool] | None, host_name: str | None) -> tuple[str | None, str]:
    """:func:`full_width_features` for an environment that sets none of the variables."""
    try:
        if host_features is None or host_name is None:
            import llvmlite.binding as llvm

            host_features = llvm.get_host_cpu_features() if host_features is None else host_features
            host_name = llvm.get_host_cpu_name() if host_name is None else host_name
    except (ImportError, RuntimeError):  # no llvmlite, or LLVM cannot read this CPU's features
        return None, "LLVM's choice (the CPU's features could not be read)"
    if not host_features.get("avx512f"):
        return None, "256-bit or narrower (no AVX-512)"
    if host_name in NUMBA_NO_AVX_CPUS:
        return None, f"Numba's choice (it turns AVX off on CPUs named {host_name!r})"
    features = ",".join(("+" if enabled else "-") + name for name, enabled in sorted(host_features.items()))
    return f"{features},{FULL_WIDTH_FEATURE}", "512-bit (AVX-512; set NUMBA_CPU_FEATURES= for LLVM's choice)"


def _prefer_full_vectors(environ: dict[str, str] | os._Environ) -> None:
    """Sets NUMBA_CPU_FEATURES from :func:`full_width_features` before Numba reads it (or
    Numba's config, when Numba was imported first but has compiled nothing yet), and
    records the width in :data:`VECTOR_WIDTH`. Runs once per process."""
    if VECTOR_WIDTH:
        return
    features, width = full_width_features(environ)
    if features is not None and "numba" in sys.modules:
        from numba.core import config, registry

        # Numba's code generator reads the features once, when the CPU target's context is
        # made (a private cached property: if Numba renames it, this says "compiled already",
        # the safe side; asking for the public one would make the context)
        made = "_toplevel_target_context" in vars(registry.cpu_target)
        if made or not hasattr(type(registry.cpu_target), "_toplevel_target_context"):
            features, width = None, "LLVM's choice (Numba compiled code before numbacnn was imported)"
        else:
            config.CPU_FEATURES = features
    if features is not None:
        # inherited by child processes (sweep workers, the tests' subprocesses): the same code there
        environ["NUMBA_CPU_FEATURES"] = features
    VECTOR_WIDTH.append(width)


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


__all__ = ["CACHE_NOTE", "CPU_CODE_VARIABLES", "ENVIRONMENT_PROBLEMS", "FULL_WIDTH_FEATURE", "VECTOR_WIDTH",
           "full_width_features", "numba_cache_usable", "prepare_numba", "user_cache_dir"]
