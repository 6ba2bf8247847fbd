"""A damaged entry in Numba's on-disk kernel cache is a cache miss, not a crash.

Every CPU kernel is ``cache=True``: Numba keeps, per kernel, an index file
(``<name>-<line>.pyXY.nbi``: which signatures are cached, in which data file) and
one data file per signature (``.nbc``: the pickled object code), under
``NUMBA_CACHE_DIR`` or ``__pycache__``. Numba writes both atomically (a temporary
file, then ``os.replace``), but a file can still be damaged afterwards: a disk that
filled while a backup was restored, a cache folder copied from another machine by
a tool that truncated it, a crashed file system.

Numba 0.68 treats only a *missing* file as a miss (``IndexDataCacheFile.load``
catches ``OSError``); a truncated or garbled one raises from ``pickle`` (an
``UnpicklingError``, ``EOFError``, or whatever the garbage decodes to) at the
kernel's first call, so ``numbacnn train`` stopped with an internal error until
the user found and deleted the cache. Here an index or data file that cannot be
unpickled counts as absent: the kernel compiles again, as with an empty cache, and
Numba writes the entry anew (the next process loads it). Results are those of a
cold start, bit for bit (``kernels/linking.py``). Errors reading the file itself
(``OSError``: permissions, a vanished folder) are left to Numba, as before.

The first damaged entry in a process prints one line on stderr (``numbacnn: note:
...``: the user learns why this start compiles); ``NUMBA_DEBUG_CACHE=1`` prints each.
The patch is on Numba's cache reader, so it serves every ``cache=True`` function in
the process, numbacnn's or not.
"""

import pickle
import sys

from numba.core import caching

_PATCHED_FLAG = "_numbacnn_damaged_entries_are_misses"

# What unpickling cut or garbled bytes raises. Not OSError (reading the file: Numba's
# own handling), not MemoryError or anything else (a real fault, not damage to report).
DAMAGE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
          KeyError, OverflowError)
_NOTED: list[str] = []  # the one note printed in this process


def _note(path: str, error: Exception) -> None:
    caching._cache_log("[cache] damaged %r (%s: %s), read as missing", path, type(error).__name__, error)
    if not _NOTED:
        _NOTED.append(f"numbacnn: note: a damaged entry in Numba's disk cache ({path}: {type(error).__name__}) "
                      "is compiled again and rewritten")
        print(_NOTED[0], file=sys.stderr)


def treat_damaged_entries_as_misses() -> None:
    """Patch Numba's cache file reader (once per process; idempotent) so an index
    or data file that cannot be unpickled reads as absent (see module doc)."""
    reader = caching.IndexDataCacheFile
    if getattr(reader, _PATCHED_FLAG, False):
        return
    numba_load_index, numba_load_data = reader._load_index, reader._load_data

    def _load_index(self):
        try:
            return numba_load_index(self)
        except DAMAGE as error:
            _note(self._index_path, error)
            return {}  # no entry: each kernel compiles and Numba writes a new index

    def _load_data(self, name):
        try:
            return numba_load_data(self, name)
        except DAMAGE as error:
            _note(self._data_path(name), error)
            # Numba's load() already treats an OSError here as "file removed meanwhile"
            raise FileNotFoundError(self._data_path(name)) from error

    reader._load_index, reader._load_data = _load_index, _load_data
    setattr(reader, _PATCHED_FLAG, True)
