"""Optimizers when parameters get gradients at different steps.

PyTorch keeps each parameter's state on its own: ``state['step']`` counts the steps
in which *that* parameter had a gradient, Adam's bias corrections
``1 - beta ** step`` use it, SGD's momentum buffer starts (``v = g``, no dampening)
at the parameter's own first step, and a parameter whose ``grad`` is None is left
alone entirely (no weight decay, no step counted). A network with a frozen layer
thawed later, or a branch used only in some batches, depends on it.

Every other optimizer test gives every parameter a gradient at every step, where
the optimizer's global step count and each parameter's own are the same number.
Here three parameters get gradients on different schedules, and the result is held
against the float64 formulas written out below (always) and against ``torch.optim``
(when torch is installed), including across a ``state_dict`` save and restore.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from numbacnn.nn import Parameter
from numbacnn.optim import SGD, Adam, AdamW
from reference import adam as _adam_over_own_steps  # the one written-out Adam

STEPS = 7
# which steps (0-based) each parameter has a gradient in
SCHEDULES = [
    set(range(STEPS)),      # every step
    {3, 4, 5, 6},           # starts late (a layer unfrozen at step 3)
    {0, 1, 4, 6},           # skips steps 2, 3 and 5
]
SHAPES = [(3, 2, 3), (5,), (2, 4)]


def _start(dtype):
    rng = np.random.default_rng(21)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _grad(step, index, dtype):
    # large enough against the weights that the bias correction matters
    return np.random.default_rng(500 + 10 * step + index).standard_normal(SHAPES[index]).astype(dtype)


def adam_reference(p, steps_with_grad, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    """torch.optim.Adam / AdamW for one parameter in float64; ``steps_with_grad`` is
    the list of (global step, gradient) in which it had a gradient. The bias
    correction uses the parameter's own count ``t``: reference.adam applied to
    the steps this parameter had a gradient in, whatever their global numbers."""
    return _adam_over_own_steps(np.asarray(p), [g for _, g in steps_with_grad], lr, betas, eps, weight_decay,
                                decoupled)


def sgd_reference(p, steps_with_grad, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """torch.optim.SGD for one parameter in float64: the momentum buffer is made
    (v = g, no dampening) at the parameter's own first gradient."""
    p = np.asarray(p, np.float64).copy()
    buf = None
    for _, g in steps_with_grad:
        g = np.asarray(g, np.float64) + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p -= lr * g
    return p


CASES = [
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.25, weight_decay=0.01), sgd_reference, {}),
    (SGD, dict(lr=0.05, momentum=0.8, weight_decay=0.02, nesterov=True), sgd_reference, {}),
    # betas far from 1 - beta1**t: a wrong t changes the first steps by tens of percent
    (Adam, dict(lr=0.1, betas=(0.5, 0.7)), adam_reference, {}),
    (Adam, dict(lr=0.05, betas=(0.9, 0.999), weight_decay=0.03), adam_reference, {}),
    (AdamW, dict(lr=0.05, betas=(0.6, 0.9), weight_decay=0.1), adam_reference, dict(decoupled=True)),
]
IDS = ["sgd-momentum-dampening", "sgd-nesterov", "adam-small-betas", "adam-l2", "adamw"]


def _run(cls, kwargs, dtype, save_at=None):
    """The optimizer over the schedules; with ``save_at``, a new optimizer restored
    from ``state_dict()`` continues from that step (a resumed run)."""
    params = [Parameter(s.copy()) for s in _start(dtype)]
    opt = cls(params, **kwargs)
    for step in range(STEPS):
        if step == save_at:
            saved = opt.state_dict()
            opt = cls(params, **kwargs)
            opt.load_state_dict(saved)
        opt.zero_grad()
        for i, p in enumerate(params):
            if step in SCHEDULES[i]:
                p.accumulate(_grad(step, i, dtype))
        opt.step()
    return [np.array(p.data) for p in params]


def _expected(reference, kwargs, extra, dtype):
    ref_kwargs = {k: v for k, v in kwargs.items() if k != "decoupled_weight_decay"}
    return [reference(start, [(s, _grad(s, i, dtype)) for s in sorted(SCHEDULES[i])], **ref_kwargs, **extra)
            for i, start in enumerate(_start(dtype))]


def _assert_close(actual, expected, dtype, what):
    tol = 1e-12 if dtype == np.float64 else 3e-6
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("save_at", [None, 4], ids=["straight", "resumed-at-4"])
@pytest.mark.parametrize("cls, kwargs, reference, extra", CASES, ids=IDS)
def test_parameters_with_own_schedules_follow_the_formulas(cls, kwargs, reference, extra, save_at, dtype):
    got = _run(cls, kwargs, dtype, save_at)
    for i, (actual, expected) in enumerate(zip(got, _expected(reference, kwargs, extra, dtype))):
        assert actual.dtype == dtype
        _assert_close(actual, expected, dtype, f"parameter {i} (gradients at steps {sorted(SCHEDULES[i])})")


def test_a_wrong_step_count_would_be_seen():
    """The schedules are chosen so that Adam with the optimizer's step count instead
    of each parameter's gives values far outside the tolerance (the test above can
    fail): parameter 1's first update at global step 4 vs its own step 1."""
    start = _start(np.float64)[1]
    own = adam_reference(start, [(s, _grad(s, 1, np.float64)) for s in sorted(SCHEDULES[1])], lr=0.1,
                         betas=(0.5, 0.7))
    # the same updates with t = the global step number (4, 5, 6, 7)
    p, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for s in sorted(SCHEDULES[1]):
        g, t = _grad(s, 1, np.float64), s + 1
        m = 0.5 * m + 0.5 * g
        v = 0.7 * v + 0.3 * g * g
        p -= 0.1 / (1 - 0.5 ** t) * m / (np.sqrt(v) / math.sqrt(1 - 0.7 ** t) + 1e-8)
    assert np.max(np.abs(p - own)) > 1e-3


@pytest.mark.parametrize("cls, kwargs, reference, extra", CASES, ids=IDS)
def test_parameters_with_own_schedules_match_torch(cls, kwargs, reference, extra):
    torch = pytest.importorskip("torch")
    tcls = {SGD: torch.optim.SGD, Adam: torch.optim.Adam, AdamW: torch.optim.AdamW}[cls]
    start = _start(np.float64)
    tparams = [torch.tensor(s, requires_grad=True) for s in start]
    topt = tcls(tparams, **kwargs)
    for step in range(STEPS):
        for i, tp in enumerate(tparams):
            tp.grad = torch.tensor(_grad(step, i, np.float64)) if step in SCHEDULES[i] else None
        topt.step()
    got = _run(cls, kwargs, np.float64)
    for i, (actual, tp) in enumerate(zip(got, tparams)):
        np.testing.assert_allclose(actual, tp.detach().numpy(), rtol=1e-12, atol=1e-12, err_msg=f"parameter {i}")
    # and the state PyTorch keeps per parameter is the count of its own steps
    if cls is not SGD:
        assert [int(topt.state[tp]["step"]) for tp in tparams] == [len(s) for s in SCHEDULES]
