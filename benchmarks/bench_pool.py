"""2x2 max pooling forward and backward on the two Tiny VGG pool shapes."""

import numbacnn.functional as F

from .common import (BATCHES, DTYPES, POOL, POOL_SHAPES, check_close, pool_inputs, reference_max_pool2x2,
                     reference_max_pool2x2_backward)

_checked = set()


class MaxPool2d:
    params = (list(POOL_SHAPES), BATCHES, DTYPES)
    param_names = ["layer", "batch", "dtype"]
    timeout = 300

    def setup(self, layer, batch, dtype):
        self.x, self.gy = pool_inputs(layer, batch, dtype)
        y = F.max_pool2d(self.x, POOL)
        gx = F.max_pool2d_backward(self.gy, self.x, POOL)
        key = (layer, batch, dtype)
        if key not in _checked:
            check_close(y, reference_max_pool2x2(self.x), dtype, f"max_pool2d {key}")
            check_close(gx, reference_max_pool2x2_backward(self.gy, self.x), dtype, f"max_pool2d_backward {key}")
            _checked.add(key)

    def time_max_pool2d(self, layer, batch, dtype):
        F.max_pool2d(self.x, POOL)

    def time_max_pool2d_backward(self, layer, batch, dtype):
        F.max_pool2d_backward(self.gy, self.x, POOL)
