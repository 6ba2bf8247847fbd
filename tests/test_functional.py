"""Every functional op, forward and backward, against the float64 NumPy reference.

Random shapes, strides (different per axis), paddings (ints, pairs, "same",
"valid"), kernel sizes from 1x1 to beyond 7x7 (non-square), dilations, groups and
ceil_mode, in float32 and float64, on every available device.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numbacnn.functional as F
import reference as ref
from helpers import DTYPES, assert_close, max_spatial_size, on_device, random_array

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def conv_cases(draw, max_size=12):
    """A valid conv2d configuration: shapes and hyperparameters."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    in_channels = groups * draw(st.integers(1, 3))
    out_channels = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    same = draw(st.booleans()) and draw(st.booleans())
    if same:
        stride, padding = (1, 1), "same"
    else:
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        padding = draw(st.sampled_from(["valid", "pair"]))
        if padding == "pair":
            padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    pads = (0, 0) if padding in ("same", "valid") else padding
    # smallest input the (dilated) kernel fits in, then a few more pixels
    min_h = max(1, dilation[0] * (kernel[0] - 1) + 1 - 2 * pads[0])
    min_w = max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * pads[1])
    height = draw(st.integers(min_h, max(min_h, max_size) + 2))
    width = draw(st.integers(min_w, max(min_w, max_size) + 2))
    batch = draw(st.integers(1, 3))
    return dict(
        x_shape=(batch, in_channels, height, width),
        w_shape=(out_channels, in_channels // groups, *kernel),
        stride=stride, padding=padding, dilation=dilation, groups=groups,
        bias=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)),
        # the int-or-pair forms of stride/dilation are both exercised
        scalar_stride=draw(st.booleans()) and stride[0] == stride[1],
    )


@given(data=st.data(), seed=st.integers(0, 2**16))
@SETTINGS
def test_conv2d_forward_and_backward_match_reference(device, data, seed):
    # smaller images under the CUDA simulator (helpers.max_spatial_size)
    case = data.draw(conv_cases(max_size=max_spatial_size(device)), label="case")
    rng = np.random.default_rng(seed)
    dtype = case["dtype"]
    x = random_array(rng, case["x_shape"], dtype)
    w = random_array(rng, case["w_shape"], dtype)
    b = random_array(rng, (case["w_shape"][0],), dtype) if case["bias"] else None
    stride = case["stride"][0] if case["scalar_stride"] else case["stride"]
    hyper = dict(stride=stride, padding=case["padding"], dilation=case["dilation"], groups=case["groups"])

    y = on_device(device, F.conv2d, x, w, b, **hyper)
    expected = ref.conv2d(x, w, b, **hyper)
    assert_close(y, expected, dtype, "conv2d y")

    gy = random_array(rng, expected.shape, dtype)
    gx, gw, gb = on_device(device, F.conv2d_backward, gy, x, w, **hyper)
    rgx, rgw, rgb = ref.conv2d_backward(gy, x, w, **hyper)
    assert_close(gx, rgx, dtype, "conv2d gx")
    assert_close(gw, rgw, dtype, "conv2d gw")
    assert_close(gb, rgb, dtype, "conv2d gb")


def test_conv2d_backward_without_input_grad(device, rng):
    x = random_array(rng, (2, 3, 6, 5), np.float64)
    w = random_array(rng, (4, 3, 3, 2), np.float64)
    gy = random_array(rng, (2, 4, 4, 4), np.float64)
    gx, gw, gb = on_device(device, F.conv2d_backward, gy, x, w, input_grad=False)
    assert gx is None
    _, rgw, rgb = ref.conv2d_backward(gy, x, w)
    assert_close(gw, rgw, np.float64, "gw")
    assert_close(gb, rgb, np.float64, "gb")


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_depthwise_and_large_kernel(device, rng, dtype):
    size = max_spatial_size(device)
    x = random_array(rng, (1, 4, size, size + 1), dtype)
    w = random_array(rng, (8, 1, 3, 3), dtype)  # groups == C: depthwise, 2 filters per channel
    y = on_device(device, F.conv2d, x, w, None, padding=1, groups=4)
    assert_close(y, ref.conv2d(x, w, None, padding=1, groups=4), dtype, "depthwise y")
    big = random_array(rng, (2, 2, 9, 8), dtype)  # larger than 7x7 and not square
    y = on_device(device, F.conv2d, x[:, :2], big, None, padding=(4, 3))
    assert_close(y, ref.conv2d(x[:, :2], big, None, padding=(4, 3)), dtype, "9x8 kernel y")


