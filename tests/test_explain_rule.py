"""The explainer's one rule (issue 21, item 1): ``explain_conv``'s verdict is right
for every small case, each suggestion itself passes every check the verdict makes,
and the printed verdict and the picture's title say the same thing.

The reference is a brute force written here: every kernel tap of every position
listed, one axis at a time, nothing shared with numbacnn.shapes.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numbacnn.commands.explain import explain_conv_text
from numbacnn.shapes import explain_conv

INPUTS, KERNELS, STRIDES, PADDINGS = range(1, 65), range(1, 12), range(1, 9), range(0, 11)


def brute_axis(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> dict | None:
    """Facts of one axis by listing every tap; None when the kernel does not fit."""
    padded = size + 2 * padding
    span = dilation * (kernel - 1) + 1
    if padded < span:
        return None
    starts = list(range(0, padded - span + 1, stride))
    inputs = set(range(padding, padding + size))
    read, padding_only = set(), 0
    for start in starts:
        taps = {start + dilation * t for t in range(kernel)}
        read |= taps
        padding_only += not (taps & inputs)
    return {"out": len(starts), "exact": starts[-1] + span == padded,
            "unread": len(inputs - read), "padding_only": padding_only}


def brute_sound(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> bool:
    facts = brute_axis(size, kernel, stride, padding, dilation)
    return facts is not None and facts["exact"] and facts["unread"] == 0 and facts["padding_only"] == 0


def check_against_brute_force(size, kernel, stride, padding, dilation=1):
    e = explain_conv(size, kernel, stride, padding, dilation)
    facts = brute_axis(size, kernel, stride, padding, dilation)
    case = (size, kernel, stride, padding, dilation)
    if facts is None:
        assert min(e.output_size) < 1 and not e.sound, case
        return
    assert e.output_size == (facts["out"],) * 2, case
    assert e.symmetric is facts["exact"], case
    assert e.unread == (facts["unread"],) * 2, case
    assert e.padding_only == (facts["padding_only"],) * 2, case
    assert e.sound is brute_sound(*case), case
    assert (e.message == "") is e.sound and (e.problems == ()) is e.sound, case
    # every suggestion passes every check
    for p_h, p_w in e.suggested_paddings:
        assert brute_sound(size, kernel, stride, p_h, dilation) and p_h == p_w, (case, "padding", p_h)
    for s_h, s_w in e.suggested_strides:
        assert brute_sound(size, kernel, s_h, padding, dilation) and s_h == s_w, (case, "stride", s_h)
    # and the nearest sound settings in the searched range are the ones suggested
    paddings = sorted((p for p in range(0, padding + 4 * stride + 1) if brute_sound(size, kernel, stride, p, dilation)),
                      key=lambda p: (abs(p - padding), p))[:3]
    strides = sorted((s for s in range(1, max(stride + 4, 2 * stride) + 1)
                      if brute_sound(size, kernel, s, padding, dilation)), key=lambda s: (abs(s - stride), -s))[:3]
    if not e.sound:
        assert [p for p, _ in e.suggested_paddings] == paddings, case
        assert [s for s, _ in e.suggested_strides] == strides, case


@pytest.mark.slow
@pytest.mark.parametrize("size", INPUTS)
def test_verdict_and_suggestions_match_brute_force_over_all_small_cases(size):
    """input <= 64, kernel <= 11, stride <= 8, padding <= 10: every combination."""
    for kernel, stride, padding in itertools.product(KERNELS, STRIDES, PADDINGS):
        check_against_brute_force(size, kernel, stride, padding)


@pytest.mark.parametrize("dilation", [2, 3])
def test_dilated_kernels_are_checked_tap_by_tap(dilation):
    for size, kernel, stride, padding in itertools.product(range(1, 25), range(1, 6), range(1, 5), range(0, 5)):
        check_against_brute_force(size, kernel, stride, padding, dilation)


@settings(max_examples=300, deadline=None)
@given(st.tuples(st.integers(1, 64), st.integers(1, 64)), st.tuples(st.integers(1, 11), st.integers(1, 11)),
       st.tuples(st.integers(1, 8), st.integers(1, 8)), st.tuples(st.integers(0, 10), st.integers(0, 10)))
def test_suggestions_for_rectangular_cases_pass_on_both_axes(size, kernel, stride, padding):
    e = explain_conv(size, kernel, stride, padding)
    for p in e.suggested_paddings:
        assert all(brute_sound(i, k, s, q) for i, k, s, q in zip(size, kernel, stride, p))
    for s in e.suggested_strides:
        assert all(brute_sound(i, k, t, q) for i, k, t, q in zip(size, kernel, s, padding))
    sound = all(brute_sound(*axis) for axis in zip(size, kernel, stride, padding))
    assert e.sound is sound


@pytest.mark.parametrize("args", [(7, 3, 3, 0), (7, 3, 4, 0), (7, 3, 1, 4), (7, 3, 2, 0), (9, 3, 2, 0, 2),
                                  ((7, 6), 3, (3, 2), (0, 1)), (6, 3, 2, 1), (5, 2, 2, 0)])
def test_printed_verdict_and_picture_title_come_from_the_same_facts(args):
    from numbacnn import viz

    e = explain_conv(*args)
    text = explain_conv_text(e)
    title = viz.slide_verdict(e)
    assert ("verdict: symmetric" in text) is e.sound is title.startswith("symmetric")
    assert ("verdict: NOT symmetric" in text) is (not e.sound) is title.startswith("NOT symmetric")
    for problem in e.problems:
        assert problem in title


def test_issue_case_7_3_3_0_suggests_only_fixes_that_read_every_pixel():
    """The issue's case: --stride 4 (skips row 3) and --padding 4 / 7 (windows of
    only padding) were suggested; now padding 1, stride 2 and stride 1."""
    e = explain_conv(7, 3, 3, 0)
    assert e.suggested_paddings == ((1, 1),) and e.suggested_strides == ((2, 2), (1, 1))
    text = explain_conv_text(e)
    assert "--stride 4" not in text and "--padding 4" not in text and "--padding 7" not in text


def test_stride_longer_than_the_kernel_is_not_called_symmetric():
    e = explain_conv(7, 3, 4, 0)
    assert e.symmetric and not e.sound and e.unread == (1, 1)
    assert "verdict: NOT symmetric" in explain_conv_text(e)


def test_max_pool_warning_suggests_no_stride_longer_than_the_pool():
    """MaxPool2d(2) on 5x5 suggested stride=3 (a 2x2 window that skips a row)."""
    import warnings

    import numpy as np

    from numbacnn.nn import MaxPool2d

    pool = MaxPool2d(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool(np.zeros((1, 1, 5, 5), dtype=np.float32))
    messages = [str(w.message) for w in caught]
    assert messages and "stride=3" not in messages[0] and "stride=1" in messages[0]
