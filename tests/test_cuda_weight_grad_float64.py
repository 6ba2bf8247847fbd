"""The CUDA conv weight gradient keeps float64 partial sums for float32 data, as the CPU does.

``tests/test_float64_partial_sums.py`` holds the CPU kernels to it with gradients
built so that any float32 accumulator loses most of the answer while float64 gets
it exactly (its ``cancelling_gradient``: an all-ones input, +-2**20 in equal numbers
in shuffled output rows, small multiples of 2**-10 elsewhere). Here the same data
goes through the CUDA kernel (one block per dw element: each thread's running sum
and the shared-memory tree), on shapes small enough for Numba's CUDA simulator:
the general path's hyperparameters included (stride, dilation, groups).
"""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn
import numbacnn.functional as F
import reference as ref
from helpers import assert_close, available_devices, relative_l2_error
from test_float64_partial_sums import cancelling_gradient

pytestmark = pytest.mark.skipif("cuda" not in available_devices(), reason="CUDA backend not usable here")

# (name, x shape, filters, kernel, hyperparameters)
CASES = [
    ("3x3 pad 0", (4, 2, 9, 6), 3, (3, 3), dict(padding=(0, 0))),
    ("(3,2) pad (1,0)", (3, 2, 8, 5), 2, (3, 2), dict(padding=(1, 0))),
    ("stride (1,2) dilation (2,1) groups 2", (4, 2, 10, 7), 2, (2, 2),
     dict(stride=(1, 2), padding=(0, 0), dilation=(2, 1), groups=2)),
]


@pytest.mark.parametrize("name, x_shape, filters, kernel, hyper", CASES, ids=[c[0] for c in CASES])
def test_cuda_grad_weight_sums_in_float64(name, x_shape, filters, kernel, hyper):
    rng = np.random.default_rng(41)
    groups = hyper.get("groups", 1)
    x = np.ones(x_shape, np.float32)
    w = np.full((filters, x_shape[1] // groups) + kernel, 0.125, np.float32)
    stride, padding, dilation = hyper.get("stride", (1, 1)), hyper["padding"], hyper.get("dilation", (1, 1))
    out_shape = F.conv2d(x, w, **hyper).shape
    gy = cancelling_gradient(rng, out_shape, kernel, padding, stride, dilation, x_shape[2:])
    _, expected_gw, expected_gb = ref.conv2d_backward(gy, x, np.zeros(w.shape), stride=stride, padding=padding,
                                                      dilation=dilation, groups=groups)
    # the data needs float64: the per-image sums added up in float32 are far off
    float32_rows = np.zeros(w.shape, np.float32)
    for n in range(gy.shape[0]):
        _, image_gw, _ = ref.conv2d_backward(gy[n:n + 1], x[n:n + 1], np.zeros(w.shape), stride=stride,
                                             padding=padding, dilation=dilation, groups=groups)
        float32_rows = (float32_rows + image_gw.astype(np.float32)).astype(np.float32)
    assert relative_l2_error(float32_rows, expected_gw) > 0.1
    to = (lambda a: numbacnn.to_device(a, "cuda"))
    _, gw, gb = F.conv2d_backward(to(gy), to(x), to(w), **hyper)
    assert_close(gw, expected_gw, np.float32, "grad weight")
    assert_close(gb, expected_gb, np.float32, "grad bias")
