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

Libraries that are only linked
-------------------------------
The same chain made every ``parallel=True`` kernel compile four times over: the
gufunc, its loop wrapper ("__gufunc__") and the thread-pool wrapper
("parallelgufuncwrapper") are three libraries, each linking the one before, and
Numba finalizes a library as soon as another one links it: every full optimisation
of the module (its linked copies included) and machine code for the JIT. The two
wrappers' machine code is never run (the kernel's library links copies of both,
optimised again, and calls those), yet they took half of the LLVM time of a 3x3
conv kernel (2.3 of 4.5 s: LLVM's pass timings, ``NUMBA_LLVM_PASS_TIMINGS=1``).

So a library that is first finalized *because another one links it* is only linked
(its own linked libraries copied in): not optimised, not turned into machine code.
The library that links it optimises the whole module once and is what runs (and
what ``cache=True`` writes). If anything later asks such a library for machine code
(a function pointer, assembly, its object code), it is optimised and compiled then,
as Numba would have done. A library asked for its function first (every
``@njit`` function, the gufunc itself: Numba asks for its wrapper right after
compiling it) is finalized as before.

This is applied once, when ``numbacnn.kernels`` is imported (every CPU kernel lives
below it, so no kernel compiles before it). It changes Numba's CPU code libraries
for the whole process; CUDA code is not affected. ``tests/test_cache.py`` runs the
public API in fresh processes with an empty and then a warm cache and compares
results bit for bit.
"""

import llvmlite.binding as ll
from numba.core import codegen
from numba.core.compiler_lock import global_compiler_lock, require_global_compiler_lock

_PATCHED_FLAG = "_numbacnn_internalizes_linked_copies"
# set on a library that was finalized only to be linked: no optimisation, no machine code yet
_LINKED_ONLY = "_numbacnn_linked_only"


def _internalize_linked_copies(module: ll.ModuleRef) -> None:
    """Give every ``linkonce_odr`` function defined in ``module`` internal linkage."""
    for function in module.functions:
        if not function.is_declaration and function.linkage == ll.Linkage.linkonce_odr:
            function.linkage = ll.Linkage.internal


def _finalize_for_linking(library: codegen.CPUCodeLibrary) -> None:
    """Numba's ``finalize`` up to its optimisation: copy in the libraries ``library``
    links, then close it to additions. Its module keeps its per-function optimisation
    (done as each IR module was added); the module-wide one is left to its linker."""
    require_global_compiler_lock()
    library._raise_if_finalized()
    seen = set()
    for linked in library._linking_libraries:
        if linked not in seen:
            library._reload_init.update(linked._reload_init)  # as Numba: the parent inherits it
            seen.add(linked)
            library._final_module.link_in(linked._get_module_for_linking(), preserve=True)
    library._finalize_dynamic_globals()  # what Numba's cache asks (has_dynamic_globals) stays true
    library._finalized = True
    setattr(library, _LINKED_ONLY, True)


def _compile_if_linked_only(library: codegen.CPUCodeLibrary) -> None:
    """The rest of Numba's ``finalize`` for a library that was only linked: optimise
    its module and add it to the JIT (machine code), once."""
    if not getattr(library, _LINKED_ONLY, False):
        return
    with global_compiler_lock:  # (re-entrant: Numba's own callers hold it already)
        if getattr(library, _LINKED_ONLY, False) is not True:  # compiled meanwhile, or being compiled
            return  # (by this thread: NUMBA_DUMP_OPTIMIZED asks for the IR while finalizing)
        setattr(library, _LINKED_ONLY, "compiling")
        try:
            library._optimize_final_module()
            library._final_module.verify()
            library._finalize_final_module()
        except BaseException:
            setattr(library, _LINKED_ONLY, True)
            raise
        setattr(library, _LINKED_ONLY, False)  # only once it has machine code


def use_own_linked_copies() -> None:
    """Patch Numba's CPU code library (once per process; idempotent) so each library
    calls the copies of other libraries' functions linked into it, and a library
    finalized only to be linked is neither optimised nor compiled on its own (see
    module doc)."""
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

    def add_linking_library(self, library):
        if not library._finalized:  # linked before anyone asked for its code: only linked
            _finalize_for_linking(library)
        self._linking_libraries.append(library)

    library_class.add_linking_library = add_linking_library

    # everything that needs a library's machine code (or its optimised module) first
    # compiles a library that was only linked
    for name in ("get_pointer_to_function", "get_asm_str", "get_llvm_str", "get_function_cfg", "get_disasm_cfg",
                 "serialize_using_object_code", "serialize_using_bitcode", "emit_native_object", "emit_bitcode"):
        for owner in (codegen.JITCodeLibrary, library_class):
            if name in vars(owner):
                setattr(owner, name, _compiling_first(getattr(owner, name)))
                break
    setattr(library_class, _PATCHED_FLAG, True)


def _compiling_first(method):
    def method_of_a_compiled_library(self, *args, **kwargs):
        _compile_if_linked_only(self)
        return method(self, *args, **kwargs)

    method_of_a_compiled_library.__name__ = method.__name__
    method_of_a_compiled_library.__doc__ = method.__doc__
    return method_of_a_compiled_library
