"""Convolution forward and backward on the four Tiny VGG layer shapes."""

import numbacnn.functional as F

from .common import (BATCHES, CONV_SHAPES, DTYPES, check_close, conv_inputs, reference_conv2d,
                     reference_conv2d_backward)

_checked = set()  # (benchmark, params) already checked against the reference in this process


class Conv2dForward:
    params = (list(CONV_SHAPES), BATCHES, DTYPES)
    param_names = ["layer", "batch", "dtype"]
    timeout = 300  # first setup compiles

    def setup(self, layer, batch, dtype):
        self.x, self.w, self.b, _ = conv_inputs(layer, batch, dtype)
        y = F.conv2d(self.x, self.w, self.b)  # compile / warm up
        key = ("forward", layer, batch, dtype)
        if key not in _checked:
            check_close(y, reference_conv2d(self.x, self.w, self.b), dtype, f"conv2d {key}")
            _checked.add(key)

    def time_conv2d(self, layer, batch, dtype):
        F.conv2d(self.x, self.w, self.b)


class Conv2dBackward:
    params = (list(CONV_SHAPES), BATCHES, DTYPES)
    param_names = ["layer", "batch", "dtype"]
    timeout = 300

    def setup(self, layer, batch, dtype):
        self.x, self.w, _, self.gy = conv_inputs(layer, batch, dtype)
        gx, gw, gb = F.conv2d_backward(self.gy, self.x, self.w)
        key = ("backward", layer, batch, dtype)
        if key not in _checked:
            for got, expected, what in zip((gx, gw, gb), reference_conv2d_backward(self.gy, self.x, self.w),
                                           ("gx", "gw", "gb")):
                check_close(got, expected, dtype, f"conv2d_backward {what} {key}")
            _checked.add(key)
        F.conv2d_backward(self.gy, self.x, self.w, input_grad=False)

    def time_conv2d_backward(self, layer, batch, dtype):
        """grad-input, grad-weight and grad-bias."""
        F.conv2d_backward(self.gy, self.x, self.w)

    def time_conv2d_backward_weight_only(self, layer, batch, dtype):
        """grad-weight and grad-bias (a first layer needs no input gradient)."""
        F.conv2d_backward(self.gy, self.x, self.w, input_grad=False)