@st.composite
def pool_cases(draw, max_size=12):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.sampled_from([None, "pair"]))
    if stride == "pair":
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    min_h = max(1, dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0])
    min_w = max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1])
    return dict(
        x_shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)),
                 draw(st.integers(min_h, max(min_h, max_size))), draw(st.integers(min_w, max(min_w, max_size)))),
        kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
        ceil_mode=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)),
        # few distinct values make ties common: the first-maximum rule is exercised
        ties=draw(st.booleans()),
    )


@given(data=st.data(), seed=st.integers(0, 2**16))
@SETTINGS
def test_max_pool2d_forward_and_backward_match_reference(device, data, seed):
    case = data.draw(pool_cases(max_size=max_spatial_size(device)), label="case")
    rng = np.random.default_rng(seed)
    dtype = case["dtype"]
    if case["ties"]:
        x = rng.integers(-2, 3, case["x_shape"]).astype(dtype)
    else:
        x = random_array(rng, case["x_shape"], dtype)
    hyper = {k: case[k] for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode")}
    y = on_device(device, F.max_pool2d, x, **hyper)
    expected = ref.max_pool2d(x, **hyper)
    assert_close(y, expected, dtype, "max_pool2d y")
    gy = random_array(rng, expected.shape, dtype)
    gx = on_device(device, F.max_pool2d_backward, gy, x, **hyper)
    assert_close(gx, ref.max_pool2d_backward(gy, x, **hyper), dtype, "max_pool2d gx")


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_ties_go_to_first_maximum_and_overlaps_add(device, dtype):
    x = np.array([[[[1, 3, 3],
                    [3, 0, 3],
                    [2, 3, 1]]]], dtype)
    y = on_device(device, F.max_pool2d, x, 2, stride=1)  # overlapping 2x2 windows
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 3, dtype))
    gx = on_device(device, F.max_pool2d_backward, np.ones((1, 1, 2, 2), dtype), x, 2, stride=1)
    # windows: top-left -> (0,1), top-right -> (0,1), bottom-left -> (1,0), bottom-right -> (1,2)
    expected = np.array([[[[0, 2, 0], [1, 0, 1], [0, 0, 0]]]], dtype)
    np.testing.assert_array_equal(gx, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_forward_and_backward(device, rng, dtype):
    x = random_array(rng, (3, 2, 5, 4), dtype)
    x[0, 0, 0, :3] = [0.0, -0.0, 1e-30]
    assert_close(on_device(device, F.relu, x), ref.relu(x), dtype, "relu y")
    gy = random_array(rng, x.shape, dtype)
    gx = on_device(device, F.relu_backward, gy, x)
    assert_close(gx, ref.relu_backward(gy, x), dtype, "relu gx")
    assert gx[0, 0, 0, 0] == 0 and gx[0, 0, 0, 1] == 0  # gradient 0 at x == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,in_features,out_features", [(1, 1, 1), (3, 17, 5), (8, 130, 10)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_and_backward(device, rng, dtype, batch, in_features, out_features, bias):
    x = random_array(rng, (batch, in_features), dtype)
    w = random_array(rng, (out_features, in_features), dtype)
    b = random_array(rng, (out_features,), dtype) if bias else None
    assert_close(on_device(device, F.linear, x, w, b), ref.linear(x, w, b), dtype, "linear y")
    gy = random_array(rng, (batch, out_features), dtype)
    for got, expected, name in zip(on_device(device, F.linear_backward, gy, x, w),
                                   ref.linear_backward(gy, x, w), ("gx", "gw", "gb")):
        assert_close(got, expected, dtype, f"linear {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,classes", [(1, 2), (5, 10), (33, 7)])
def test_softmax_cross_entropy(device, rng, dtype, batch, classes):
    logits = (random_array(rng, (batch, classes), dtype) * 5).astype(dtype)
    labels = rng.integers(0, classes, batch)
    loss, grad = on_device(device, F.softmax_cross_entropy, logits, labels)
    expected_loss, expected_grad = ref.softmax_cross_entropy(logits, labels)
    assert isinstance(loss, float)
    assert abs(loss - expected_loss) <= RELATIVE_LOSS[np.dtype(dtype)] * max(1.0, abs(expected_loss))
    assert_close(grad, expected_grad, dtype, "softmax_cross_entropy grad")


RELATIVE_LOSS = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_is_stable_for_huge_logits(device, dtype):
    logits = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]], dtype)
    labels = np.array([0, 2])
    loss, grad = on_device(device, F.softmax_cross_entropy, logits, labels)
    expected_loss, expected_grad = ref.softmax_cross_entropy(logits, labels)
    assert np.isfinite(loss) and abs(loss - expected_loss) <= 1e-6 * expected_loss
    assert_close(grad, expected_grad, dtype, "grad")
