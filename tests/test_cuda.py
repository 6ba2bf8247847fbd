"""The CUDA backend: agreement with the CPU backend, determinism, placement, errors.

The conformance tests (test_functional, test_gradcheck, test_properties, ...) run
every op on "cuda" too, through the ``device`` fixture. This file adds what only
concerns CUDA. Without a GPU it runs in Numba's CUDA simulator (conftest.py sets
``NUMBA_ENABLE_CUDASIM=1``), on small shapes; with a GPU the same tests run on
larger ones, plus a Tiny VGG-sized check.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numbacnn
import numbacnn.functional as F
from helpers import (CUDA_SIMULATED, DTYPES, assert_close, available_devices, max_spatial_size, on_device,
                     random_array)
from numbacnn.device import DeviceError, backend

device_module = importlib.import_module("numbacnn.device")

needs_cuda = pytest.mark.skipif("cuda" not in available_devices(), reason="CUDA backend not usable here")

SIZE = max_spatial_size("cuda")  # 7 under the simulator


def to_cuda(*arrays):
    return [numbacnn.to_device(a, "cuda") if isinstance(a, np.ndarray) else a for a in arrays]


# --------------------------------------------------------------------------- #
# CPU vs CUDA
# --------------------------------------------------------------------------- #

# (x shape, w shape, hyperparameters, takes the tiled forward path)
CONV_CASES = [
    # Tiny VGG layers: 3x3, padding 1; sizes that do not divide the tile, filters
    # that do not divide FILTERS_PER_BLOCK
    ((2, 3, SIZE, SIZE - 2), (5, 3, 3, 3), dict(padding=1), True),
    ((1, 1, SIZE, SIZE), (1, 1, 3, 3), dict(padding=0), True),
    ((3, 2, SIZE + 1, SIZE), (9, 2, 1, 1), dict(), True),
    ((1, 2, SIZE, SIZE + 2), (3, 2, 7, 7), dict(padding=3), True),
    ((2, 3, SIZE, SIZE), (4, 3, 2, 3), dict(stride=2, padding=(1, 0)), True),
    ((1, 2, SIZE, SIZE), (2, 2, 3, 3), dict(stride=(1, 2), padding=1), True),
    ((2, 2, SIZE, SIZE), (2, 2, 4, 4), dict(padding="same"), True),  # asymmetric "same" padding
    # the general kernel: stride 3, dilation, groups, kernels larger than 7
    ((2, 2, SIZE, SIZE), (3, 2, 3, 3), dict(stride=3, padding=1), False),
    ((1, 4, SIZE, SIZE), (4, 2, 3, 2), dict(dilation=(2, 1), groups=2, padding=(2, 1)), False),
    ((1, 1, SIZE + 2, SIZE + 1), (2, 1, 9, 8), dict(padding=(4, 3)), False),
]


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,w_shape,hyper,tiled", CONV_CASES)
def test_conv2d_cuda_matches_cpu(rng, dtype, x_shape, w_shape, hyper, tiled):
    from numbacnn.kernels.cuda.conv import uses_tiled_forward
    from numbacnn.shapes import conv2d_geometry

    geometry = conv2d_geometry(x_shape, w_shape, hyper.get("stride", 1), hyper.get("padding", 0),
                               hyper.get("dilation", 1), hyper.get("groups", 1), "conv2d")
    stride_h, stride_w, _, _, dilation_h, dilation_w, groups = geometry.kernel_args()
    assert uses_tiled_forward(w_shape, stride_h, stride_w, dilation_h, dilation_w, groups) == tiled
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    b = random_array(rng, w_shape[:1], dtype)
    y_cpu = F.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **hyper)
    assert_close(on_device("cuda", F.conv2d, x, w, b, **hyper), y_cpu, dtype, "y")
    gy = random_array(rng, y_cpu.shape, dtype)
    expected = F.conv2d_backward(gy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), **hyper)
    for got, want, name in zip(on_device("cuda", F.conv2d_backward, gy, x, w, **hyper), expected, ("gx", "gw", "gb")):
        assert_close(got, want, dtype, name)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_vgg_step_cuda_matches_cpu(rng, dtype):
    """conv-relu-conv-relu-pool, flatten-linear, loss and the whole backward pass."""
    size, filters, classes, batch = SIZE + 1, 3, 4, 2
    x = random_array(rng, (batch, 3, size, size), dtype)
    w1, w2 = random_array(rng, (filters, 3, 3, 3), dtype), random_array(rng, (filters, filters, 3, 3), dtype)
    b1, b2 = random_array(rng, (filters,), dtype), random_array(rng, (filters,), dtype)
    features = filters * (size // 2) ** 2
    wl, bl = random_array(rng, (classes, features), dtype), random_array(rng, (classes,), dtype)
    labels = rng.integers(0, classes, batch)

    def step(x, w1, b1, w2, b2, wl, bl, labels):
        h1 = F.conv2d(x, w1, b1, padding=1)
        a1 = F.relu(h1)
        h2 = F.conv2d(a1, w2, b2, padding=1)
        a2 = F.relu(h2)
        p = F.max_pool2d(a2, 2)
        logits = F.linear(p.reshape(batch, features), wl, bl)
        loss, glogits = F.softmax_cross_entropy(logits, labels)
        gp, gwl, gbl = F.linear_backward(glogits, p.reshape(batch, features), wl)
        ga2 = F.max_pool2d_backward(gp.reshape(p.shape), a2, 2)
        gh2 = F.relu_backward(ga2, h2)
        ga1, gw2, gb2 = F.conv2d_backward(gh2, a1, w2, padding=1)
        gh1 = F.relu_backward(ga1, h1)
        _, gw1, gb1 = F.conv2d_backward(gh1, x, w1, padding=1, input_grad=False)
        return loss, logits, gwl, gbl, gw2, gb2, gw1, gb1

    arrays = (x, w1, b1, w2, b2, wl, bl)
    expected = step(*[a.astype(np.float64) for a in arrays], labels)
    got = on_device("cuda", step, *arrays, labels)
    assert abs(got[0] - expected[0]) <= (2e-5 if dtype == np.float32 else 1e-12) * max(1.0, abs(expected[0]))
    names = ("logits", "gwl", "gbl", "gw2", "gb2", "gw1", "gb1")
    for g, e, name in zip(got[1:], expected[1:], names):
        assert_close(g, e, dtype, name)


@needs_cuda
@pytest.mark.skipif(CUDA_SIMULATED, reason="Tiny VGG's 64x64 layers are too big for the CUDA simulator")
@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_vgg_sized_layers_on_a_real_gpu(rng, dtype):
    x = random_array(rng, (4, 10, 64, 64), dtype)
    w = random_array(rng, (10, 10, 3, 3), dtype)
    b = random_array(rng, (10,), dtype)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    assert_close(on_device("cuda", F.conv2d, x, w, b, padding=1), F.conv2d(x64, w64, b64, padding=1), dtype, "y")
    gy = random_array(rng, (4, 10, 64, 64), dtype)
    expected = F.conv2d_backward(gy.astype(np.float64), x64, w64, padding=1)
    for got, want, name in zip(on_device("cuda", F.conv2d_backward, gy, x, w, padding=1), expected, ("gx", "gw", "gb")):
        assert_close(got, want, dtype, name)
    assert_close(on_device("cuda", F.max_pool2d, x, 2), F.max_pool2d(x64, 2), dtype, "pool")


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_kernels_match_cpu(rng, dtype):
    cpu, cuda = backend("cpu"), backend("cuda")
    n = 37
    arrays = {k: random_array(rng, (n,), dtype) for k in ("param", "grad", "velocity", "m")}
    arrays["v"] = np.abs(random_array(rng, (n,), dtype))

    def run(kernels, move):
        a = {k: move(v.copy()) for k, v in arrays.items()}
        kernels.sgd_step(a["param"], a["grad"], a["velocity"], 0.1, 0.9, 0.0, 1e-2, True)
        kernels.adam_step(a["param"], a["grad"], a["m"], a["v"], 1e-3, 0.9, 0.999, 1e-8, 1e-2, True, 0.19, 0.002)
        kernels.adam_step(a["param"], a["grad"], a["m"], a["v"], 1e-3, 0.9, 0.999, 1e-8, 1e-2, False, 0.271, 0.003)
        kernels.grad_accumulate(a["grad"], a["velocity"])
        return {k: numbacnn.to_host(v) for k, v in a.items()}

    expected = run(cpu, lambda a: a)
    got = run(cuda, lambda a: numbacnn.to_device(a, "cuda"))
    for name in arrays:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6 if dtype == np.float32 else 1e-13,
                                   atol=1e-7 if dtype == np.float32 else 1e-15, err_msg=name)


@needs_cuda
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_steps_on_cuda_match_cpu(optimizer):
    """Layers, parameter-gradient accumulation (two backward passes per step) and
    optimizer kernels on the GPU give the CPU's numbers."""
    from numbacnn.models import tiny_vgg
    from numbacnn.optim import SGD, Adam

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 8, 8))
    labels = np.array([1, 0, 2])
    states = {}
    for device in ("cpu", "cuda"):
        model = tiny_vgg(in_channels=1, num_classes=3, image_size=8, filters=2, padding=1, dtype=np.float64,
                         seed=0).to(device)
        if optimizer == "sgd":
            opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)
        else:
            opt = Adam(model.parameters(), lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True)
        xd, labelsd = numbacnn.to_device(x, device), numbacnn.to_device(labels, device)
        for _ in range(2):
            opt.zero_grad()
            for _ in range(2):  # two backward passes accumulate into .grad before the step
                _, grad = F.softmax_cross_entropy(model(xd), labelsd)
                model.backward(grad, input_grad=False)
            opt.step()
        assert model.device == device
        states[device] = model.state_dict()
    for name, value in states["cpu"].items():
        assert_close(states["cuda"][name], value, np.float64, name)


