"""Workspaces (issue 10 item 1): ``out=`` in the functional ops, and the buffers the
layers keep between steps inside a Sequential.

What must hold: an op writing into ``out=`` gives the same values as without it
(and returns that array); a bad ``out=`` is refused before any kernel runs with a
one-line message naming the argument; a model reusing its buffers gives the same
outputs and gradients as a fresh model, across batch-size changes, in float32
and float64; and no array handed to the caller changes on the next step.
"""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn
import numbacnn.functional as F
from numbacnn import nn
from numbacnn.models import tiny_vgg
from numbacnn.nn import fusion
from tests.helpers import assert_close, available_devices, random_array
from tests import reference

DTYPES = [np.float32, np.float64]


def _ops(rng: np.random.Generator, dtype) -> list:
    """(name, call(out) -> result, expected shapes of out) for every op with out=."""
    x = random_array(rng, (2, 3, 6, 5), dtype)
    w = random_array(rng, (4, 3, 3, 3), dtype)
    b = random_array(rng, (4,), dtype)
    gy = random_array(rng, (2, 4, 6, 5), dtype)
    gp = random_array(rng, (2, 3, 3, 2), dtype)
    m = random_array(rng, (5, 7), dtype)
    lw = random_array(rng, (3, 7), dtype)
    lb = random_array(rng, (3,), dtype)
    lgy = random_array(rng, (5, 3), dtype)
    labels = np.array([0, 2, 1, 1, 0])
    return [
        ("conv2d", lambda out=None: F.conv2d(x, w, b, padding=1, out=out), (x, w, b)),
        ("conv2d_backward", lambda out=None: F.conv2d_backward(gy, x, w, padding=1, out=out), (gy, x, w)),
        ("max_pool2d", lambda out=None: F.max_pool2d(x, 2, out=out), (x,)),
        ("max_pool2d_backward", lambda out=None: F.max_pool2d_backward(gp, x, 2, out=out), (gp, x)),
        ("relu", lambda out=None: F.relu(x, out=out), (x,)),
        ("relu_backward", lambda out=None: F.relu_backward(x, x[:, ::-1].copy(), out=out), (x,)),
        ("linear", lambda out=None: F.linear(m, lw, lb, out=out), (m, lw, lb)),
        ("linear_backward", lambda out=None: F.linear_backward(lgy, m, lw, out=out), (lgy, m, lw)),
        ("softmax_cross_entropy", lambda out=None: F.softmax_cross_entropy(m, labels, out=out)[1], (m,)),
    ]


def _like(result):
    if isinstance(result, tuple):
        return tuple(None if r is None else np.full_like(r, np.nan) for r in result)
    return np.full_like(result, np.nan)  # NaN: an element the kernel forgot to write shows


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_gives_the_same_values_and_is_returned(dtype):
    for name, call, _ in _ops(np.random.default_rng(0), dtype):
        expected = call()
        out = _like(expected)
        got = call(out)
        pairs = zip(got, expected, out) if isinstance(expected, tuple) else [(got, expected, out)]
        for g, e, o in pairs:
            np.testing.assert_array_equal(g, e, err_msg=name)
            assert np.shares_memory(g, o), f"{name}: the result is not written into out"


def test_out_matches_the_float64_reference():
    rng = np.random.default_rng(1)
    x, w, b = (random_array(rng, s, np.float64) for s in [(3, 2, 7, 6), (5, 2, 3, 2), (5,)])
    out = np.empty((3, 5, 7, 7), np.float64)
    F.conv2d(x, w, b, padding=1, out=out)
    assert_close(out, reference.conv2d(x, w, b, padding=1), np.float64, "conv2d(out=)")


def test_relu_out_may_be_its_input_exactly():
    x = np.array([-1.0, 0.0, 2.0, np.nan])
    assert F.relu(x, out=x) is x
    np.testing.assert_array_equal(x, [0.0, 0.0, 2.0, np.nan])


BAD_OUTS = [
    ("shape", lambda e: np.empty(e.shape[:-1] + (e.shape[-1] + 1,), e.dtype), ValueError, "has shape"),
    ("dtype", lambda e: np.empty(e.shape, np.float64 if e.dtype == np.float32 else np.float32), TypeError, "dtype"),
    ("strided", lambda e: np.empty(e.shape[:-1] + (2 * e.shape[-1],), e.dtype)[..., ::2], ValueError, "contiguous"),
    ("read-only", lambda e: np.lib.stride_tricks.as_strided(np.empty(e.shape, e.dtype), writeable=False),
     ValueError, "writable"),
    ("not an array", lambda e: [0.0], TypeError, "must be an array"),
]


