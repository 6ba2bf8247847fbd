"""cross_entropy's weighted mean: the divisor is the total weight of the counted targets.

PyTorch: with class weights and ``reduction="mean"``, the loss is
``sum_i w[t_i] * l_i / sum_i w[t_i]`` over the elements whose target is not
``ignore_index``. A wrong divisor (the element count, or counting ignored elements)
was caught in some hypothesis draws and not others (3 of 16 reruns passed). Here it
is held two ways that do not depend on the draw:

- an identity between reductions, on fixed cases: ``mean == sum / total weight``
  and ``sum == sum of the "none" losses`` (independent of any reference);
- a cheap property test with many examples (CPU only, small arrays), replayed
  identically on every run by the fixed hypothesis profile of ``conftest.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numbacnn.functional as F
import reference as ref
from helpers import DTYPES, assert_close

FIXED_CASES = [
    # (logits shape, classes, ignore_index or None)
    ((5, 3), 3, None),
    ((6, 4), 4, 2),
    ((3, 3, 2, 2), 3, 0),   # spatial targets (N, C, d1, d2)
    ((2, 5, 3), 5, None),
]


def _case(shape, classes, ignore, dtype, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    target_shape = (shape[0],) + shape[2:]
    target = rng.integers(0, classes, target_shape)
    if ignore is not None:
        target.reshape(-1)[::3] = ignore  # some ignored, some counted
    weight = rng.uniform(0.2, 3.0, classes).astype(dtype)
    return logits, target, weight


def _total_weight(target, weight, ignore):
    counted = target != (ignore if ignore is not None else -100)
    return float(np.asarray(weight, np.float64)[np.where(counted, target, 0)][counted].sum())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, classes, ignore", FIXED_CASES)
def test_weighted_mean_divides_by_the_total_weight_of_counted_targets(shape, classes, ignore, dtype):
    logits, target, weight = _case(shape, classes, ignore, dtype, seed=len(shape) * 7 + classes)
    kwargs = dict(weight=weight) if ignore is None else dict(weight=weight, ignore_index=ignore)
    per_element = np.asarray(F.cross_entropy(logits, target, reduction="none", **kwargs), np.float64)
    total = float(F.cross_entropy(logits, target, reduction="sum", **kwargs))
    mean = float(F.cross_entropy(logits, target, reduction="mean", **kwargs))
    divisor = _total_weight(target, weight, ignore)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert total == pytest.approx(per_element.sum(), rel=tol)
    assert mean == pytest.approx(total / divisor, rel=tol)
    # the wrong divisors give a different number on these cases (the test can fail)
    counted = int((target != (ignore if ignore is not None else -100)).sum())
    for wrong in (counted, target.size):
        assert abs(total / wrong - total / divisor) > 100 * tol * abs(total / divisor)
    # nll_loss on log-probabilities computes its own divisor: the same rule
    log_probs = np.asarray(ref.log_softmax(logits, 1), dtype)
    nll_kwargs = {k: v for k, v in kwargs.items()}
    nll_sum = float(F.nll_loss(log_probs, target, reduction="sum", **nll_kwargs))
    assert float(F.nll_loss(log_probs, target, reduction="mean", **nll_kwargs)) == pytest.approx(
        nll_sum / divisor, rel=tol)
    # the gradient of the mean is the gradient of the sum over the same divisor
    g_mean = F.cross_entropy_backward(1.0, logits, target, reduction="mean", **kwargs)
    g_sum = F.cross_entropy_backward(1.0, logits, target, reduction="sum", **kwargs)
    assert_close(g_mean, np.asarray(g_sum, np.float64) / divisor, dtype, "grad of the mean")


@st.composite
def weighted_cases(draw):
    classes = draw(st.integers(2, 5))
    spatial = draw(st.sampled_from([(), (2,), (2, 3)]))
    batch = draw(st.integers(1, 4))
    ignore = draw(st.sampled_from([None, 0, 1]))
    smoothing = draw(st.sampled_from([0.0, 0.0, 0.2]))
    dtype = draw(st.sampled_from(DTYPES))
    return (batch, classes) + spatial, classes, ignore, smoothing, dtype


@given(case=weighted_cases(), seed=st.integers(0, 2**16))
@settings(max_examples=150)  # cheap: a few dozen numbers per example, CPU only
def test_weighted_mean_matches_reference_many_draws(case, seed):
    shape, classes, ignore, smoothing, dtype = case
    logits, target, weight = _case(shape, classes, ignore, dtype, seed)
    kwargs = dict(weight=weight, label_smoothing=smoothing)
    if ignore is not None:
        kwargs["ignore_index"] = ignore
    loss = F.cross_entropy(logits, target, **kwargs)
    expected = ref.cross_entropy(logits, target, **kwargs)
    if not np.isfinite(expected):  # every target ignored: 0 / 0, NaN as PyTorch
        assert np.isnan(loss)
        return
    assert_close(np.asarray(loss), np.asarray(expected), dtype, "weighted mean")
    grad = F.cross_entropy_backward(0.7, logits, target, **kwargs)
    assert_close(grad, ref.cross_entropy_backward(0.7, logits, target, **kwargs), dtype, "grad")