# --------------------------------------------------------------------------- #
# determinism
# --------------------------------------------------------------------------- #


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_are_bitwise_identical_across_runs(rng, dtype):
    x = random_array(rng, (3, 3, SIZE, SIZE), dtype)
    w = random_array(rng, (4, 3, 3, 3), dtype)
    gy = random_array(rng, (3, 4, SIZE, SIZE), dtype)
    ties = rng.integers(-1, 2, (3, 3, SIZE, SIZE)).astype(dtype)  # ties: the first-maximum rule
    gp = random_array(rng, (3, 3, SIZE - 2, SIZE - 2), dtype)
    xl, wl, gl = (random_array(rng, s, dtype) for s in ((9, 21), (6, 21), (9, 6)))
    labels = rng.integers(0, 6, 9)
    xd, wd, gyd, tiesd, gpd, xld, wld, gld, labelsd = to_cuda(x, w, gy, ties, gp, xl, wl, gl, labels)

    def run():
        results = list(F.conv2d_backward(gyd, xd, wd, padding=1))
        results += list(F.conv2d_backward(gyd, xd, wd, padding="same"))
        results.append(F.max_pool2d_backward(gpd, tiesd, 3, stride=1))
        results += list(F.linear_backward(gld, xld, wld))
        loss, grad = F.softmax_cross_entropy(gld, labelsd)
        return [numbacnn.to_host(r) for r in results + [grad]], loss

    first, first_loss = run()
    for _ in range(2):
        again, loss = run()
        assert loss == first_loss
        for a, b in zip(first, again):
            assert a.tobytes() == b.tobytes(), "a gradient changed between identical runs"


