"""ReLU, linear and softmax cross-entropy at the Tiny VGG sizes."""

import numpy as np

import numbacnn.functional as F

from .common import BATCHES, CLASSES, DTYPES, FILTERS, LINEAR_FEATURES, check_close

_checked = set()


class ReLU:
    """On the largest Tiny VGG activation, (N, 10, 62, 62)."""

    params = (BATCHES, DTYPES)
    param_names = ["batch", "dtype"]
    timeout = 120

    def setup(self, batch, dtype):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((batch, FILTERS, 62, 62)).astype(dtype)
        self.gy = rng.standard_normal(self.x.shape).astype(dtype)
        y = F.relu(self.x)
        gx = F.relu_backward(self.gy, self.x)
        if (batch, dtype) not in _checked:
            check_close(y, np.maximum(self.x, 0).astype(np.float64), dtype, "relu")
            check_close(gx, np.where(self.x > 0, self.gy, 0).astype(np.float64), dtype, "relu_backward")
            _checked.add((batch, dtype))

    def time_relu(self, batch, dtype):
        F.relu(self.x)

    def time_relu_backward(self, batch, dtype):
        F.relu_backward(self.gy, self.x)


class Linear:
    """The classifier: (N, 1690) -> (N, 10)."""

    params = (BATCHES, DTYPES)
    param_names = ["batch", "dtype"]
    timeout = 120

    def setup(self, batch, dtype):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((batch, LINEAR_FEATURES)).astype(dtype)
        self.w = rng.standard_normal((CLASSES, LINEAR_FEATURES)).astype(dtype)
        self.b = rng.standard_normal(CLASSES).astype(dtype)
        self.gy = rng.standard_normal((batch, CLASSES)).astype(dtype)
        self.labels = rng.integers(0, CLASSES, batch)
        y = F.linear(self.x, self.w, self.b)
        gx, gw, gb = F.linear_backward(self.gy, self.x, self.w)
        F.softmax_cross_entropy(y, self.labels)
        if (batch, dtype) not in _checked:
            x64, w64, gy64 = (a.astype(np.float64) for a in (self.x, self.w, self.gy))
            check_close(y, x64 @ w64.T + self.b, dtype, "linear")
            check_close(gx, gy64 @ w64, dtype, "linear gx")
            check_close(gw, gy64.T @ x64, dtype, "linear gw")
            _checked.add((batch, dtype))

    def time_linear(self, batch, dtype):
        F.linear(self.x, self.w, self.b)

    def time_linear_backward(self, batch, dtype):
        F.linear_backward(self.gy, self.x, self.w)

    def time_softmax_cross_entropy(self, batch, dtype):
        F.softmax_cross_entropy(self.gy, self.labels)
