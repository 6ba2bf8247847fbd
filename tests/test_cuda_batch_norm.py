"""The CUDA batch-norm kernels (``kernels/cuda/norm.py``) against the CPU kernels and
a float64 reference.

The CUDA kernels cut each channel's N * L values into ``parts`` chunks, one block per
(channel, part), and finish each channel's sums with one thread per channel
(``kernels/cuda/channel_sums.py``). The cases below are chosen so that channels are
cut into several parts with a shorter last one, into one part, with N = 1, C = 1,
L = 1 and L not a multiple of the block (``test_the_cases_cover_uneven_parts`` holds
that). Each kernel is called through the backend interface with the same arguments
on both devices:

- statistics (training with and without the running update, eval) against the CPU
  kernel and NumPy float64 (mean, biased variance, the running update with the
  unbiased one);
- forward and backward against the CPU kernel and ``tests/reference.py``;
- backward against central differences of the float64 reference once;
- float64 partial sums for float32 data (values built so that any float32
  accumulator loses the answer), the same bits on a second run, and the same
  values (to rounding) whatever the number of parts.

Under Numba's CUDA simulator (tests/conftest.py) the shapes are small.
"""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn
import numbacnn.functional as F
import reference as ref
from helpers import CUDA_SIMULATED, DTYPES, assert_close, available_devices, relative_l2_error
from numbacnn.device import backend

pytestmark = pytest.mark.skipif("cuda" not in available_devices(), reason="CUDA backend not usable here")

EPS = 1e-5
MOMENTUM = 0.3

# (N, C, L); under the simulator (REDUCE_THREADS 4, at least 8 values per part):
# (2, 3, 13): 3 parts of 9, 9, 8 values; (1, 1, 37): 4 parts, the last of 7;
# (4, 1, 5): 2 parts of 10; (2, 2, 49): a 7x7 plane, 4 parts, the last of 23;
# (3, 5, 1): one value per image, one part; (1, 4, 2): N = 1, two values per channel
CASES = [(2, 3, 13), (1, 1, 37), (4, 1, 5), (2, 2, 49), (3, 5, 1), (1, 4, 2)]
if not CUDA_SIMULATED:  # a GPU: a Tiny VGG layer (batch 64, 28 x 28) and uneven parts of 1000
    CASES += [(64, 10, 784), (3, 2, 4999)]  # 49 parts of 1024; 14 parts, the last of 1061


def _channel_sums():
    """The module that cuts channels into parts (the CUDA backend is imported only when usable)."""
    from numbacnn.kernels.cuda import channel_sums

    return channel_sums


def _inputs(rng, shape, dtype):
    n, c, l = shape
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 3.0, (1, c, 1)) + rng.uniform(-2, 2, (1, c, 1))).astype(dtype)
    running_mean = rng.standard_normal(c).astype(dtype)
    running_var = rng.uniform(0.5, 2.0, c).astype(dtype)
    weight = rng.standard_normal(c).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype)
    return x, running_mean, running_var, weight, bias


def _stats(kernels, x, running_mean, running_var, training, update, device):
    """mean, invstd, running_mean, running_var (host arrays) after kernels.batch_norm_stats."""
    channels = x.shape[1]
    to = (lambda a: numbacnn.to_device(a, device))
    mean, invstd = kernels.empty((channels,), np.dtype(np.float64)), kernels.empty((channels,), np.dtype(np.float64))
    rm, rv = to(running_mean.copy()), to(running_var.copy())
    kernels.batch_norm_stats(mean, invstd, rm, rv, to(x), EPS, MOMENTUM, training, update)
    return tuple(numbacnn.to_host(a) for a in (mean, invstd, rm, rv))


def _close(actual, expected, rtol, name):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    error = relative_l2_error(actual, expected)
    assert error <= rtol, (f"{name}: relative L2 error {error:.3g} > {rtol:g}; got {actual.ravel()[:4]}, "
                           f"expected {expected.ravel()[:4]}")