# --------------------------------------------------------------------------- #
# placement
# --------------------------------------------------------------------------- #


@needs_cuda
def test_results_are_device_arrays_and_nothing_is_copied_to_the_host(rng, monkeypatch):
    x = random_array(rng, (2, 3, 6, 6), np.float32)
    w = random_array(rng, (4, 3, 3, 3), np.float32)
    xl, wl, gl = (random_array(rng, s, np.float32) for s in ((5, 7), (3, 7), (5, 3)))
    labels = np.array([0, 2, 1, 1, 0])
    xd, wd, xld, wld, gld, labelsd = to_cuda(x, w, xl, wl, gl, labels)
    copies = []
    original = type(xd).copy_to_host

    def counting_copy(self, *args, **kwargs):
        copies.append(self.shape)
        return original(self, *args, **kwargs)

    def no_upload(*args, **kwargs):
        raise AssertionError("an op copied a host array to the device")

    from numba import cuda

    monkeypatch.setattr(type(xd), "copy_to_host", counting_copy)
    monkeypatch.setattr(cuda, "to_device", no_upload)
    y = F.conv2d(xd, wd)
    outputs = [y, *F.conv2d_backward(F.relu(y), xd, wd), F.max_pool2d(xd, 2),
               F.max_pool2d_backward(F.max_pool2d(xd, 2), xd, 2), F.relu_backward(xd, xd),
               F.linear(xld, wld), *F.linear_backward(gld, xld, wld)]
    assert copies == []
    for out in outputs:
        assert numbacnn.device_of(out) == "cuda"
    loss, grad = F.softmax_cross_entropy(F.linear(xld, wld), labelsd)
    assert isinstance(loss, float) and numbacnn.device_of(grad) == "cuda"
    # the only copies: the labels for the range check and the per-row losses for the mean
    assert sorted(copies) == [(5,), (5,)]


