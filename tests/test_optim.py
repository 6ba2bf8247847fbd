"""Optimizers and schedules against float64 NumPy references of PyTorch's update rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from numbacnn.nn import Parameter
from numbacnn.optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR


def _params(dtype, seed=0, shapes=((3, 2, 3, 3), (5,))):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]


def _grads(step, shapes, dtype):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def sgd_reference(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """torch.optim.SGD, written out in float64."""
    p = p.astype(np.float64).copy()
    buf = None
    for g in grads:
        g = g.astype(np.float64) + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p -= lr * g
    return p


def adam_reference(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    """torch.optim.Adam / AdamW, written out in float64."""
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if decoupled:
            p *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - betas[1] ** t) + eps
        p -= lr / (1 - betas[0] ** t) * m / denom
    return p


def _run(optimizer_cls, kwargs, dtype, steps=4):
    params = _params(dtype)
    shapes = [p.shape for p in params]
    start = [p.data.copy() for p in params]
    opt = optimizer_cls(params, **kwargs)
    history = []
    for step in range(steps):
        grads = _grads(step, shapes, dtype)
        history.append(grads)
        opt.zero_grad()
        for p, g in zip(params, grads):
            p.accumulate(g.copy())
        opt.step()
    return params, start, history, opt


def _check(actual, expected, dtype):
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol)


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True),
    dict(lr=0.1, weight_decay=0.1),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", SGD_CASES)
def test_sgd_matches_reference(kwargs, dtype):
    params, start, history, _ = _run(SGD, kwargs, dtype)
    for i, p in enumerate(params):
        expected = sgd_reference(start[i], [g[i] for g in history], **kwargs)
        assert p.data.dtype == dtype
        _check(p.data, expected, dtype)


ADAM_CASES = [
    (Adam, dict(lr=0.01)),
    (Adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    (Adam, dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)),
    (AdamW, dict(lr=0.02)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls,kwargs", ADAM_CASES)
def test_adam_matches_reference(cls, kwargs, dtype):
    params, start, history, _ = _run(cls, kwargs, dtype)
    ref_kwargs = dict(kwargs)
    decoupled = ref_kwargs.pop("decoupled_weight_decay", cls is AdamW)
    if cls is AdamW:
        ref_kwargs.setdefault("weight_decay", 0.01)
    for i, p in enumerate(params):
        expected = adam_reference(start[i], [g[i] for g in history], decoupled=decoupled, **ref_kwargs)
        _check(p.data, expected, dtype)


def test_parameters_without_gradient_are_skipped():
    params = _params(np.float64)
    before = [p.data.copy() for p in params]
    opt = SGD(params, lr=0.1, momentum=0.9)
    params[0].accumulate(np.ones(params[0].shape))
    opt.step()
    assert not np.array_equal(params[0].data, before[0])
    np.testing.assert_array_equal(params[1].data, before[1])


def test_gradients_accumulate_until_zero_grad():
    (p,) = _params(np.float64, shapes=((4,),))
    p.accumulate(np.ones(4))
    p.accumulate(np.full(4, 2.0))
    np.testing.assert_array_equal(p.grad, np.full(4, 3.0))
    p.zero_grad()
    assert p.grad is None


def test_state_dict_round_trip_continues_identically():
    a, start, history, opt_a = _run(Adam, dict(lr=0.01), np.float64, steps=3)
    b = [Parameter(p.data.copy()) for p in a]
    opt_b = Adam(b, lr=0.5)
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.lr == 0.01
    grads = _grads(99, [p.shape for p in a], np.float64)
    for opt, params in ((opt_a, a), (opt_b, b)):
        opt.zero_grad()
        for p, g in zip(params, grads):
            p.accumulate(g.copy())
        opt.step()
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_state_dict_rejects_wrong_shapes_and_types():
    _, _, _, opt = _run(SGD, dict(lr=0.1, momentum=0.9), np.float64, steps=1)
    state = opt.state_dict()
    other = SGD(_params(np.float64, shapes=((2,), (5,))), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="buffer '0.velocity'"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="state is for 'SGD'"):
        Adam(_params(np.float64)).load_state_dict(state)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-1.0), "lr must be"),
    (dict(lr=0.1, momentum=-0.5), "momentum must be"),
    (dict(lr=0.1, nesterov=True), "nesterov=True needs momentum"),
    (dict(lr=float("nan")), "lr must be"),
])
def test_sgd_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGD(_params(np.float64), **kwargs)


def test_optimizer_rejects_non_parameters():
    with pytest.raises(TypeError, match="params\\[0\\] must be a Parameter"):
        SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="params is empty"):
        SGD([], lr=0.1)


def test_step_lr():
    opt = SGD(_params(np.float64), lr=1.0)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    rates = []
    for _ in range(5):
        sched.step()
        rates.append(opt.lr)
    assert rates == [1.0, 0.5, 0.5, 0.25, 0.25]


def test_cosine_lr_and_resume():
    opt = SGD(_params(np.float64), lr=0.1)
    sched = CosineAnnealingLR(opt, T_max=4, eta_min=0.01)
    rates = []
    for _ in range(4):
        sched.step()
        rates.append(opt.lr)
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(1, 5)]
    np.testing.assert_allclose(rates, expected, rtol=1e-15)
    opt2 = SGD(_params(np.float64), lr=0.1)
    sched2 = CosineAnnealingLR(opt2, T_max=4, eta_min=0.01)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.lr == opt.lr


def test_schedules_match_pytorch():
    torch = pytest.importorskip("torch")
    for make, make_torch in (
        (lambda o: StepLR(o, 3, 0.3), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.3)),
        (lambda o: CosineAnnealingLR(o, 7, 0.001), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 7, 0.001)),
    ):
        opt = SGD(_params(np.float64), lr=0.1)
        sched = make(opt)
        topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        tsched = make_torch(topt)
        for _ in range(7):
            topt.step()
            tsched.step()
            sched.step()
            assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)


def test_sgd_and_adam_match_pytorch():
    torch = pytest.importorskip("torch")
    for cls, tcls, kwargs in (
        (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True)),
        (Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.02)),
        (AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.02)),
    ):
        params, start, history, _ = _run(cls, kwargs, np.float64)
        tparams = [torch.tensor(s, requires_grad=True) for s in start]
        topt = tcls(tparams, **kwargs)
        for grads in history:
            for tp, g in zip(tparams, grads):
                tp.grad = torch.tensor(g)
            topt.step()
        for p, tp in zip(params, tparams):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-12)
