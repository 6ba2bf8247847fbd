"""Purity (inputs never modified), NaN propagation and output placement."""

import numpy as np
import pytest

import numbacnn
import numbacnn.functional as F
import reference as ref
from helpers import assert_close
from numbacnn.device import backend


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_write_every_output_element(device, rng, dtype):
    """Backward kernels get uninitialised outputs from the dispatcher: fed NaN-filled
    ones, they must still produce the exact gradients, on every path (fast and general
    conv, 2x2 and general pooling with a border outside every window, linear)."""
    kernels = backend(device)
    garbage = lambda shape: numbacnn.to_device(np.full(shape, np.nan, dtype), device)  # noqa: E731
    on = lambda *arrays: [numbacnn.to_device(a, device) for a in arrays]  # noqa: E731

    x = rng.standard_normal((2, 3, 7, 7)).astype(dtype)
    for w_shape, hyper in [((4, 3, 3, 3), (1, 1, 1, 1, 1, 1, 1)),   # stride 1, 4 filters: CPU fast path
                           ((2, 3, 3, 2), (2, 1, 1, 0, 2, 1, 1))]:  # strided, dilated: general kernels
        w = rng.standard_normal(w_shape).astype(dtype)
        stride, padding, dilation = hyper[0:2], hyper[2:4], hyper[4:6]
        expected = ref.conv2d(x, w, None, stride=stride, padding=padding, dilation=dilation)
        gy = rng.standard_normal(expected.shape).astype(dtype)
        rgx, rgw, _ = ref.conv2d_backward(gy, x, w, stride=stride, padding=padding, dilation=dilation)
        xd, wd, gyd = on(x, w, gy)
        dx, dw = garbage(x.shape), garbage(w.shape)
        kernels.conv2d_backward_input(dx, gyd, wd, *hyper)
        kernels.conv2d_backward_weight(dw, gyd, xd, *hyper)
        assert_close(dx, rgx, dtype, f"conv dx {hyper}")
        assert_close(dw, rgw, dtype, f"conv dw {hyper}")

    for kernel, stride in [(2, 2), (3, 2)]:  # 7x7 input: the last row and column lie outside every 2x2 window
        expected = ref.max_pool2d(x, kernel, stride)
        gy = rng.standard_normal(expected.shape).astype(dtype)
        dx = garbage(x.shape)
        kernels.max_pool2d_backward(dx, *on(gy, x), kernel, kernel, stride, stride, 0, 0, 1, 1)
        assert_close(dx, ref.max_pool2d_backward(gy, x, kernel, stride), dtype, f"pool dx k={kernel}")

    features, weights, gy = (rng.standard_normal(shape).astype(dtype) for shape in ((5, 9), (4, 9), (5, 4)))
    rgx, rgw, _ = ref.linear_backward(gy, features, weights)
    dx, dw = garbage(features.shape), garbage(weights.shape)
    xd, wd, gyd = on(features, weights, gy)
    kernels.linear_backward_input(dx, gyd, wd)
    kernels.linear_backward_weight(dw, gyd, xd)
    assert_close(dx, rgx, dtype, "linear dx")
    assert_close(dw, rgw, dtype, "linear dw")