@needs_cuda
def test_mixed_host_and_device_inputs_are_refused_naming_the_argument(rng):
    x = random_array(rng, (1, 2, 5, 5), np.float64)
    w = random_array(rng, (3, 2, 3, 3), np.float64)
    (wd,) = to_cuda(w)
    with pytest.raises(ValueError, match="x is on cpu but w is on cuda"):
        F.conv2d(x, wd)
    b = np.zeros(3)
    with pytest.raises(ValueError, match="b is on cpu"):
        F.conv2d(*to_cuda(x), wd, b)
    with pytest.raises(ValueError, match="logits is on cuda but labels is on cpu"):
        F.softmax_cross_entropy(*to_cuda(np.zeros((2, 3))), np.array([0, 1]))
    with pytest.raises(ValueError, match="gy is on cpu but x is on cuda"):
        F.relu_backward(np.ones(4), *to_cuda(np.ones(4)))


@needs_cuda
def test_device_labels_are_range_checked_and_any_integer_dtype_works(rng):
    logits = random_array(rng, (4, 3), np.float64)
    (logits_d,) = to_cuda(logits)
    with pytest.raises(ValueError, match="0 <= label < 3"):
        F.softmax_cross_entropy(logits_d, numbacnn.to_device(np.array([0, 1, 3, 0]), "cuda"))
    expected = F.softmax_cross_entropy(logits, np.array([0, 1, 2, 0]))
    for dtype in (np.int32, np.int64, np.uint8):
        loss, grad = F.softmax_cross_entropy(logits_d, numbacnn.to_device(np.array([0, 1, 2, 0], dtype), "cuda"))
        assert abs(loss - expected[0]) < 1e-12
        assert_close(numbacnn.to_host(grad), expected[1], np.float64, "grad")


@needs_cuda
def test_auto_picks_cuda_when_available():
    if device_module.cuda_simulator_enabled():  # auto never picks the simulator (issue 21)
        assert device_module.resolve_device("auto") == "cpu"
        return
    assert device_module.resolve_device("auto") == "cuda"
    with numbacnn.device("auto") as chosen:
        assert chosen == "cuda"
        assert numbacnn.device_of(numbacnn.to_device(np.ones(3))) == "cuda"
        assert numbacnn.device_of(device_module.zeros((2, 3), np.float32)) == "cuda"
    assert numbacnn.get_default_device() == "cpu"


@needs_cuda
def test_non_contiguous_device_arrays_are_refused(rng):
    (xd,) = to_cuda(random_array(rng, (1, 2, 6, 6), np.float64))
    view = xd[:, :, :, ::2]
    with pytest.raises(ValueError, match="non-contiguous CUDA array"):
        F.relu(view)


# --------------------------------------------------------------------------- #
# without numba-cuda
# --------------------------------------------------------------------------- #


def test_missing_numba_cuda_says_how_to_install_it(monkeypatch):
    import numba

    monkeypatch.delattr(numba, "cuda", raising=False)
    monkeypatch.setitem(sys.modules, "numba.cuda", None)  # "import numba.cuda" now fails
    with pytest.raises(DeviceError, match=r'pip install "numbacnn\[cuda\]"'):
        numbacnn.to_device(np.ones(3), "cuda")
    with pytest.raises(DeviceError, match=r'pip install "numbacnn\[cuda\]"'):
        backend("cuda")
    with pytest.raises(DeviceError, match=r'pip install "numbacnn\[cuda\]"'):
        numbacnn.set_default_device("cuda")
    assert device_module.resolve_device("auto") == "cpu"
    assert not numbacnn.cuda_available()


