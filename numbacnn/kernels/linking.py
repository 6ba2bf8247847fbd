"""Make a kernel compiled in this process run the same machine code as the same
kernel loaded from Numba's on-disk cache, so a first run (empty cache) and every
later run (cache loaded) give bit-identical results.

Why they differed
-----------------
A ``parallel=True`` kernel is compiled as two code libraries: the ``prange`` body
becomes a "gufunc" library, compiled, optimised and loaded into the JIT on its own;
the kernel's library then links in a copy of the gufunc's (already optimised) IR,
marked ``linkonce_odr``, and optimises the whole module again. That copy is what the
kernel's object code contains and what ``cache=True`` writes to disk.

``linkonce_odr`` becomes a *weak* symbol in the object file, and the JIT's linker
binds a weak symbol to a strong definition that is already loaded. So:

- first process (empty cache): the kernel's call to its gufunc binds to the
  standalone gufunc loaded a moment earlier (optimised once);
- later processes (cache loaded): no standalone gufunc exists, so the call binds to
  the copy inside the cached object (optimised twice).

The two are the same source, but the CPU kernels use ``fastmath`` with ``reassoc``
(``kernels/common.py``: needed to vectorise their reductions), which lets each LLVM
optimisation pass regroup sums; the second pass regroups some differently, so the
two machine codes round differently (conv outputs up to 1.9e-6 apart in float32, a
different training loss). Without ``parallel=True`` or without ``reassoc`` (with
``nsz``) the copies agree, which is how the cause was narrowed down.

The fix
-------
Before a CPU library is loaded into the JIT, every ``linkonce_odr`` function it
holds (a linked-in copy of another library's function) gets ``internal`` linkage.
An internal symbol is resolved inside its own object, so the kernel always calls
its own copy: the first process runs exactly the object code it writes to the
cache, and a later process runs exactly what it loads. Only the linkage changes,
after all optimisation, so the code of every function is what Numba produced.

It also removes a latent hazard of weak symbols: gufunc names come from
``hash(parfor)`` (an object id), so two cached kernels built in different
processes could carry the same weak name and one would silently run the other's
code.

This is applied once, when ``numbacnn.kernels`` is imported (every CPU kernel lives
below it, so no kernel compiles before it). It changes Numba's CPU code libraries
for the whole process; CUDA code is not affected. ``tests/test_cache.py`` runs the
public API in fresh processes with an empty and then a warm cache and compares
results bit for bit.
"""

import llvmlite.binding as ll
from numba.core import codegen

_PATCHED_FLAG = "_numbacnn_internalizes_linked_copies"


def _internalize_linked_copies(module: ll.ModuleRef) -> None:
    """Give every ``linkonce_odr`` function defined in ``module`` internal linkage."""
    for function in module.functions:
        if not function.is_declaration and function.linkage == ll.Linkage.linkonce_odr:
            function.linkage = ll.Linkage.internal


def use_own_linked_copies() -> None:
    """Patch Numba's CPU code library (once per process; idempotent) so each library
    calls the copies of other libraries' functions linked into it (see module doc)."""
    library_class = codegen.CPUCodeLibrary
    if getattr(library_class, _PATCHED_FLAG, False):
        return
    numba_finalize = library_class._finalize_final_module

    def _finalize_final_module(self):
        # A library loaded from the cache has an empty final module here: its object
        # code was written by a process that already ran this (or by an older
        # numbacnn, whose weak copies are then the only definitions, which gives the
        # same code).
        _internalize_linked_copies(self._final_module)
        numba_finalize(self)

    library_class._finalize_final_module = _finalize_final_module
    setattr(library_class, _PATCHED_FLAG, True)
