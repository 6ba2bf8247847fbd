"""The CPU weight- and bias-gradient reductions keep float64 partial sums for float32 data.

``docs/architecture.md`` promises it: grad-weight and grad-bias sum N x OH x OW
products, and float32 running sums drift. Random normal gradients cannot show it:
float32 accumulation of a few hundred values of one magnitude stays far inside the
2e-4 float32 tolerance. These gradients are built so that any float32 accumulator
across rows loses most of the answer while float64 gets it exactly:

- the input is all ones (so each product is the gradient value itself, exactly) and
  has no padding influence on the big values (below);
- "big" output rows (or whole planes) hold +-B (B = 2**20), as many + as - per filter,
  in a shuffled order, and only where every kernel tap sees them;
- the other rows (planes) hold small multiples of 2**-10.

The exact sum is the sum of the small rows (~1), while a running sum passes through
multiples of B, where float32's spacing (1/8 or more) swallows each small row whole.
Float64 (53 bits) holds 2**30 ... 2**-10 exactly. Every row's (plane's) own sum is
exact in float32, so kernels may sum within a row (the fast kernels) or a plane (the
fused 3x3 kernel) in the data's type, as they do, and still pass: what is held is
the float64 accumulation across rows / images.

Each path that has a grad-weight reduction is checked: the general kernel
(stride / dilation / groups), the register-blocked fast kernels (stride 1, >= 4
filters), the gathered strided 3x3 kernel of few channels (whole planes), and the
fused groups' bordered kernels (through ``Sequential``), for padding 0 and 1, 3x3 and
non-square kernels.
"""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn.functional as F
import reference as ref
from helpers import assert_close, relative_l2_error
from numbacnn import nn
from numbacnn.kernels.cpu import conv as cpu_conv
from numbacnn.kernels.cpu import conv_tuning

BIG = 2.0 ** 20
SMALL = 2.0 ** -10


