"""Output-size arithmetic and the symmetric-slide lesson."""

import pytest

from numbacnn.shapes import conv_output_size, explain_conv, pool_output_size, same_padding


@pytest.mark.parametrize("size,kernel,stride,pad,dilation,expected", [
    (64, 3, 1, 0, 1, 62), (62, 3, 1, 0, 1, 60), (7, 3, 2, 0, 1, 3), (7, 3, 3, 0, 1, 2),
    (28, 3, 1, 1, 1, 28), (10, 3, 1, 0, 2, 6), (5, 5, 1, 0, 1, 1), (4, 5, 1, 0, 1, 0),
])
def test_conv_output_size(size, kernel, stride, pad, dilation, expected):
    assert conv_output_size(size, kernel, stride, pad, pad, dilation) == expected


@pytest.mark.parametrize("size,kernel,stride,pad,ceil_mode,expected", [
    (60, 2, 2, 0, False, 30), (26, 2, 2, 0, False, 13), (5, 2, 2, 0, False, 2), (5, 2, 2, 0, True, 3),
    # PyTorch drops a last window starting beyond the input + left padding
    (5, 3, 2, 1, True, 3), (6, 3, 3, 1, True, 3), (4, 2, 3, 1, True, 2),
])
def test_pool_output_size(size, kernel, stride, pad, ceil_mode, expected):
    assert pool_output_size(size, kernel, stride, pad, 1, ceil_mode) == expected


@pytest.mark.parametrize("kernel,dilation,expected", [(3, 1, (1, 1)), (4, 1, (1, 2)), (2, 3, (1, 2)), (1, 1, (0, 0))])
def test_same_padding_puts_the_extra_row_after(kernel, dilation, expected):
    assert same_padding(kernel, dilation) == expected


@pytest.mark.parametrize("args,output,symmetric,uncovered", [
    ((7, 3, 2, 0), (3, 3), True, (0, 0)),
    ((7, 3, 3, 0), (2, 2), False, (1, 1)),
    ((7, 3, 3, 1), (3, 3), True, (0, 0)),
    ((64, 3, 1, 0), (62, 62), True, (0, 0)),
    (((7, 8), 3, 2, 0), (3, 3), False, (0, 1)),
    ((7, 3, (3, 2), (1, 0)), (3, 3), True, (0, 0)),
    ((7, 3, (3, 3), (0, 1)), (2, 3), False, (1, 0)),
])
def test_explain_conv_verdicts(args, output, symmetric, uncovered):
    explanation = explain_conv(*args)
    assert explanation.output_size == output
    assert explanation.symmetric is symmetric
    assert explanation.uncovered == uncovered
    assert (explanation.message == "") is symmetric


def test_explain_conv_suggests_fixes_that_really_are_symmetric():
    explanation = explain_conv(7, 3, stride=3, padding=0)
    assert "never covered" in explanation.message and "padding=1" in explanation.message
    assert explanation.arithmetic[0].startswith("(7 + 2*0 - 3) / 3 + 1 = 2")
    for padding in explanation.suggested_paddings:
        assert explain_conv(7, 3, stride=3, padding=padding).symmetric
    for stride in explanation.suggested_strides:
        assert explain_conv(7, 3, stride=stride, padding=0).symmetric


def test_explain_conv_kernel_larger_than_input():
    explanation = explain_conv(2, 3)
    assert not explanation.symmetric and "larger than the padded input" in explanation.message