def test_importing_numbacnn_does_not_import_numba_cuda():
    probe = textwrap.dedent("""
        import sys
        import numpy as np
        import numbacnn, numbacnn.functional as F
        F.relu(np.ones(3))
        numbacnn.set_default_device("cpu")
        print("numba.cuda" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------- #
# memory pool (kernels/cuda/memory.py)
# --------------------------------------------------------------------------- #


def _pool():
    return importlib.import_module("numbacnn.kernels.cuda.memory").POOL


def _training_steps(optimizer_name: str, steps: int) -> tuple[list[int], int]:
    """Pool allocations made by each of ``steps`` Tiny VGG training steps on CUDA, and
    the model's number of parameters."""
    import gc

    from numbacnn.models import tiny_vgg
    from numbacnn.optim import SGD, Adam

    gc.collect()
    _pool().empty_cache()  # blocks cached by earlier tests would serve the first step too
    rng = np.random.default_rng(0)
    model = tiny_vgg(in_channels=1, num_classes=3, image_size=8, filters=2, padding=1, dtype=np.float32,
                     seed=0).to("cuda")
    optimizer = {"sgd": lambda p: SGD(p, lr=0.1), "momentum": lambda p: SGD(p, lr=0.1, momentum=0.9),
                 "adam": lambda p: Adam(p, lr=1e-3)}[optimizer_name](model.parameters())
    x = numbacnn.to_device(rng.standard_normal((2, 1, 8, 8)).astype(np.float32), "cuda")
    labels = numbacnn.to_device(np.array([0, 2]), "cuda")
    made = []
    for _ in range(steps):
        before = _pool().allocations
        optimizer.zero_grad()
        _, grad = F.softmax_cross_entropy(model(x), labels)
        model.backward(grad, input_grad=False)
        optimizer.step()
        del grad
        gc.collect()  # the simulator's arrays can sit in reference cycles; a GPU frees them at once
        made.append(_pool().allocations - before)
    return made, len(list(model.parameters()))


@needs_cuda
@pytest.mark.skipif(not CUDA_SIMULATED, reason="on a GPU the pool also serves other allocations")
def test_a_training_step_allocates_device_memory_only_on_its_first_step():
    made, _ = _training_steps("sgd", 4)
    assert made[0] > 0 and made[1:] == [0, 0, 0], made


@needs_cuda
@pytest.mark.skipif(not CUDA_SIMULATED, reason="on a GPU the pool also serves other allocations")
@pytest.mark.parametrize("optimizer_name", ["momentum", "adam"])
def test_optimizer_state_made_in_the_first_step_is_topped_up_once(optimizer_name):
    """The optimizer's buffers (velocity, moments: one or two per parameter) are made at
    the end of the first step from blocks the pool had cached, so the second step makes
    up at most that many; from the third step on nothing is allocated."""
    made, parameters = _training_steps(optimizer_name, 5)
    buffers = {"momentum": 1, "adam": 2}[optimizer_name] * parameters
    assert made[0] > 0 and made[1] <= buffers and made[2:] == [0, 0, 0], made


@needs_cuda
@pytest.mark.skipif(not CUDA_SIMULATED, reason="looks at the simulator's host blocks")
def test_a_pool_block_is_reused_only_when_no_view_of_its_array_is_left():
    import gc

    from numbacnn.kernels.cuda.memory import empty

    pool = _pool()
    shape = (3, 977)  # a size (23448 bytes) no other test uses, so no other block can serve it
    a = empty(shape, np.float64)
    view = a.reshape(-1)[5:]
    del a
    gc.collect()
    allocations = pool.allocations
    b = empty(shape, np.float64)
    assert pool.allocations == allocations + 1  # the view still holds a's block: b needs a new one
    del view, b
    gc.collect()
    reuses = pool.reuses
    c = empty((2931,), np.float64)  # same rounded size: served from the free list
    assert pool.allocations == allocations + 1 and pool.reuses == reuses + 1 and c.shape == (2931,)


def test_the_pool_is_a_numba_emm_plugin_that_reuses_freed_blocks():
    """Outside the simulator (no GPU needed): numbacnn installs PooledMemoryManager as
    Numba's memory manager, and a freed MemoryPointer's block serves the next request
    without a new cudaMalloc (counted through the pool)."""
    probe = textwrap.dedent("""
        import gc
        from numba.cuda.cudadrv import driver
        from numbacnn.kernels.cuda import memory
        assert memory.POOL_ENABLED and driver._memory_manager is memory.PooledMemoryManager
        class Context:
            pass
        context = Context()
        manager = memory.PooledMemoryManager(context=context)
        made = []
        manager.pool._raw_alloc = lambda n: (made.append(n), 0x10000 * len(made))[1]  # stands in for cuMemAlloc
        manager.pool._raw_free = lambda block: None  # and cuMemFree
        manager.get_memory_info = lambda: memory.MemoryInfo(free=1, total=4096)  # and cuMemGetInfo
        manager.initialize()  # sizes the pending host-frees queue, as Numba's manager does
        assert manager.deallocations.memory_capacity == 4096 and manager.interface_version == 1
        first = manager.memalloc(1000)
        view = first.view(0, 10)
        del first
        gc.collect()
        assert manager.pool.stats()["bytes_in_use"] == 1024  # the view keeps the block
        del view
        gc.collect()
        second = manager.memalloc(900)  # same 512-byte rounding: the cached block
        assert made == [1024] and manager.pool.stats()["reuses"] == 1, (made, manager.pool.stats())
        assert int(second.handle) == 0x10000 and memory.pool_stats()["allocations"] == 1
        manager.reset()  # the context goes away: a block freed afterwards must not be reused
        del second
        gc.collect()
        third = manager.memalloc(900)
        assert made == [1024, 1024] and int(third.handle) == 0x20000, made
        print("ok")
    """)
    import os

    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert result.stdout.strip() == "ok", result.stderr


# --------------------------------------------------------------------------- #
# per-step overhead: loss kept on the device, read back every k steps
# --------------------------------------------------------------------------- #


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_running_metrics_on_cuda_match_a_host_reference(rng, dtype):
    from reference import softmax_cross_entropy as reference_loss

    totals = {"loss": 0.0, "correct": 0}
    metrics = F.RunningMetrics("cuda")
    for batch in (5, 3, 7):
        logits = random_array(rng, (batch, 4), dtype)
        logits[0, 1] = logits[0, 2] = logits[0].max() + 1  # a tie: the first maximum is the prediction
        labels = rng.integers(0, 4, batch)
        labels[0] = 1
        losses, grad = F.softmax_cross_entropy_rows(*to_cuda(logits, labels))
        metrics.add(losses, *to_cuda(logits, labels))
        loss, expected_grad = reference_loss(logits.astype(np.float64), labels)
        assert_close(grad, expected_grad, dtype, "grad")
        totals["loss"] += loss * batch
        totals["correct"] += int(np.sum(np.argmax(logits, axis=1) == labels))
    loss_sum, correct, rows = metrics.read()
    assert rows == 15 and correct == totals["correct"]
    assert abs(loss_sum - totals["loss"]) <= (1e-5 if dtype == np.float32 else 1e-12) * abs(totals["loss"])


def _tiny_loader(batches: int, batch: int = 2, poison: int | None = None):
    from numbacnn.data import BatchLoader, Dataset, Normalizer

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (batches * batch, 1, 8, 8)).astype(np.uint8)
    labels = rng.integers(0, 3, batches * batch).astype(np.int64)
    normalizer = Normalizer((0.5,), (0.25,)) if poison is None else Normalizer((0.5,), (0.0,))
    return BatchLoader(Dataset(images, labels, ("a", "b", "c")), batch, normalizer, shuffle=False, seed=0,
                       dtype=np.float64)


