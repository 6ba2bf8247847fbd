"""Bad input gets a clear error before any kernel runs: the exception type, and a
message that names the argument, what it got and what was expected."""

import importlib

import numpy as np
import pytest

import numbacnn
import numbacnn.functional as F
from numbacnn.device import DeviceError

f32, f64 = np.float32, np.float64

# numbacnn.device is the context manager; the module is reached through sys.modules
device_module = importlib.import_module("numbacnn.device")


def arr(*shape, dtype=f64):
    return np.ones(shape, dtype)


X, W, B = arr(2, 3, 8, 8), arr(4, 3, 3, 3), arr(4)

BAD_CALLS = [
    # (id, call, exception, substrings that must appear in the message)
    ("x rank 2", lambda: F.conv2d(arr(8, 8), W), ValueError, ["x", "4 dimensions", "3 (C, H, W)", "(8, 8)"]),
    ("x rank 5", lambda: F.conv2d(arr(1, 2, 3, 8, 8), W), ValueError, ["x", "4 dimensions", "(1, 2, 3, 8, 8)"]),
    ("w rank 3", lambda: F.conv2d(X, arr(4, 3, 3)), ValueError, ["w", "4 dimensions"]),
    ("integer x", lambda: F.conv2d(X.astype(np.uint8), W), TypeError, ["x", "uint8", "float32 or float64"]),
    ("float16 w", lambda: F.conv2d(X, W.astype(np.float16)), TypeError, ["w", "float16"]),
    ("mixed dtypes", lambda: F.conv2d(X.astype(f32), W), TypeError, ["w", "float64", "x", "float32"]),
    ("mixed bias dtype", lambda: F.conv2d(X, W, B.astype(f32)), TypeError, ["b", "float32"]),
    ("channel mismatch", lambda: F.conv2d(arr(2, 2, 8, 8), W), ValueError, ["x has 2 channels but w expects 3", "(4, 3, 3, 3)"]),
    ("bias shape", lambda: F.conv2d(X, W, arr(5)), ValueError, ["b", "(5,)", "(4,)"]),
    ("bias rank", lambda: F.conv2d(X, W, arr(4, 1)), ValueError, ["b", "1 dimensions"]),
    ("kernel too big", lambda: F.conv2d(arr(1, 3, 2, 2), W), ValueError, ["kernel 3x3", "2x2", "at least 1x1"]),
    ("stride 0", lambda: F.conv2d(X, W, stride=0), ValueError, ["stride", ">= 1"]),
    ("stride float", lambda: F.conv2d(X, W, stride=1.5), TypeError, ["stride", "1.5"]),
    ("stride bool", lambda: F.conv2d(X, W, stride=True), TypeError, ["stride"]),
    ("stride triple", lambda: F.conv2d(X, W, stride=(1, 1, 1)), TypeError, ["stride", "(1, 1, 1)"]),
    ("negative padding", lambda: F.conv2d(X, W, padding=-1), ValueError, ["padding", ">= 0"]),
    ("padding word", lambda: F.conv2d(X, W, padding="full"), ValueError, ["padding", "'full'", "'same'"]),
    ("same with stride", lambda: F.conv2d(X, W, stride=2, padding="same"), ValueError, ["padding='same'", "stride"]),
    ("dilation 0", lambda: F.conv2d(X, W, dilation=0), ValueError, ["dilation", ">= 1"]),
    ("groups not dividing C", lambda: F.conv2d(X, arr(4, 1, 3, 3), groups=2), ValueError, ["groups=2", "3 channels"]),
    ("groups not dividing F", lambda: F.conv2d(arr(1, 4, 8, 8), arr(3, 2, 3, 3), groups=2), ValueError, ["groups=2", "3 filters"]),
    ("groups 0", lambda: F.conv2d(X, W, groups=0), ValueError, ["groups", "positive"]),
    ("empty channel axis", lambda: F.conv2d(arr(2, 0, 8, 8), arr(4, 0, 3, 3)), ValueError, ["x", "empty axis", "not supported"]),
    ("not an array", lambda: F.conv2d([[1.0]], W), TypeError, ["x", "list"]),
    ("conv gy shape", lambda: F.conv2d_backward(arr(2, 4, 5, 5), X, W), ValueError, ["gy", "(2, 4, 5, 5)", "(2, 4, 6, 6)"]),
    ("conv gy dtype", lambda: F.conv2d_backward(arr(2, 4, 6, 6, dtype=f32), X, W), TypeError, ["gy", "float32"]),
    ("pool kernel 0", lambda: F.max_pool2d(X, 0), ValueError, ["kernel_size", ">= 1"]),
    ("pool padding too big", lambda: F.max_pool2d(X, 2, padding=2), ValueError, ["padding", "half the kernel", "(1, 1)"]),
    ("pool padding same", lambda: F.max_pool2d(X, 3, padding="same"), TypeError, ["padding", "'same'"]),
    ("pool window too big", lambda: F.max_pool2d(arr(1, 1, 2, 2), 3), ValueError, ["kernel_size=(3, 3)", "2x2"]),
    ("pool ceil_mode type", lambda: F.max_pool2d(X, 2, ceil_mode="yes"), TypeError, ["ceil_mode", "'yes'"]),
    ("pool rank 2", lambda: F.max_pool2d(arr(8, 8), 2), ValueError, ["x", "(N, C, H, W) or 3 (C, H, W)"]),
    ("pool integer", lambda: F.max_pool2d(X.astype(np.int32), 2), TypeError, ["x", "int32"]),
    ("pool gy shape", lambda: F.max_pool2d_backward(arr(2, 3, 3, 3), X, 2), ValueError, ["gy", "(2, 3, 4, 4)"]),
    ("relu integer", lambda: F.relu(np.ones(3, np.int64)), TypeError, ["x", "int64"]),
    ("relu gy shape", lambda: F.relu_backward(arr(3), arr(4)), ValueError, ["gy", "(3,)", "(4,)"]),
    ("linear features", lambda: F.linear(arr(2, 5), arr(3, 6)), ValueError, ["x has 5 features but w expects 6", "(3, 6)"]),
    ("linear scalar x", lambda: F.linear(arr(), arr(3, 5)), ValueError, ["x", "at least 1 dimension"]),
    ("linear bias", lambda: F.linear(arr(2, 5), arr(3, 5), arr(4)), ValueError, ["b", "(4,)", "(3,)"]),
    ("linear gy", lambda: F.linear_backward(arr(2, 4), arr(2, 5), arr(3, 5)), ValueError, ["gy", "(2, 4)", "(2, 3)"]),
    ("labels float", lambda: F.softmax_cross_entropy(arr(2, 3), np.zeros(2)), TypeError, ["labels", "float64", "integer"]),
    ("labels range", lambda: F.softmax_cross_entropy(arr(2, 3), np.array([0, 3])), ValueError, ["labels", "3", "0 <= label < 3"]),
    ("labels negative", lambda: F.softmax_cross_entropy(arr(2, 3), np.array([-1, 0])), ValueError, ["labels", "-1"]),
    ("labels length", lambda: F.softmax_cross_entropy(arr(2, 3), np.array([0, 1, 2])), ValueError, ["labels", "(3,)", "(2,)"]),
    ("logits rank", lambda: F.softmax_cross_entropy(arr(2, 3, 1), np.array([0, 1])), ValueError, ["logits", "2 dimensions"]),
    ("bad device name", lambda: numbacnn.set_default_device("tpu"), ValueError, ["device", "'tpu'", "cpu"]),
]


@pytest.mark.parametrize("call,exception,fragments", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_input_is_refused_with_a_message_naming_the_argument(call, exception, fragments):
    with pytest.raises(exception) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"


def test_cuda_without_backend_or_gpu_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(device_module, "cuda_available", lambda: False)
    with pytest.raises(DeviceError, match="cuda"):
        numbacnn.to_device(np.ones(3), "cuda")
    assert device_module.resolve_device("auto") == "cpu"