@pytest.mark.parametrize("what, make, error, words", BAD_OUTS, ids=[b[0] for b in BAD_OUTS])
def test_bad_out_is_refused_naming_the_argument(what, make, error, words):
    for name, call, _ in _ops(np.random.default_rng(2), np.float32):
        expected = call()
        if isinstance(expected, tuple):
            for i in range(3):
                out = [None, None, None]
                out[i] = make(expected[i])
                with pytest.raises(error, match=rf"^{name}: out\[{i}\] .*{words}") as info:
                    call(tuple(out))
                assert "\n" not in str(info.value)
        else:
            with pytest.raises(error, match=rf"^{name}: out .*{words}") as info:
                call(make(expected))
            assert "\n" not in str(info.value)


def test_out_overlapping_an_input_is_refused():
    rng = np.random.default_rng(3)
    x = random_array(rng, (1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"^conv2d: out shares memory with x"):
        F.conv2d(x, random_array(rng, (2, 2, 1, 1), np.float32), out=x)
    m = random_array(rng, (4, 4), np.float32)
    with pytest.raises(ValueError, match=r"^linear: out shares memory with x"):
        F.linear(m, random_array(rng, (4, 4), np.float32), out=m)
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy: out shares memory with logits"):
        F.softmax_cross_entropy(m, np.array([0, 1, 2, 3]), out=m)
    big = np.zeros(20, np.float32)
    with pytest.raises(ValueError, match=r"^relu: out shares memory with x"):
        F.relu(big[:10], out=big[5:15])  # elementwise, but shifted: a partial overlap
    gy, xx = random_array(rng, (2, 2, 3, 3), np.float32), random_array(rng, (2, 2, 3, 3), np.float32)
    shared = np.empty((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"^conv2d_backward: out\[2\] shares memory with out\[1\]"):
        F.conv2d_backward(gy, xx, random_array(rng, (2, 2, 1, 1), np.float32),
                          out=(None, shared.reshape(2, 2, 1, 1), shared[0]))
    with pytest.raises(TypeError, match=r"^conv2d_backward: out must be a tuple of 3"):
        F.conv2d_backward(gy, xx, random_array(rng, (2, 2, 1, 1), np.float32), out=np.empty(3))
    with pytest.raises(ValueError, match=r"^relu: pass inplace=True or out=, not both"):
        F.relu(big, inplace=True, out=big)


@pytest.mark.skipif("cuda" not in available_devices(), reason="no CUDA backend (simulator or GPU)")
def test_out_on_cuda_and_device_mismatch():
    rng = np.random.default_rng(4)
    x = random_array(rng, (1, 2, 5, 5), np.float32)
    w = random_array(rng, (3, 2, 3, 3), np.float32)
    gy = random_array(rng, (1, 3, 5, 5), np.float32)
    dx, dw = numbacnn.to_device(x, "cuda"), numbacnn.to_device(w, "cuda")
    out = numbacnn.to_device(np.full((1, 3, 5, 5), np.nan, np.float32), "cuda")
    got = F.conv2d(dx, dw, padding=1, out=out)
    assert got is out
    assert_close(numbacnn.to_host(out), reference.conv2d(x, w, None, padding=1), np.float32, "cuda conv2d(out=)")
    grads = [numbacnn.to_device(np.full(s, np.nan, np.float32), "cuda") for s in (x.shape, w.shape, (3,))]
    results = F.conv2d_backward(numbacnn.to_device(gy, "cuda"), dx, dw, padding=1, out=tuple(grads))
    for r, o, e in zip(results, grads, F.conv2d_backward(gy, x, w, padding=1)):
        assert r is o
        assert_close(numbacnn.to_host(o), e, np.float32, "cuda conv2d_backward(out=)")
    relu_out = numbacnn.to_device(np.empty_like(x), "cuda")
    F.relu(dx, out=relu_out)
    np.testing.assert_array_equal(numbacnn.to_host(relu_out), np.maximum(x, 0))
    with pytest.raises(ValueError, match=r"^conv2d: out is on cpu but the inputs are on cuda"):
        F.conv2d(dx, dw, padding=1, out=np.empty((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"^relu: out is on cuda but the inputs are on cpu"):
        F.relu(x, out=relu_out)


# ----------------------------------------------------------------------------- layers

def _model(dtype, seed=0):
    # 12x12 input, padding 1: both fusion paths and every layer kind (Flatten, Linear)
    return tiny_vgg(in_channels=2, num_classes=3, image_size=12, filters=4, padding=1, dtype=dtype, seed=seed)


def _step(model, x, labels):
    model.zero_grad()
    y = model(x)
    loss, gy = F.softmax_cross_entropy(y, labels)
    gx = model.backward(gy, input_grad=True)
    return y, gx, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_reused_buffers_give_the_same_results_as_a_fresh_model(dtype, fused):
    rng = np.random.default_rng(5)
    kept = _model(dtype)
    with fusion.disabled() if not fused else _nothing():
        for batch in [3, 3, 5, 3, 1, 5]:  # repeats (reuse) and changes (reallocation)
            x = random_array(rng, (batch, 2, 12, 12), dtype)
            labels = rng.integers(0, 3, batch)
            y, gx, grads = _step(kept, x, labels)
            y_ref, gx_ref, grads_ref = _step(_model(dtype), x, labels)  # a fresh model: nothing reused
            np.testing.assert_array_equal(y, y_ref)
            np.testing.assert_array_equal(gx, gx_ref)
            for g, r in zip(grads, grads_ref):
                np.testing.assert_array_equal(g, r)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_layers_keep_their_buffers_inside_a_sequential():
    rng = np.random.default_rng(6)
    model = _model(np.float32)
    with fusion.disabled():
        ids = []
        for batch in [4, 4, 4, 2]:
            _step(model, random_array(rng, (batch, 2, 12, 12), np.float32), rng.integers(0, 3, batch))
            conv = model.features[0]
            linear = model.classifier[1]
            kept = [conv._ws._buffers["y"][1], conv._ws._buffers["gx"][1], linear._ws._buffers["y"][1]]
            ids.append([(a.__array_interface__["data"][0], a.shape[0]) for a in kept])
    assert ids[0] == ids[1] == ids[2]  # same shape: the same memory
    assert all(batch == 2 for _, batch in ids[3])  # the batch changed: buffers of the new shape


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_arrays_returned_to_the_caller_stay_valid(fused):
    rng = np.random.default_rng(7)
    model = _model(np.float32)
    with fusion.disabled() if not fused else _nothing():
        x1, x2 = (random_array(rng, (3, 2, 12, 12), np.float32) for _ in range(2))
        y1 = model(x1)
        y1_copy = y1.copy()
        gx1 = model.backward(np.ones_like(y1), input_grad=True)
        gx1_copy = gx1.copy()
        y2 = model(x2)
        model.backward(np.ones_like(y2), input_grad=True)
        np.testing.assert_array_equal(y1, y1_copy)
        np.testing.assert_array_equal(gx1, gx1_copy)
        assert not np.shares_memory(y1, y2)
        model.eval()
        e1 = model(x1)
        e1_copy = e1.copy()
        model(x2)
        np.testing.assert_array_equal(e1, e1_copy)
    # a layer called on its own returns a new array every time
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=0)
    a = conv(x1)
    a_copy = a.copy()
    conv(x2)
    np.testing.assert_array_equal(a, a_copy)


def test_parameter_gradients_accumulate_over_steps_with_reused_buffers():
    """Two backwards without zero_grad add up: the kept gradient buffer is added into
    grad, never becomes grad (it would be overwritten by the next step)."""
    rng = np.random.default_rng(8)
    x = random_array(rng, (2, 2, 12, 12), np.float64)
    labels = np.array([0, 2])
    model = _model(np.float64)
    with fusion.disabled():
        _, _, single = _step(model, x, labels)
        model.zero_grad()
        for _ in range(3):
            y = model(x)
            model.backward(F.softmax_cross_entropy(y, labels)[1], input_grad=False)
        for p, g in zip(model.parameters(), single):
            assert_close(p.grad, 3 * g, np.float64, "accumulated grad")


def test_same_layer_twice_in_a_row_does_not_overwrite_its_input():
    conv = nn.Conv2d(2, 2, 1, rng=0)
    model = nn.Sequential(conv, conv)  # the same conv twice: its kept output is its next input
    x = np.random.default_rng(9).standard_normal((1, 2, 3, 3)).astype(np.float32)
    model.eval()
    with fusion.disabled():
        for _ in range(2):
            np.testing.assert_array_equal(model(x), conv(conv(x)))


@pytest.mark.skipif("cuda" not in available_devices(), reason="no CUDA backend (simulator or GPU)")
def test_layer_workspaces_on_cuda_match_a_fresh_model_and_returned_arrays_stay_valid():
    """The same rule on the device: kept buffers are CUDA arrays, the model boundary
    copies on the device. Small shapes: the simulator runs every thread in Python."""

    def small(seed=0):
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=seed, device="cuda"), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(36, 3, rng=seed, device="cuda"))

    rng = np.random.default_rng(10)
    kept = small()
    held = []
    for batch in [2, 2, 1]:
        x = random_array(rng, (batch, 1, 6, 6), np.float32)
        gy = random_array(rng, (batch, 3), np.float32)
        results = []
        for model in (kept, small()):
            model.zero_grad()
            y = model(numbacnn.to_device(x, "cuda"))
            gx = model.backward(numbacnn.to_device(gy, "cuda"), input_grad=True)
            results.append([numbacnn.to_host(a) for a in (y, gx)]
                           + [numbacnn.to_host(p.grad) for p in model.parameters()])
            if model is kept:
                held.append((y, numbacnn.to_host(y)))
        for got, expected in zip(*results):
            np.testing.assert_array_equal(got, expected)
    assert numbacnn.device_of(kept[4]._ws._buffers["y"][1]) == "cuda"  # Linear kept a device buffer
    for y, value in held:  # what the caller got back earlier did not change
        np.testing.assert_array_equal(numbacnn.to_host(y), value)