@needs_cuda
def test_a_cuda_epoch_reads_back_once_per_k_steps_and_matches_the_cpu(monkeypatch):
    from numbacnn.models import tiny_vgg
    from numbacnn.optim import SGD
    from numbacnn.train import train_one_epoch

    batches, k = 7, 3
    results = {}
    for device in ("cpu", "cuda"):
        model = tiny_vgg(in_channels=1, num_classes=3, image_size=8, filters=2, padding=1, dtype=np.float64,
                         seed=0).to(device)
        optimizer = SGD(model.parameters(), lr=0.1)
        copies = []
        if device == "cuda":
            cuda_array_type = type(numbacnn.to_device(np.zeros(1), "cuda"))
            original = cuda_array_type.copy_to_host

            def counting_copy(self, *args, **kwargs):
                copies.append(self.shape)
                return original(self, *args, **kwargs)

            monkeypatch.setattr(cuda_array_type, "copy_to_host", counting_copy)
        results[device] = train_one_epoch(model, optimizer, _tiny_loader(batches), device, 0, 1, progress=False,
                                          readback_every=k)
        if device == "cuda":
            # after batches 3, 6 and 7 (the last): the two totals, nothing else
            assert copies == [(2,)] * 3
    for key in ("train_loss", "train_accuracy", "train_images"):
        assert abs(results["cuda"][key] - results["cpu"][key]) <= 1e-12 * max(1.0, abs(results["cpu"][key])), key


