"""Kernels compile once per dtype and are cached on disk (cache=True): a second
process loads them instead of recompiling, and computes bit for bit what the first
process (which compiled them) computed (see ``numbacnn/kernels/linking.py``).

The three slow claims (training steps, the train command, the thread count) share one
pair of processes (the ``cold_and_warm`` fixture): the first, on one thread with an
empty cache, runs all three workloads and so compiles every kernel they need; the
second, on two threads with that cache, runs them again and loads every kernel. Each
test checks its own workload's results from the pair. (Three pairs compiled the
kernels the workloads share three times: CI time is budgeted.)
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

PROBE = textwrap.dedent("""
    import numpy as np
    import numbacnn.functional as F
    from numbacnn.kernels.cpu.conv import conv2d_forward
    F.conv2d(np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32))
    stats = conv2d_forward.stats
    print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
""")


def test_second_process_loads_kernels_from_the_disk_cache(tmp_path):
    # its own cache folder: another pytest worker may write the shared one meanwhile
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba_cache"))
    runs = [subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env)
            for _ in range(2)]
    hits, misses = (int(v) for v in runs[1].stdout.split())
    assert hits >= 1 and misses == 0, f"second process recompiled: hits={hits} misses={misses}"


DAMAGE_PROBE = textwrap.dedent("""
    import numpy as np
    import numbacnn.functional as F
    from numbacnn.kernels.cpu.conv import conv2d_forward
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = F.conv2d(x, w)  # no padding: the general kernel, conv2d_forward
    stats = conv2d_forward.stats
    print(y.tobytes().hex(), sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
""")


def test_a_damaged_disk_cache_entry_compiles_again(tmp_path):
    """numbacnn/kernels/disk_cache.py: truncated index and data files (a damaged
    cache folder) are cache misses: the kernel compiles again, gives the cold run's
    result bit for bit, and its entry is written anew, so the next process loads it."""
    cache = tmp_path / "numba_cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))

    notes = []

    def run():
        done = subprocess.run([sys.executable, "-c", DAMAGE_PROBE], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        notes.append([line for line in done.stderr.splitlines() if "damaged entry" in line])
        result, hits, misses = done.stdout.split()
        return result, int(hits), int(misses)

    cold = run()
    entries = sorted(cache.rglob("*.nb[ic]"))
    assert {p.suffix for p in entries} == {".nbi", ".nbc"}, entries
    for n, path in enumerate(entries):  # data files cut short; indexes cut short or emptied
        path.write_bytes(path.read_bytes()[:(40 if n % 2 else 0) if path.suffix == ".nbi" else 100])
    damaged = run()
    warm = run()
    assert damaged[0] == cold[0] == warm[0]  # the same float32 output bytes
    assert damaged[2] >= 1, "the damaged entry was not compiled again"
    assert warm[1] >= 1 and warm[2] == 0, f"the entry was not written anew: hits={warm[1]} misses={warm[2]}"
    # one line says why the damaged run compiled; the others say nothing
    assert [len(lines) for lines in notes] == [0, 1, 0], notes
    assert notes[1][0].startswith("numbacnn: note: a damaged entry in Numba's disk cache ("), notes[1]


def test_kernel_factories_close_over_sizes_only():
    """A kernel built by a factory (``lru_cache``, its sizes compiled in) is found in
    Numba's disk cache by a key that hashes what its closure holds. A jitted function
    in that closure pickles differently in every process, so such a kernel missed the
    cache and compiled again at every start (the strided conv1's gathered forward:
    1.7 s of every stride-2 training's first step, until its helper moved to module
    level). So a factory defines one jitted function, its kernel; the helpers the
    kernel inlines are module-level functions that take the sizes as arguments."""
    import ast
    import pathlib

    import numbacnn.kernels

    offenders = []
    for path in sorted(pathlib.Path(numbacnn.kernels.__file__).parent.rglob("*.py")):
        for factory in ast.parse(path.read_text()).body:
            if not isinstance(factory, ast.FunctionDef):
                continue
            jitted = [f.name for f in ast.walk(factory) if isinstance(f, ast.FunctionDef) and f is not factory
                      and any("jit" in ast.unparse(d) for d in f.decorator_list)]
            if len(jitted) > 1:
                offenders.append(f"{path.name}:{factory.lineno} {factory.name} defines {jitted}")
    assert not offenders, offenders


def _linked_libraries(library) -> list:
    """Every library ``library`` links, directly or through another, once each."""
    found, todo = [], list(library._linking_libraries)
    while todo:
        linked = todo.pop()
        if all(linked is not seen for seen in found):
            found.append(linked)
            todo.extend(linked._linking_libraries)
    return found


def test_a_parallel_kernels_wrappers_are_linked_not_compiled_on_their_own():
    """numbacnn/kernels/linking.py: of the libraries a ``parallel=True`` kernel links,
    the gufunc's two wrappers are only linked (no optimisation or machine code of their
    own: half of a conv kernel's LLVM time), the kernel computes what it should, and
    asking such a library for a function still compiles it then."""
    import numbacnn.kernels  # noqa: F401  (applies the patch)
    from numba import njit, prange

    @njit(parallel=True)
    def doubled(x):
        out = np.empty_like(x)
        for i in prange(x.shape[0]):
            out[i] = 2.0 * x[i] + 1.0
        return out

    x = np.arange(1000.0)
    np.testing.assert_array_equal(doubled(x), 2.0 * x + 1.0)
    linked = _linked_libraries(doubled.overloads[doubled.signatures[0]].library)
    linked_only = [lib for lib in linked if getattr(lib, "_numbacnn_linked_only", False)]
    names = [lib.name for lib in linked_only]  # (and small helpers Numba links, such as its allocator)
    assert "parallelgufuncwrapper" in names and any("_GufuncWrapper" in name for name in names), \
        [(lib.name, getattr(lib, "_numbacnn_linked_only", None)) for lib in linked]
    wrapper = next(lib for lib in linked_only if lib.name == "parallelgufuncwrapper")
    [entry] = [f.name for f in wrapper._final_module.functions if not f.is_declaration and f.name.startswith(".kernel")]
    assert wrapper.get_pointer_to_function(entry) != 0 and not wrapper._numbacnn_linked_only
    np.testing.assert_array_equal(doubled(x), 2.0 * x + 1.0)


# The three workloads, each a function of the folder it writes its results to.
#
# Two Tiny VGG training steps (SGD with momentum, then Adam) and a strided convolution,
# through the public API only, so the test keeps guarding whatever kernels the
# functional API picks.
TRAINING_STEPS = textwrap.dedent("""
    def training_steps(out):
        import numpy as np
        import numbacnn.functional as F
        from numbacnn.models import tiny_vgg
        from numbacnn.optim import SGD, Adam

        rng = np.random.default_rng(7)
        results = {}
        images = rng.standard_normal((6, 1, 28, 28)).astype(np.float32)
        labels = rng.integers(0, 10, 6)
        model = tiny_vgg(in_channels=1, num_classes=10, image_size=28, padding=1, seed=3)
        for name, optimizer in [("sgd", SGD(model.parameters(), lr=0.05, momentum=0.9)),
                                ("adam", Adam(model.parameters(), lr=1e-3))]:
            for step in range(2):
                logits = model(images)
                loss, grad = F.softmax_cross_entropy(logits, labels)
                optimizer.zero_grad()
                model.backward(grad, input_grad=False)
                optimizer.step()
                results[f"{name}{step}_logits"] = logits
                results[f"{name}{step}_loss"] = np.float64(loss)
        for name, p in model.named_parameters():
            results["param_" + name] = p.data
        # a general (non fast-path) convolution: stride 2, dilation 2, groups 2, float64
        x = rng.standard_normal((2, 4, 11, 9))
        w = rng.standard_normal((6, 2, 3, 2))
        y = F.conv2d(x, w, rng.standard_normal(6), stride=2, padding=1, dilation=2, groups=2)
        results["general_y"] = y
        results.update(zip(["general_dx", "general_dw", "general_db"],
                           F.conv2d_backward(np.ones_like(y), x, w, stride=2, padding=1, dilation=2, groups=2)))
        np.savez(out / "training_steps.npz", **results)
""")

# Five SGD steps of a 5x5 and a 3x3 Tiny VGG (fused path) and of a 64x64 one without
# padding through the unfused layers, in float64; writes a hash of every parameter.
THREAD_STEPS = textwrap.dedent("""
    def thread_steps(out):
        import hashlib, numpy as np
        import numbacnn.functional as F
        import numbacnn.nn.fusion as fusion
        from numbacnn.models import tiny_vgg
        from numbacnn.optim import SGD
        digest = hashlib.sha256()
        for kernel, size, padding, fused in ((5, 28, 1, True), (3, 28, 1, True), (3, 64, 0, False)):
            fusion.set_enabled(fused)
            channels = 1 if size == 28 else 3
            # float64: a different grouping of the partial sums shows in the last bits at once
            # (in float32 it shows only after many steps, once a rounding flips)
            model = tiny_vgg(channels, 10, size, kernel_size=kernel, padding=padding, seed=2, dtype=np.float64)
            optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
            rng = np.random.default_rng(5)
            for step in range(5):
                x = rng.standard_normal((24, channels, size, size))
                loss, grad = F.softmax_cross_entropy(model(x), rng.integers(0, 10, 24))
                optimizer.zero_grad()
                model.backward(grad, input_grad=False)
                optimizer.step()
            for p in model.parameters():
                digest.update(p.data.tobytes())
        fusion.set_enabled(True)
        (out / "thread_steps.sha256").write_text(digest.hexdigest())
""")

# The train command, as `numbacnn train` runs it (numbacnn.cli.main is the console
# script's entry point), on a generated 28x28 dataset: the model training_steps trains
# (most of its kernels compiled once for both workloads).
TRAIN_COMMAND = textwrap.dedent("""
    def train_command(out, data):
        from numbacnn.cli import main
        code = main(["train", "--dataset", "mnist", "--data-dir", data, "--epochs", "1", "--batch-size", "8",
                     "--val-fraction", "0", "--device", "cpu", "--out", str(out / "train"), "--no-progress"])
        assert code == 0, f"numbacnn train exited {code}"
""")

# The three workloads in one process; prints the numbacnn kernels' cache hits and misses.
WORKLOADS = TRAINING_STEPS + THREAD_STEPS + TRAIN_COMMAND + textwrap.dedent("""
    import gc, sys
    from pathlib import Path
    out = Path(sys.argv[1])
    training_steps(out)
    thread_steps(out)
    train_command(out, sys.argv[2])

    from numba.core.dispatcher import Dispatcher
    kernels = [d for d in gc.get_objects() if isinstance(d, Dispatcher)
               and d.py_func.__module__.startswith("numbacnn.")]
    print(sum(sum(d.stats.cache_hits.values()) for d in kernels),
          sum(sum(d.stats.cache_misses.values()) for d in kernels))
""")


@pytest.fixture(scope="module")
def cold_and_warm(tmp_path_factory):
    """{"empty_cache": folder, "warm_cache": folder} of the workloads' results, and
    {run: (cache hits, cache misses)}: the first process on one thread with an empty
    cache, the second on two threads with the cache the first filled."""
    from test_data import write_fake_idx_dataset

    root = tmp_path_factory.mktemp("cache")
    data = write_fake_idx_dataset(root / "mnist", n_train=40, n_test=10, size=28)
    folders, counts = {}, {}
    for run, threads in (("empty_cache", "1"), ("warm_cache", "2")):
        folders[run] = root / run
        folders[run].mkdir()
        done = subprocess.run([sys.executable, "-c", WORKLOADS, str(folders[run]), str(data)], capture_output=True,
                              text=True, timeout=900, env=dict(os.environ, NUMBA_NUM_THREADS=threads,
                                                               NUMBA_CACHE_DIR=str(root / "numba_cache")))
        assert done.returncode == 0, done.stderr
        counts[run] = tuple(int(v) for v in done.stdout.split()[-2:])
    return folders, counts


@pytest.mark.slow
def test_first_run_and_cached_run_are_bit_identical(cold_and_warm):
    folders, counts = cold_and_warm
    (hits_cold, misses_cold), (hits_warm, misses_warm) = counts["empty_cache"], counts["warm_cache"]
    assert misses_cold > 0 and hits_cold == 0, f"the first run did not compile: {counts}"
    # (a helper compiled only as part of its callers counts as a miss in the first run and
    # is not needed at all in the second, so hits_warm may be below misses_cold)
    assert hits_warm > 0 and misses_warm == 0, f"the second run did not load everything: {counts}"

    cold = np.load(folders["empty_cache"] / "training_steps.npz")
    warm = np.load(folders["warm_cache"] / "training_steps.npz")
    assert sorted(cold.files) == sorted(warm.files)
    differing = [name for name in cold.files
                 if cold[name].dtype != warm[name].dtype or cold[name].tobytes() != warm[name].tobytes()]
    worst = {name: float(np.max(np.abs(cold[name].astype(np.float64) - warm[name]))) for name in differing}
    assert not differing, f"compiled and cached kernels disagree (max abs difference): {worst}"


@pytest.mark.slow
def test_train_command_gives_identical_metrics_with_an_empty_and_a_warm_cache(cold_and_warm):
    """The README's promise through the command a user runs: the first run (every
    kernel compiled) and the second (every kernel loaded) write the same losses,
    accuracies and weights."""
    import json

    folders, _ = cold_and_warm
    runs = [folders[run] / "train" for run in ("empty_cache", "warm_cache")]

    def without_timings(value):
        """metrics.json without its wall-clock figures (seconds, images per second)."""
        if isinstance(value, dict):
            return {k: without_timings(v) for k, v in value.items() if "second" not in k}
        if isinstance(value, list):
            return [without_timings(v) for v in value]
        return value

    def metrics(run):
        return without_timings(json.loads((run / "metrics.json").read_text()))

    first, second = (metrics(run) for run in runs)
    assert first["history"][0]["train_loss"] == second["history"][0]["train_loss"]  # the figure the issue saw
    assert first == second
    with np.load(runs[0] / "checkpoint.npz") as a, np.load(runs[1] / "checkpoint.npz") as b:
        weights = [k for k in a.files if a[k].dtype.kind == "f"]
        assert weights
        assert [k for k in weights if a[k].tobytes() != b[k].tobytes()] == []


@pytest.mark.slow
def test_training_does_not_depend_on_the_thread_count(cold_and_warm):
    """The weight gradient's partial sums are a fixed number of chunks, not one per
    thread, so 1 thread and 2 threads train bit-identical weights (a sweep's 1-thread
    workers and a 2-thread process agree). With an empty cache, the 1-thread process
    compiles every kernel and the 2-thread one loads them: the 5x5 kernels, compiled
    with 'reassoc', failed that (see fused.conv_rows_kernel)."""
    folders, _ = cold_and_warm
    digests = [(folders[run] / "thread_steps.sha256").read_text() for run in ("empty_cache", "warm_cache")]
    assert len(digests[0]) == 64 and digests[0] == digests[1]