def test_the_cases_cover_uneven_parts():
    """The shapes above reach every path of the reductions: several parts with a shorter
    last one, a single part, N = 1, C = 1; parts stay within their bounds."""
    sums = _channel_sums()
    cut, uneven, single = False, False, False
    for n, c, l in CASES:
        count = n * l
        parts = sums.parts_per_channel(c, count)
        assert 1 <= parts <= sums.MAX_PARTS
        chunk = -(-count // parts)
        assert (parts - 1) * chunk < count  # no part is empty
        if parts > 1:
            cut = True
            assert chunk >= sums.REDUCE_THREADS * sums.MIN_ITEMS_PER_THREAD
            uneven |= count % chunk != 0
        else:
            single = True
    assert cut and uneven and single
    assert any(n == 1 for n, _, _ in CASES) and any(c == 1 for _, c, _ in CASES)
    assert any(l % sums.REDUCE_THREADS for _, _, l in CASES)


@pytest.mark.parametrize("shape", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training, update", [(True, True), (True, False), (False, False)])
def test_stats_match_cpu_and_float64(shape, dtype, training, update):
    rng = np.random.default_rng(sum(shape))
    x, running_mean, running_var, _, _ = _inputs(rng, shape, dtype)
    got = _stats(backend("cuda"), x, running_mean, running_var, training, update, "cuda")
    cpu = _stats(backend("cpu"), x, running_mean, running_var, training, update, "cpu")
    x64 = x.astype(np.float64)
    count = shape[0] * shape[2]
    if training:
        mean, var = x64.mean(axis=(0, 2)), x64.var(axis=(0, 2))
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    invstd = 1.0 / np.sqrt(var + EPS)
    new_mean, new_var = running_mean, running_var
    if update:
        new_mean = (1 - MOMENTUM) * running_mean + MOMENTUM * mean
        new_var = (1 - MOMENTUM) * running_var + MOMENTUM * var * count / (count - 1)
    # mean and invstd are float64 on both devices whatever x's dtype: summed in float64
    for name, value, cpu_value, expected in (("mean", got[0], cpu[0], mean), ("invstd", got[1], cpu[1], invstd)):
        _close(value, expected, 1e-12, name)
        _close(value, cpu_value, 1e-12, name + " (CPU kernel)")
    assert got[2].dtype == np.dtype(dtype) and got[3].dtype == np.dtype(dtype)
    if update:
        assert_close(got[2], new_mean, dtype, "running_mean")
        assert_close(got[3], new_var, dtype, "running_var")
        _close(got[2], cpu[2], 1e-6 if dtype == np.float32 else 1e-14, "running_mean (CPU kernel)")
        _close(got[3], cpu[3], 1e-6 if dtype == np.float32 else 1e-14, "running_var (CPU kernel)")
    else:  # eval, or training without running statistics: untouched, bit for bit
        assert np.array_equal(got[2], running_mean) and np.array_equal(got[3], running_var)


@pytest.mark.parametrize("shape", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_forward_and_backward_match_cpu_and_reference(shape, dtype, training):
    rng = np.random.default_rng(7 + sum(shape))
    x, running_mean, running_var, weight, bias = _inputs(rng, shape, dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    y_ref, _, _ = ref.batch_norm(x, running_mean, running_var, weight, bias, training, MOMENTUM, EPS)
    gx_ref, gw_ref, gb_ref = ref.batch_norm_backward(gy, x, running_mean, running_var, weight, training, EPS)
    results = {}
    for device in ("cuda", "cpu"):
        kernels = backend(device)
        to = (lambda a: numbacnn.to_device(a, device))
        # the statistics the forward and the backward use, from this device's own kernel
        mean, invstd, _, _ = _stats(kernels, x, running_mean, running_var, training, False, device)
        y = kernels.empty(shape, np.dtype(dtype))
        kernels.batch_norm_forward(y, to(x), to(mean), to(invstd), to(weight), to(bias))
        gx = kernels.empty(shape, np.dtype(dtype))
        gw, gb = kernels.empty((shape[1],), np.dtype(dtype)), kernels.empty((shape[1],), np.dtype(dtype))
        kernels.batch_norm_backward(gx, gw, gb, to(gy), to(x), to(mean), to(invstd), to(weight), training)
        results[device] = [numbacnn.to_host(a) for a in (y, gx, gw, gb)]
    for name, got, cpu, expected in zip(("y", "gx", "gweight", "gbias"), results["cuda"], results["cpu"],
                                        (y_ref, gx_ref, gw_ref, gb_ref)):
        assert_close(got, expected, dtype, name)
        # the CPU kernel does the same float64 arithmetic, summed in another order
        _close(got, cpu, 1e-6 if dtype == np.float32 else 1e-12, name + " (CPU kernel)")


@pytest.mark.parametrize("training", [True, False])
def test_backward_matches_finite_differences(training):
    """gx, gweight, gbias of sum(gy * batch_norm(x)) against central differences of the
    float64 reference forward (the CUDA backward through the functional layer, 4-D x)."""
    rng = np.random.default_rng(3)
    shape = (2, 2, 3, 5)
    x = rng.standard_normal(shape) * 1.5 + 0.5
    gy = rng.standard_normal(shape)
    running_mean, running_var = rng.standard_normal(2), rng.uniform(0.5, 2.0, 2)
    weight, bias = rng.standard_normal(2), rng.standard_normal(2)

    def loss(x_, w_, b_):
        return float(np.sum(gy * ref.batch_norm(x_, running_mean, running_var, w_, b_, training, 0.1, EPS)[0]))

    def central(f, value, h=1e-6):
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[index] += h
            minus[index] -= h
            grad[index] = (f(plus) - f(minus)) / (2 * h)
        return grad

    to = (lambda a: numbacnn.to_device(a, "cuda"))
    gx, gw, gb = (numbacnn.to_host(a) for a in F.batch_norm_backward(
        to(gy), to(x), to(running_mean), to(running_var), to(weight), training=training, eps=EPS))
    _close(gx, central(lambda v: loss(v, weight, bias), x), 1e-7, "gx")
    _close(gw, central(lambda v: loss(x, v, bias), weight), 1e-7, "gweight")
    _close(gb, central(lambda v: loss(x, weight, v), bias), 1e-7, "gbias")


def test_float32_data_is_summed_in_float64():
    """x and gy hold +-2**20 in equal numbers, shuffled, plus small multiples of 2**-10:
    the exact sums are small, and a float32 accumulator anywhere (a thread's running
    sum, the shared-memory tree, the partials) swallows the small values next to a
    running sum of 2**20 or more (float32's spacing there is 1/8). Every value and
    every float64 sum of them is exact, so the mean and sum(gy) must be exact."""
    sums = _channel_sums()
    rng = np.random.default_rng(11)
    n, c, l = 2, 2, 40
    assert sums.parts_per_channel(c, n * l) > 1 or not CUDA_SIMULATED
    big = 2.0 ** 20

    def cancelling():
        values = (rng.integers(-7, 8, (n, c, l)) * 2.0 ** -10)
        for channel in range(c):
            plane = values[:, channel, :].reshape(-1)
            signs = rng.permutation(np.repeat([big, -big], 20))
            plane[rng.permutation(plane.size)[:40]] = signs
            values[:, channel, :] = plane.reshape(n, l)
        return values.astype(np.float32)

    x, gy = cancelling(), cancelling()
    kernels = backend("cuda")
    mean, invstd, _, _ = _stats(kernels, x, np.zeros(c, np.float32), np.ones(c, np.float32), True, False, "cuda")
    exact_mean = x.astype(np.float64).sum(axis=(0, 2)) / (n * l)  # exact: every partial sum is representable
    assert np.array_equal(mean, exact_mean), (mean, exact_mean)
    to = (lambda a: numbacnn.to_device(a, "cuda"))
    gx = kernels.empty(x.shape, np.dtype(np.float32))
    gw, gb = kernels.empty((c,), np.dtype(np.float32)), kernels.empty((c,), np.dtype(np.float32))
    kernels.batch_norm_backward(gx, gw, gb, to(gy), to(x), to(mean), to(invstd), to(np.ones(c, np.float32)), True)
    assert np.array_equal(numbacnn.to_host(gb), gy.astype(np.float64).sum(axis=(0, 2)).astype(np.float32))


def test_same_bits_on_a_second_run_and_close_whatever_the_parts(monkeypatch):
    """No atomics: the same shape gives the same bits. Cutting channels into one part
    or into as many as allowed changes only the order of the float64 additions."""
    sums = _channel_sums()
    rng = np.random.default_rng(5)
    shape = (3, 2, 29) if CUDA_SIMULATED else (3, 2, 6000)  # several parts by default, MAX_PARTS at most
    count = shape[0] * shape[2]
    x, running_mean, running_var, weight, _ = _inputs(rng, shape, np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    to = (lambda a: numbacnn.to_device(a, "cuda"))

    def run():
        kernels = backend("cuda")
        mean, invstd, rm, rv = _stats(kernels, x, running_mean, running_var, True, True, "cuda")
        gx = kernels.empty(shape, np.dtype(np.float32))
        gw, gb = kernels.empty((2,), np.dtype(np.float32)), kernels.empty((2,), np.dtype(np.float32))
        kernels.batch_norm_backward(gx, gw, gb, to(gy), to(x), to(mean), to(invstd), to(weight), True)
        return [mean, invstd, rm, rv] + [numbacnn.to_host(a) for a in (gx, gw, gb)]

    first = run()
    assert sums.parts_per_channel(2, count) > 1
    for a, b in zip(first, run()):
        assert np.array_equal(a, b)
    monkeypatch.setattr(sums, "PARTS_TARGET_BLOCKS", 1)  # one part per channel
    assert sums.parts_per_channel(2, count) == 1
    single = run()
    monkeypatch.setattr(sums, "PARTS_TARGET_BLOCKS", 10 ** 6)
    monkeypatch.setattr(sums, "MIN_ITEMS_PER_THREAD", 1)
    assert sums.parts_per_channel(2, count) == sums.MAX_PARTS
    many = run()
    for name, a, b, c in zip(("mean", "invstd", "running_mean", "running_var", "gx", "gweight", "gbias"),
                             first, single, many):
        tolerance = 1e-13 if a.dtype == np.float64 else 1e-6
        _close(b, a, tolerance, name + " (one part)")
        _close(c, a, tolerance, name + " (MAX_PARTS parts)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_vgg_with_batch_norm_on_cuda_matches_the_cpu(dtype):
    """A Tiny VGG with batch norm, a training step and an eval forward on both devices:
    the CPU runs its fused Conv -> BatchNorm -> ReLU blocks, CUDA the composed ops with
    these kernels. Logits, every gradient and the running statistics agree."""
    from numbacnn.models import tiny_vgg

    rng = np.random.default_rng(17)
    x = rng.standard_normal((3, 2, 8, 8)).astype(dtype)
    labels = np.array([0, 2, 1])
    results = {}
    for device in ("cuda", "cpu"):
        model = tiny_vgg(in_channels=2, num_classes=3, image_size=8, filters=3, padding=1, dtype=dtype, seed=0,
                         batch_norm=True).to(device)
        logits = model(numbacnn.to_device(x, device))
        _, grad = F.softmax_cross_entropy(logits, numbacnn.to_device(labels, device))
        model.backward(grad, input_grad=False)
        grads = [numbacnn.to_host(p.grad) for p in model.parameters()]
        buffers = [numbacnn.to_host(b) for name, b in model.named_buffers() if "running" in name]
        model.eval()
        eval_logits = model(numbacnn.to_device(x, device))
        results[device] = [numbacnn.to_host(logits)] + grads + buffers + [numbacnn.to_host(eval_logits)]
    assert len(results["cuda"]) == len(results["cpu"]) > 2 + 2 * 4  # 4 batch norms: 8 running buffers
    tolerance = 1e-5 if dtype == np.float32 else 1e-11
    # a conv bias ahead of a batch norm has no effect: its gradient is zero but for rounding
    rounding = 1e-6 if dtype == np.float32 else 1e-13
    zero_gradients = 0
    for i, (got, cpu) in enumerate(zip(results["cuda"], results["cpu"])):
        if np.linalg.norm(cpu) < rounding:
            assert np.linalg.norm(got) < rounding, (i, got, cpu)
            zero_gradients += 1
        else:
            _close(got, cpu, tolerance, f"result {i}")
    assert zero_gradients == 4  # the four convolutions' biases
