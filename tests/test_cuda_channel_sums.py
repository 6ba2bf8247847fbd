"""``kernels/cuda/channel_sums.py`` and the bias gradient built on it.

The per-channel sums (several blocks per channel, float64 partials, fixed-order
trees) against NumPy float64; the CUDA ``conv2d_backward_bias`` (conv and linear
bias gradients: dout (N, F, OH, OW), or (N, OUT, 1, 1) for linear) against the CPU
kernel and the exact sum; float32 data whose answer a float32 accumulator loses
(the CPU's float64 promise, ``tests/test_float64_partial_sums.py``, now held on
CUDA too); the same bits on a second run. Under Numba's CUDA simulator
(tests/conftest.py) the shapes are small; the cases cut channels into several parts
with a shorter last one (checked below), and into one.
"""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn
from helpers import CUDA_SIMULATED, DTYPES, assert_close, available_devices, relative_l2_error
from numbacnn.device import backend

pytestmark = pytest.mark.skipif("cuda" not in available_devices(), reason="CUDA backend not usable here")

# (N, C, L): under the simulator (at least 8 values per part, about 8 blocks in all)
# (3, 2, 11): 4 parts of 9, the last of 6; (1, 1, 30): 3 parts of 10 (N = 1, C = 1);
# (5, 3, 1): L = 1, one part of 5; (2, 9, 25): one part per channel (9 channels take the blocks)
SUM_CASES = [(3, 2, 11), (1, 1, 30), (5, 3, 1), (2, 9, 25)]
# dout of the bias gradient: conv layers (N, F, OH, OW), and linear (N, OUT, 1, 1)
BIAS_CASES = [(2, 3, 5, 4), (1, 1, 6, 7), (4, 5, 3, 3), (6, 4, 1, 1)]
if not CUDA_SIMULATED:  # a GPU: a Tiny VGG layer's gradient (batch 64, 10 filters, 28 x 28), a wide linear
    SUM_CASES += [(64, 10, 784), (3, 2, 4999)]
    BIAS_CASES += [(64, 10, 28, 28), (128, 1000, 1, 1)]


def _channel_sums():
    from numbacnn.kernels.cuda import channel_sums

    return channel_sums


def test_the_cases_cover_several_parts_and_one():
    sums = _channel_sums()
    parts = {(n, c, l): sums.parts_per_channel(c, n * l) for n, c, l in SUM_CASES}
    assert any(p == 1 for p in parts.values())
    assert any(p > 1 and (n * l) % -(-(n * l) // p) for (n, c, l), p in parts.items())  # a shorter last part
    if CUDA_SIMULATED:
        assert parts[(3, 2, 11)] == 4 and parts[(1, 1, 30)] == 3


@pytest.mark.parametrize("shape", SUM_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_channel_sums_match_float64(shape, dtype):
    sums = _channel_sums()
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) + rng.uniform(-3, 3, (1, shape[1], 1))).astype(dtype)
    out = backend("cuda").empty((shape[1],), np.dtype(dtype))
    sums.channel_sums(out, numbacnn.to_device(x, "cuda"))
    assert_close(out, x.astype(np.float64).sum(axis=(0, 2)), dtype, "channel sums")
    partials = numbacnn.to_host(sums.channel_partial_sums(numbacnn.to_device(x, "cuda")))
    assert partials.dtype == np.float64 and partials.shape == (shape[1], sums.parts_per_channel(shape[1],
                                                                                                shape[0] * shape[2]))
    # each partial is the sum of its own chunk of the channel's values (in (n, l) order)
    flat = x.astype(np.float64).transpose(1, 0, 2).reshape(shape[1], -1)
    chunk = -(-flat.shape[1] // partials.shape[1])
    for p in range(partials.shape[1]):
        expected = flat[:, p * chunk:(p + 1) * chunk].sum(axis=1)
        np.testing.assert_allclose(partials[:, p], expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("shape", BIAS_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_gradient_matches_cpu_and_float64(shape, dtype):
    rng = np.random.default_rng(3 + sum(shape))
    dout = rng.standard_normal(shape).astype(dtype)
    results = {}
    for device in ("cuda", "cpu"):
        kernels = backend(device)
        db = kernels.empty((shape[1],), np.dtype(dtype))
        kernels.conv2d_backward_bias(db, numbacnn.to_device(dout, device))
        results[device] = numbacnn.to_host(db)
    expected = dout.astype(np.float64).sum(axis=(0, 2, 3))
    assert_close(results["cuda"], expected, dtype, "grad bias")
    error = relative_l2_error(results["cuda"], results["cpu"])
    assert error <= (1e-7 if dtype == np.float32 else 1e-14), error


@pytest.mark.parametrize("shape", [(4, 2, 5, 4), (40, 3, 1, 1)])
def test_bias_gradient_of_float32_sums_in_float64(shape):
    """Half of each filter's values are +-2**20 (as many + as -), shuffled, the rest
    small multiples of 2**-10: the exact sum is small, and every float64 sum of these
    values is exact, so the result must be the exact sum rounded once to float32. A
    float32 accumulator (a thread's running sum, the tree, the partials: what this
    kernel did before) loses the small values next to 2**20 (float32's spacing there
    is 1/8)."""
    rng = np.random.default_rng(29)
    n, f, h, w = shape
    dout = rng.integers(-7, 8, shape) * 2.0 ** -10
    for filter_ in range(f):
        plane = dout[:, filter_].reshape(-1)
        big = plane.size // 2 // 2 * 2
        plane[rng.permutation(plane.size)[:big]] = rng.permutation(np.repeat([2.0 ** 20, -2.0 ** 20], big // 2))
        dout[:, filter_] = plane.reshape(n, h, w)
    dout = dout.astype(np.float32)
    exact = dout.astype(np.float64).sum(axis=(0, 2, 3))
    kernels = backend("cuda")
    db = kernels.empty((f,), np.dtype(np.float32))
    kernels.conv2d_backward_bias(db, numbacnn.to_device(dout, "cuda"))
    assert np.array_equal(numbacnn.to_host(db), exact.astype(np.float32)), (numbacnn.to_host(db), exact)


def test_same_bits_on_a_second_run():
    rng = np.random.default_rng(31)
    dout = numbacnn.to_device(rng.standard_normal((3, 2, 5, 5)).astype(np.float32), "cuda")
    kernels = backend("cuda")
    first, second = kernels.empty((2,), np.dtype(np.float32)), kernels.empty((2,), np.dtype(np.float32))
    kernels.conv2d_backward_bias(first, dout)
    kernels.conv2d_backward_bias(second, dout)
    assert np.array_equal(numbacnn.to_host(first), numbacnn.to_host(second))
