"""ceil_mode's output sizes, worked out by hand, and values against the float64 reference.

PyTorch's rule (``torch.nn.MaxPool2d`` docs): with ceil_mode the output size is
``ceil((H + 2p - d(k - 1) - 1) / s) + 1``, and a last window that would *start* in
the bottom/right padding is dropped (``(out - 1) * s >= H + p``: ``out -= 1``). The
drop rule was caught reliably only by the PyTorch comparison, which skips without
torch; these cases need no torch. Each expected size below is the formula worked
through by hand, so neither numbacnn.shapes nor tests/reference.py is trusted for it.
"""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn.functional as F
import reference as ref
from helpers import DTYPES, assert_close, random_array
from numbacnn import nn

# (size, kernel, stride, padding, dilation, floor-mode size, ceil-mode size, why)
AXIS_CASES = [
    (5, 2, 2, 1, 1, 3, 3, "(5+2-1-1)/2 = 2.5 -> 4 windows, the 4th starts at 6 = H+p: dropped"),
    (6, 3, 2, 1, 1, 3, 4, "(6+2-2-1)/2 = 2.5 -> 4, the 4th starts at 6 - 1 = 5 < H + p = 7: kept"),
    (4, 2, 3, 1, 1, 2, 2, "(4+2-1-1)/3 = 1.33 -> 3, the 3rd starts at 6 >= 5: dropped"),
    (7, 3, 3, 0, 1, 2, 3, "(7-2-1)/3 = 1.33 -> 3, the 3rd starts at 6 < 7: kept (one row)"),
    (8, 2, 3, 1, 2, 3, 3, "dilated: (8+2-2-1)/3 = 2.33 -> 4, the 4th starts at 9 >= 9: dropped"),
    (9, 2, 2, 0, 1, 4, 5, "(9-1-1)/2 = 3.5 -> 5, the 5th starts at 8 < 9: kept (one row)"),
]


def _pairs(h_case, w_case):
    """Per-axis hyperparameters from one case for the rows and another for the columns."""
    return dict(kernel_size=(h_case[1], w_case[1]), stride=(h_case[2], w_case[2]),
                padding=(h_case[3], w_case[3]), dilation=(h_case[4], w_case[4]))


COMBINATIONS = [(i, j) for i in range(len(AXIS_CASES)) for j in range(len(AXIS_CASES)) if i != j][::3]


@pytest.mark.filterwarnings("ignore::numbacnn.shapes.HyperparameterWarning")  # asymmetric slides on purpose
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, cols", COMBINATIONS)
def test_max_pool2d_ceil_mode_sizes_and_values(rows, cols, dtype):
    h_case, w_case = AXIS_CASES[rows], AXIS_CASES[cols]
    hyper = _pairs(h_case, w_case)
    x = random_array(np.random.default_rng(rows * 10 + cols), (2, 3, h_case[0], w_case[0]), dtype)
    for ceil_mode, size_index in ((False, 5), (True, 6)):
        expected_shape = (2, 3, h_case[size_index], w_case[size_index])
        y = F.max_pool2d(x, **hyper, ceil_mode=ceil_mode)
        assert y.shape == expected_shape, f"ceil_mode={ceil_mode}: {h_case[7]} / {w_case[7]}"
        assert_close(y, ref.max_pool2d(x, **hyper, ceil_mode=ceil_mode), dtype, f"y ceil_mode={ceil_mode}")
        gy = random_array(np.random.default_rng(5), y.shape, dtype)
        gx = F.max_pool2d_backward(gy, x, **hyper, ceil_mode=ceil_mode)
        assert_close(gx, ref.max_pool2d_backward(gy, x, **hyper, ceil_mode=ceil_mode), dtype, "gx")
        layer = nn.MaxPool2d(**hyper, ceil_mode=ceil_mode)
        assert layer.output_shape(x.shape) == expected_shape
        assert layer(x).shape == expected_shape


@pytest.mark.parametrize("case", range(len(AXIS_CASES)))
def test_every_kept_last_window_holds_an_input_pixel(case):
    """The reason for the drop rule: with it, no output is a window of padding alone
    (which max pooling would fill with -inf). Values: an all-negative input, so a
    window that saw only padding would show -inf, not the input's value."""
    size, kernel, stride, padding, dilation, _, ceil_size, why = AXIS_CASES[case]
    x = -1.0 - np.random.default_rng(case).random((1, 1, size, size))
    y = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=True)
    assert y.shape == (1, 1, ceil_size, ceil_size), why
    assert np.isfinite(y).all() and (y < -1).all()


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("rows, cols", [(0, 1), (1, 0), (2, 3), (5, 2)])
def test_avg_pool2d_ceil_mode_sizes_and_values(rows, cols, count_include_pad):
    """avg_pool2d shares the sizes (no dilation); its divisors at the partial last window
    come from the reference's per-window rule."""
    h_case, w_case = AXIS_CASES[rows], AXIS_CASES[cols]
    if h_case[4] != 1 or w_case[4] != 1:
        pytest.skip("avg_pool2d has no dilation")
    hyper = _pairs(h_case, w_case)
    del hyper["dilation"]
    if any(2 * p > k for p, k in zip(hyper["padding"], hyper["kernel_size"])):
        pytest.skip("avg_pool2d refuses padding above kernel_size // 2 (as PyTorch)")
    x = random_array(np.random.default_rng(1), (2, 2, h_case[0], w_case[0]), np.float64)
    y = F.avg_pool2d(x, **hyper, ceil_mode=True, count_include_pad=count_include_pad)
    assert y.shape == (2, 2, h_case[6], w_case[6])
    a, out_hw = ref.avg_pool2d_matrix(x.shape[2:], **hyper, ceil_mode=True, count_include_pad=count_include_pad)
    assert_close(y, ref.apply_plane_matrix(x, a, out_hw), np.float64, "avg_pool2d ceil_mode")
