"""Purity (inputs never modified), NaN propagation and output placement."""

import numpy as np
import pytest

import numbacnn
import numbacnn.functional as F


def _calls(rng, dtype):
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    gy = rng.standard_normal((2, 4, 4, 4)).astype(dtype)
    gp = rng.standard_normal((2, 3, 3, 3)).astype(dtype)
    xl = rng.standard_normal((5, 7)).astype(dtype)
    wl = rng.standard_normal((3, 7)).astype(dtype)
    gl = rng.standard_normal((5, 3)).astype(dtype)
    labels = rng.integers(0, 3, 5)
    return [
        ("conv2d", F.conv2d, (x, w, b), {}),
        ("conv2d_backward", F.conv2d_backward, (gy, x, w), {}),
        ("max_pool2d", F.max_pool2d, (x, 2), {}),
        ("max_pool2d_backward", F.max_pool2d_backward, (gp, x, 2), {}),
        ("relu", F.relu, (x,), {}),
        ("relu_backward", F.relu_backward, (x, x), {}),
        ("linear", F.linear, (xl, wl, b[:3]), {}),
        ("linear_backward", F.linear_backward, (gl, xl, wl), {}),
        ("softmax_cross_entropy", F.softmax_cross_entropy, (gl, labels), {}),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_are_never_modified_and_outputs_keep_dtype(device, rng, dtype):
    for name, fn, args, kwargs in _calls(rng, dtype):
        host_copies = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        moved = [numbacnn.to_device(a, device) if isinstance(a, np.ndarray) else a for a in args]
        result = fn(*moved, **kwargs)
        for before, after in zip(host_copies, moved):
            if isinstance(before, np.ndarray):
                np.testing.assert_array_equal(numbacnn.to_host(after), before, err_msg=f"{name} modified an input")
        outputs = result if isinstance(result, tuple) else (result,)
        for out in outputs:
            if out is None or isinstance(out, float):
                continue
            assert numbacnn.device_of(out) == device, f"{name} returned an array on the wrong device"
            assert np.dtype(out.dtype) == np.dtype(dtype), f"{name} changed the dtype"


def test_strided_numpy_views_are_accepted_and_left_alone(rng):
    base = rng.standard_normal((2, 3, 12, 12))
    x = base[:, :, ::2, ::2]  # a non-contiguous view
    w = rng.standard_normal((2, 3, 3, 3))
    np.testing.assert_allclose(F.conv2d(x, w), F.conv2d(np.ascontiguousarray(x), w), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_propagates_through_every_op(device, rng, dtype):
    x = rng.standard_normal((1, 2, 6, 6)).astype(dtype)
    x[0, 1, 2, 3] = np.nan
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)

    def run(fn, *args, **kwargs):
        out = fn(*[numbacnn.to_device(a, device) if isinstance(a, np.ndarray) else a for a in args], **kwargs)
        return [numbacnn.to_host(o) if not isinstance(o, float) and o is not None else o
                for o in (out if isinstance(out, tuple) else (out,))]

    (y,) = run(F.conv2d, x, w)
    assert np.isnan(y[0, :, 0:3, 1:4]).all() and not np.isnan(y[0, :, 5 - 2:, :1]).any()
    (p,) = run(F.max_pool2d, x, 2)
    assert np.isnan(p[0, 1, 1, 1]) and np.isnan(p).sum() == 1
    (r,) = run(F.relu, x)
    assert np.isnan(r[0, 1, 2, 3])
    gx, gw, gb = run(F.conv2d_backward, np.ones((1, 3, 4, 4), dtype), x, w)
    assert np.isnan(gw).any()
    xl = x.reshape(1, -1)
    (yl,) = run(F.linear, xl, rng.standard_normal((4, xl.shape[1])).astype(dtype))
    assert np.isnan(yl).all()
    loss, grad = run(F.softmax_cross_entropy, np.array([[0.0, np.nan]], dtype), np.array([0]))
    assert np.isnan(loss) and np.isnan(grad).all()