def cancelling_gradient(rng, shape, kernel, padding, stride=(1, 1), dilation=(1, 1), in_hw=None, unit="row"):
    """dout (N, F, OH, OW) float32 as described in the module docstring.

    ``unit="row"``: each output row is all-big or all-small (kernels that sum within a
    row in the data's type and across rows in float64). ``unit="plane"``: each (image,
    filter) plane is all-big or all-small (the fused 3x3 kernel sums a whole plane in
    the data's type, then across planes in float64). Big values go only where every
    tap's input pixel is inside the image (no tap sees them through the padding), so
    every tap's sum cancels them exactly.
    """
    n, filters, out_h, out_w = shape
    dout = (rng.integers(-7, 8, shape) * SMALL).astype(np.float32)
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = kernel, padding, stride, dilation
    in_h, in_w = in_hw
    rows = [oh for oh in range(out_h) if oh * sh - ph >= 0 and oh * sh - ph + (kh - 1) * dh < in_h]
    cols = [ow for ow in range(out_w) if ow * sw - pw >= 0 and ow * sw - pw + (kw - 1) * dw < in_w]
    if unit == "row":
        slots = [(i, [oh]) for i in range(n) for oh in rows]
    else:
        slots = [(i, rows) for i in range(n)]
    for f in range(filters):
        order = rng.permutation(len(slots))
        count = (2 * len(slots) // 3) // 2 * 2  # two thirds of the slots are big, half of them +B
        for k, slot in enumerate(order[:count]):
            i, slot_rows = slots[slot]
            for oh in (slot_rows if unit == "row" else range(out_h)):
                dout[i, f, oh, :] = 0.0  # the rest of a big slot: zeros (its sum stays exact)
            for oh in slot_rows:
                dout[i, f, oh, cols] = BIG if k % 2 == 0 else -BIG
    return dout


def _check_reduction(gw, gb, dout, x, w_shape, **hyper):
    _, rgw, rgb = ref.conv2d_backward(dout, x, np.zeros(w_shape), **hyper)
    # the construction really needs float64: a float32 running sum over the rows is far off
    assert relative_l2_error(_float32_running_sum_of_planes(dout), rgb) > 0.1
    assert_close(gb, rgb, np.float32, "grad bias")
    assert_close(gw, rgw, np.float32, "grad weight")


def _float32_running_sum_of_planes(dout):
    """The bias gradient with exact (float64) plane sums added up in float32: what a
    float32 accumulator across images gives (the demonstration that this data needs
    float64; a float32 accumulator across rows loses at least as much)."""
    planes = dout.astype(np.float64).sum(axis=(2, 3))  # (N, F), exact
    out = np.zeros(dout.shape[1], np.float32)
    for i in range(dout.shape[0]):
        out = (out + planes[i].astype(np.float32)).astype(np.float32)
    return out


# (name, x shape, filters, kernel, hyperparameters): the general kernel, the fast kernels
FUNCTIONAL_CASES = [
    ("fast 3x3 pad 0", (4, 3, 26, 12), 10, (3, 3), dict(padding=(0, 0))),
    ("fast 3x3 pad 1", (4, 3, 24, 10), 10, (3, 3), dict(padding=(1, 1))),
    # kernels larger than 3x3 sum whole planes in float32 (conv_weight_grad._weight_gradient_planes_kernel):
    # all-big or all-small planes, many images; a kernel wider than 7 keeps the row kernel
    ("fast (3,5) pad (1,2) planes", (24, 2, 9, 11), 4, (3, 5), dict(padding=(1, 2))),
    ("fast (2,9) pad (1,4)", (3, 2, 24, 11), 4, (2, 9), dict(padding=(1, 4))),
    ("general stride (1,2)", (4, 3, 26, 21), 8, (3, 3), dict(stride=(1, 2), padding=(0, 0))),
    ("general dilation (2,1)", (4, 2, 28, 12), 4, (3, 3), dict(dilation=(2, 1), padding=(0, 0))),
    ("general 3 filters", (4, 3, 26, 12), 3, (3, 3), dict(padding=(0, 0))),
    # a strided 3x3 conv of few channels gathers its taps and sums whole planes in float32 (conv_gathered.py)
    ("gathered stride 2 planes", (24, 1, 14, 15), 6, (3, 3), dict(stride=(2, 2), padding=(1, 1))),
]


@pytest.mark.parametrize("name, x_shape, filters, kernel, hyper", FUNCTIONAL_CASES,
                         ids=[c[0] for c in FUNCTIONAL_CASES])
def test_functional_grad_weight_and_bias_sum_in_float64(name, x_shape, filters, kernel, hyper):
    rng = np.random.default_rng(17)
    x = np.ones(x_shape, np.float32)
    w = np.full((filters, x_shape[1]) + kernel, 0.125, np.float32)
    stride, padding, dilation = hyper.get("stride", (1, 1)), hyper.get("padding", (0, 0)), hyper.get("dilation",
                                                                                                       (1, 1))
    out_shape = F.conv2d(x, w, **hyper).shape
    gathered = cpu_conv.choose_backward_weight(filters, *kernel, *stride, *dilation, 1, x_shape[0], out_shape[3],
                                               x_shape[1])[0] == cpu_conv.GATHERED
    unit = "plane" if gathered or (stride == (1, 1) and conv_tuning.weight_gradient_by_planes(*kernel)) else "row"
    gy = cancelling_gradient(rng, out_shape, kernel, padding, stride, dilation, x_shape[2:], unit=unit)
    _, gw, gb = F.conv2d_backward(gy, x, w, **hyper)
    _check_reduction(gw, gb, gy, x, w.shape, stride=stride, padding=padding, dilation=dilation)


# Through Sequential, Conv2d -> ReLU runs as a fused group; with positive weights and
# bias on an all-ones input the ReLU passes every gradient, so gz = gy.
SEQUENTIAL_CASES = [
    # the 3x3 kernels of the fused group sum one whole plane in float32 (see kernels/cpu/fused.py),
    # and so do kernels larger than 3x3 (conv_weight_grad._weight_gradient_planes_kernel),
    # so their data is all-big or all-small per plane; many images per filter
    ("fused 3x3 pad 0", (24, 3, 10, 9), 10, 3, 0, "plane"),
    ("fused 3x3 pad 1", (24, 3, 8, 9), 10, 3, 1, "plane"),
    ("fused (3,5) pad (1,2)", (24, 2, 9, 11), 4, (3, 5), (1, 2), "plane"),
    ("fused 3x3 pad (1,0)", (3, 2, 26, 10), 8, 3, (1, 0), "row"),  # the row kernel (gz bordered (1,2))
    ("fused (5,3) pad 0 planes", (24, 2, 9, 8), 8, (5, 3), 0, "plane"),
]


def _all_passing_conv_relu(conv, x_shape):
    """(model, x, y): Sequential(conv, ReLU) with weights 0.125 and bias 0.5 on an all-ones
    input, so that the ReLU passes the whole gradient (gz = gy)."""
    conv.weight.data[...] = 0.125
    conv.bias.data[...] = 0.5
    model = nn.Sequential(conv, nn.ReLU())
    x = np.ones(x_shape, np.float32)
    y = model(x)
    assert (np.asarray(y) > 0).all()  # the ReLU passes the whole gradient
    return model, x, y


@pytest.mark.parametrize("name, x_shape, filters, kernel, padding, unit", SEQUENTIAL_CASES,
                         ids=[c[0] for c in SEQUENTIAL_CASES])
def test_fused_group_grad_weight_and_bias_sum_in_float64(name, x_shape, filters, kernel, padding, unit):
    rng = np.random.default_rng(23)
    conv = nn.Conv2d(x_shape[1], filters, kernel, padding=padding, dtype=np.float32, rng=0)
    model, x, y = _all_passing_conv_relu(conv, x_shape)
    gy = cancelling_gradient(rng, y.shape, conv.kernel_size, conv.padding, in_hw=x_shape[2:], unit=unit)
    model.zero_grad()
    model.backward(gy, input_grad=False)
    _check_reduction(conv.weight.grad, conv.bias.grad, gy, x, conv.weight.shape, padding=conv.padding)
    # and the same numbers as the layers one by one
    alone_conv = nn.Conv2d(x_shape[1], filters, kernel, padding=padding, dtype=np.float32, rng=0)
    alone_conv.weight.data[...] = 0.125
    alone_conv.bias.data[...] = 0.5
    relu = nn.ReLU()
    relu(alone_conv(x))
    alone_conv.backward(relu.backward(gy), input_grad=False)
    assert relative_l2_error(conv.weight.grad, alone_conv.weight.grad) <= 1e-6


def test_fused_strided_gathered_block_sums_weight_and_bias_in_float64(monkeypatch):
    """A fused strided first block whose grad-weight gathers its taps sums the bias in the
    same pass (``bordered_ops.strided_conv2d_backward``): whole planes in float32, then
    float64, for both."""
    rng = np.random.default_rng(31)
    x_shape, filters = (24, 1, 15, 15), 6
    conv = nn.Conv2d(1, filters, 3, stride=2, padding=1, dtype=np.float32, rng=0)
    model, x, y = _all_passing_conv_relu(conv, x_shape)
    out_shape = y.shape
    assert cpu_conv.choose_backward_weight(filters, 3, 3, 2, 2, 1, 1, 1, out_shape[0], out_shape[3],
                                           1)[0] == cpu_conv.GATHERED
    gy = cancelling_gradient(rng, out_shape, (3, 3), (1, 1), (2, 2), in_hw=x_shape[2:], unit="plane")
    from numbacnn.kernels.cpu import conv_gathered

    with_bias = []
    original = conv_gathered.backward_weight

    def spy(*args, db=None, **kwargs):
        with_bias.append(db is not None)
        return original(*args, db=db, **kwargs)

    monkeypatch.setattr(conv_gathered, "backward_weight", spy)
    model.zero_grad()
    model.backward(gy, input_grad=False)
    assert with_bias == [True]  # the fused path ran, and its gathered pass summed the bias
    _check_reduction(conv.weight.grad, conv.bias.grad, gy, x, conv.weight.shape, stride=(2, 2), padding=(1, 1))
