"""The functional API's stride-1 5x5 and 7x7 convolutions take the fused groups' 1-D
Winograd kernels where the rule says so (issue 18, item 3: "functional and fused";
sixth session): ``F.conv2d``'s forward and ``F.conv2d_backward``'s grad-input through
``conv_rows.conv_rows_kernel(..., winograd=True)``, its grad-weight through
``conv_weight_grad.weight_gradient_winograd_kernel`` (``kernels/cpu/conv.py``,
``_correlate`` and ``conv2d_backward_weight``). Checked against the float64 reference
and against the direct functional kernels on the same call. The kernels themselves
(every store mode, row blocks, NaN / Inf) are tested in tests/test_conv_winograd.py;
the float64 F(2, 7) route runs in tests/test_large_kernels.py's (2, 6, 12, 9) 7x7
case. Two shapes only: each compiles three kernels."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn.functional as F
import reference as ref
from helpers import assert_close, random_array
from numbacnn.kernels.cpu import conv_rows, conv_tuning, conv_weight_grad

# (x shape (N, C, H, W), filters, kernel, padding): float32, output rows of two vectors
# (28 columns), whole tiles of rows (F(4, 5): 28 rows of 4; F(2, 7): of 2), >= 4
# channels (for the forward; grad-input reads the filters as its channels)
CASES = [
    ((3, 6, 28, 28), 5, 5, (2, 2)),     # 5x5, 6 -> 5 filters (an odd count), batch 3
    # Tiny VGG's 7x7 layer: its forward and grad-input kernels are the ones
    # tests/test_conv_winograd.py's float32 case builds for a batch norm block's z (the same
    # compile key: loaded from the disk cache when that file ran first)
    ((4, 10, 28, 28), 10, 7, (3, 3)),
]


def _winograd_kernels_asked_for(monkeypatch, call) -> list[str]:
    """The Winograd kernel factories ``call()`` asked for, by name (spies on the two
    factories as ``kernels/cpu/conv.py`` reaches them)."""
    asked = []
    rows_factory = conv_rows.conv_rows_kernel
    weights_factory = conv_weight_grad.weight_gradient_winograd_kernel

    def rows_spy(*args, **kwargs):
        if kwargs.get("winograd"):
            asked.append("conv_winograd")
        return rows_factory(*args, **kwargs)

    def weights_spy(*args, **kwargs):
        asked.append("weight_gradient_winograd")
        return weights_factory(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(conv_rows, "conv_rows_kernel", rows_spy)
        patch.setattr(conv_weight_grad, "weight_gradient_winograd_kernel", weights_spy)
        call()
    return asked


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[0])) + f"-{c[2]}x{c[2]}")
def test_functional_winograd_matches_the_reference_and_the_direct_kernels(case, monkeypatch):
    shape, filters, kernel, pads = case
    dtype = np.float32
    rng = np.random.default_rng(kernel)
    x = random_array(rng, shape, dtype)
    w = (random_array(rng, (filters, shape[1], kernel, kernel), dtype) / kernel).astype(dtype)
    b = random_array(rng, (filters,), dtype)
    out_h = shape[2] + 2 * pads[0] - kernel + 1
    out_w = shape[3] + 2 * pads[1] - kernel + 1
    gy = random_array(rng, (shape[0], filters, out_h, out_w), dtype)
    assert conv_tuning.winograd_outputs(kernel, kernel, out_h, out_w, 4, shape[1]) > 0  # the forward's rule
    assert conv_tuning.winograd_outputs(kernel, kernel, shape[2], shape[3], 4, filters) > 0  # grad-input's

    results = {}
    asked = _winograd_kernels_asked_for(monkeypatch, lambda: results.update(
        y=F.conv2d(x, w, b, padding=pads), grads=F.conv2d_backward(gy, x, w, padding=pads)))
    # forward, grad-input and grad-weight: the comparisons below cannot pass on the direct kernels alone
    assert sorted(asked) == ["conv_winograd", "conv_winograd", "weight_gradient_winograd"], asked

    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    expected_y = ref.conv2d(x64, w64, b.astype(np.float64), padding=pads)
    expected = ref.conv2d_backward(gy.astype(np.float64), x64, w64, padding=pads)
    assert_close(results["y"], expected_y, dtype, "forward")
    for name, actual, wanted in zip(("grad-input", "grad-weight", "grad-bias"), results["grads"], expected):
        assert_close(actual, wanted, dtype, name)

    # the direct functional kernels on the same call agree to float32 rounding
    monkeypatch.setattr(conv_tuning, "WINOGRAD_ENABLED", False)
    direct_y = F.conv2d(x, w, b, padding=pads)
    direct = F.conv2d_backward(gy, x, w, padding=pads)
    scale = np.abs(expected_y).max()
    assert np.abs(results["y"] - direct_y).max() <= 1e-5 * scale
    for actual, other, wanted in zip(results["grads"], direct, expected):
        assert np.abs(actual - other).max() <= 1e-5 * np.abs(wanted).max()


def test_functional_winograd_propagates_nan():
    """A NaN in the input reaches, in the columns whose windows hold it, every output row
    of the two 4-row tiles that read it (Winograd's documented reach,
    ``conv_winograd.py``: the direct kernel would leave rows 8-10 finite); no other
    output turns NaN."""
    x = np.random.default_rng(3).standard_normal((1, 6, 28, 28)).astype(np.float32)
    w = np.full((5, 6, 5, 5), 0.01, np.float32)
    x[0, 2, 13, 9] = np.nan  # padded row 15: read by the tiles of output rows 8-11 and 12-15
    y = F.conv2d(x, w, padding=2)
    assert np.isnan(y[:, :, 8:16, 7:12]).all()  # the tiles' rows, the windows' columns
    assert not np.isnan(y[:, :, :, :7]).any() and not np.isnan(y[:, :, :, 12:]).any()  # other columns
    assert not np.isnan(y[:, :, :8]).any() and not np.isnan(y[:, :, 16:]).any()  # rows outside the 2 tiles


def _listed_and_asked(monkeypatch, model, shape: tuple, names: tuple | None = None) -> tuple[list, list]:
    """((direction, kernel) pairs that ``report.kernels.kernel_choices`` lists for the
    layers ``names`` (every layer: None), the Winograd kernels a training step of
    ``model`` on random float32 images of ``shape`` asks for, sorted)."""
    from numbacnn.report.kernels import kernel_choices

    listed = [(c.direction, c.kernel) for c in kernel_choices(model, shape, "cpu", np.float32)
              if names is None or c.names == names]
    x = random_array(np.random.default_rng(0), shape, np.float32)

    def step():
        y = model(x)
        model.backward(np.ones_like(y), input_grad=False)

    return listed, sorted(_winograd_kernels_asked_for(monkeypatch, step))


def test_info_kernels_lists_the_winograd_kernels_an_unfused_layer_runs(monkeypatch):
    """``numbacnn info --kernels`` (``report.kernels.kernel_choices``) names the Winograd
    kernels for an unfused 5x5 layer, and a training step of that layer asks for them."""
    from numbacnn import nn

    layer = nn.Conv2d(6, 5, 5, padding=2)  # the first case's layer: its kernels are built above
    listed, asked = _listed_and_asked(monkeypatch, layer, (3, 6, 28, 28))
    assert ("forward", "conv_rows.conv_rows_kernel") in listed, listed
    assert ("grad-weight", "conv_weight_grad.weight_gradient_winograd_kernel") in listed, listed
    assert asked == ["conv_winograd", "weight_gradient_winograd"]


def test_grad_input_listing_and_run_follow_the_input_shape(monkeypatch):
    """An unfused second 5x5 layer, padding 1, on 30x30 maps: its forward (28 output rows,
    whole tiles of 4) and grad-weight take Winograd, its grad-input (30 rows of dx, not
    whole tiles) the direct kernel; the listing says so, and a training step asks for
    exactly those Winograd kernels."""
    from numbacnn import nn

    model = nn.Sequential(nn.Conv2d(4, 6, 3), nn.Conv2d(6, 6, 5, padding=1))  # 32x32 -> 30x30 -> 28x28
    second, asked = _listed_and_asked(monkeypatch, model, (1, 4, 32, 32), names=("1",))
    assert ("forward", "conv_rows.conv_rows_kernel") in second, second
    assert ("grad-input", "conv_rows.correlation_kernel") in second, second
    assert ("grad-weight", "conv_weight_grad.weight_gradient_winograd_kernel") in second, second
    assert asked == ["conv_winograd", "weight_gradient_winograd"]