@needs_cuda
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the std-0 normaliser divides by zero on purpose
def test_a_nan_loss_on_cuda_is_caught_at_the_next_read_back():
    from numbacnn.models import tiny_vgg
    from numbacnn.optim import SGD
    from numbacnn.train import TrainingDiverged, train_one_epoch

    model = tiny_vgg(in_channels=1, num_classes=3, image_size=8, filters=2, padding=1, dtype=np.float64,
                     seed=0).to("cuda")
    loader = _tiny_loader(4, poison=1)  # std 0: every image is inf/nan after normalising
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 1, between batches 1 and 2/4"):
        train_one_epoch(model, SGD(model.parameters(), lr=0.1), loader, "cuda", 0, 1, progress=False,
                        readback_every=2)


@needs_cuda
def test_launch_configurations_are_made_once_per_shape(rng):
    from numbacnn.kernels.cuda import launch

    x = numbacnn.to_device(random_array(rng, (3, 5), np.float64), "cuda")
    F.relu(x)
    made = dict(launch._CONFIGURED)
    for _ in range(3):
        F.relu(x)
    assert launch._CONFIGURED == made  # no new configuration for the same shape
    relu_kernel = importlib.import_module("numbacnn.kernels.cuda.activation").relu_forward_kernel
    (key,) = [k for k in made if k[0] is relu_kernel and k[1] == launch.blocks_for(15, *_relu_launch())]
    assert launch.configured(*key) is made[key]
    F.relu(numbacnn.to_device(random_array(rng, (40, 7), np.float64), "cuda"))  # another shape, maybe another grid
    assert all(launch._CONFIGURED[k] is v for k, v in made.items())


def _relu_launch():
    activation = importlib.import_module("numbacnn.kernels.cuda.activation")
    return activation.RELU_THREADS, activation.RELU_MAX_BLOCKS


# --------------------------------------------------------------------------- #
# the simulator's shared arrays (conftest.py's lock)
# --------------------------------------------------------------------------- #


@pytest.mark.skipif(not CUDA_SIMULATED, reason="about Numba's CUDA simulator")
def test_simulator_shared_arrays_are_made_once_per_block_even_with_a_thread_switch():
    """Two threads of one block reach ``cuda.shared.array`` on the same line; a thread
    switch right after the lookup (forced here by a slow lookup) used to let both
    make an array, so one thread wrote to an array no other thread read. With
    conftest.py's lock both get the same array; without it, they do not."""
    import threading
    import time

    from numba.cuda.simulator import kernelapi

    conftest = sys.modules["conftest"]

    class SlowLookup(dict):
        def get(self, key, default=None):
            found = super().get(key, default)
            time.sleep(0.02)  # the other thread runs now
            return found

    def arrays_seen_by_two_threads(array_method):
        shared = kernelapi.FakeCUDAShared(0)
        shared._allocations = SlowLookup()
        seen = []

        def thread_body():
            seen.append(array_method(shared, 4, np.float32))  # one source line for both threads

        threads = [threading.Thread(target=thread_body) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return seen

    assert kernelapi.FakeCUDAShared.array is conftest._locked_shared_array
    first, second = arrays_seen_by_two_threads(conftest._locked_shared_array)
    assert first is second
    first, second = arrays_seen_by_two_threads(conftest._unlocked_shared_array)
    assert first is not second  # the race the lock removes
