"""Optimizers and schedules against float64 NumPy references of PyTorch's update rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from numbacnn.nn import Parameter
from numbacnn.optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR
from reference import adam as adam_reference


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


# --------------------------------------------------------------------------- #
# Bad input to the Python API: a clear error naming the argument, before anything
# is updated (issue 9, class 8)
# --------------------------------------------------------------------------- #


def _snapshot(opt):
    return [p.data.copy() for p in opt.params], opt.step_count, [dict(s) for s in opt.state]


def _assert_untouched(opt, snapshot):
    data, step_count, state = snapshot
    for p, before in zip(opt.params, data):
        np.testing.assert_array_equal(p.data, before)
    assert opt.step_count == step_count
    assert [sorted(s) for s in opt.state] == [sorted(s) for s in state]


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: Adam(ps, lr=0.1),
                                  lambda ps: AdamW(ps, lr=0.1)], ids=["SGD", "Adam", "AdamW"])
@pytest.mark.parametrize("bad_grad,error,match", [
    (np.ones(4), ValueError, r"params\[1\]\.grad has shape \(4,\), expected \(5,\)"),          # too short
    (np.ones(6), ValueError, r"params\[1\]\.grad has shape \(6,\), expected \(5,\)"),          # too long
    (np.ones((5, 1)), ValueError, r"params\[1\]\.grad has shape \(5, 1\), expected \(5,\)"),   # same size
    (np.ones(5, np.float32), TypeError, r"params\[1\]\.grad has dtype float32, expected float64"),
    (np.ones(5, np.int64), TypeError, r"params\[1\]\.grad has dtype int64, expected float64"),
    ([1.0] * 5, TypeError, r"params\[1\]\.grad must be a NumPy or CUDA array.*got list"),
])
def test_step_checks_every_gradient_before_updating_anything(make, bad_grad, error, match):
    params = _params(np.float64)
    opt = make(params)
    params[0].grad = np.ones(params[0].shape)  # a good gradient before the bad one
    params[1].grad = bad_grad
    before = _snapshot(opt)
    with pytest.raises(error, match=r"\.step: " + match):
        opt.step()
    _assert_untouched(opt, before)  # the good parameter was not updated either


def test_step_accepts_a_strided_numpy_gradient():
    """A hand-set transposed gradient has the right values: used as given."""
    (p,) = _params(np.float64, shapes=((3, 4),))
    start = p.data.copy()
    grad = np.asarray(np.random.default_rng(1).standard_normal((4, 3)).T)
    p.grad = grad
    SGD([p], lr=0.5).step()
    np.testing.assert_allclose(p.data, sgd_reference(start, [grad], lr=0.5), rtol=1e-15)


def test_step_refuses_replaced_parameter_data():
    (p,) = _params(np.float64, shapes=((4, 6),))
    opt = SGD([p], lr=0.1)
    p.data = np.zeros((6, 4))[:, ::1].T  # the right shape, but a strided view: updates would be lost
    p.grad = np.ones((4, 6))
    with pytest.raises(ValueError, match=r"SGD\.step: params\[0\]\.data must be C-contiguous"):
        opt.step()


@pytest.mark.parametrize("lr", [float("nan"), -0.1, "0.1"])
def test_step_refuses_a_bad_lr_set_after_construction(lr):
    params = _params(np.float64)
    opt = SGD(params, lr=0.1)
    for p in params:
        p.grad = np.ones(p.shape)
    opt.lr = lr
    before = _snapshot(opt)
    with pytest.raises((ValueError, TypeError), match="SGD.step: lr must be"):
        opt.step()
    _assert_untouched(opt, before)


@pytest.mark.skipif(len(__import__("helpers").available_devices()) < 2, reason="needs CUDA (or its simulator)")
def test_step_refuses_a_gradient_on_another_device():
    import numbacnn

    params = _params(np.float64)
    opt = Adam(params)
    params[0].grad = numbacnn.to_device(np.ones(params[0].shape), "cuda")
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=r"params\[0\]\.grad is on cuda but the parameter is on cpu"):
        opt.step()
    _assert_untouched(opt, before)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(betas=0.9), TypeError, r"Adam: betas must be a pair of numbers in \[0, 1\), e\.g\. betas=\(0\.9, 0\.999\), "
                                 r"got 0\.9"),
    (dict(betas=(0.9,)), TypeError, r"betas must be a pair of numbers"),
    (dict(betas="ab"), TypeError, r"betas must be a pair of numbers"),
    (dict(betas=(0.9, 1.0)), ValueError, r"Adam: betas\[1\] must be in \[0, 1\), got 1\.0"),
    (dict(betas=(float("nan"), 0.9)), ValueError, r"betas\[0\] must be in \[0, 1\)"),
    (dict(betas=("0.9", 0.999)), TypeError, r"Adam: betas\[0\] must be a number, got str '0\.9'"),
    (dict(eps=0.0), ValueError, r"Adam: eps must be a finite number > 0, got 0\.0"),
    (dict(eps=-1e-8), ValueError, r"Adam: eps must be a finite number >= 0"),
    (dict(lr="1e-3"), TypeError, r"Adam: lr must be a number, got str '1e-3'"),
    (dict(lr=float("inf")), ValueError, r"Adam: lr must be a finite number >= 0, got inf"),
    (dict(weight_decay=None), TypeError, r"Adam: weight_decay must be a number, got NoneType"),
    (dict(weight_decay=-0.1), ValueError, r"Adam: weight_decay must be a finite number >= 0"),
    (dict(decoupled_weight_decay=1), TypeError, r"decoupled_weight_decay must be a bool"),
])
def test_adam_names_the_bad_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        Adam(_params(np.float64), **kwargs)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(lr=0.1, momentum=float("nan")), ValueError, r"SGD: momentum must be a finite number >= 0, got nan"),
    (dict(lr=0.1, momentum=True), TypeError, r"SGD: momentum must be a number, got bool"),
    (dict(lr=0.1, dampening=-1), ValueError, r"SGD: dampening must be a finite number >= 0"),
    (dict(lr=0.1, weight_decay="0"), TypeError, r"SGD: weight_decay must be a number"),
    (dict(lr=[0.1]), TypeError, r"SGD: lr must be a number, got list"),
])
def test_sgd_names_the_bad_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        SGD(_params(np.float64), **kwargs)


def test_optimizer_params_must_be_an_iterable_of_distinct_parameters():
    (p,) = _params(np.float64, shapes=((3,),))
    with pytest.raises(TypeError, match=r"SGD: params must be an iterable of Parameters \(e\.g\. "
                                        r"model\.parameters\(\) or \[p\]\), got Parameter"):
        SGD(p, lr=0.1)
    with pytest.raises(TypeError, match=r"Adam: params must be an iterable of Parameters.*got ndarray"):
        Adam(np.zeros(3))
    with pytest.raises(ValueError, match=r"SGD: params\[1\] is the same Parameter as params\[0\]"):
        SGD([p, p], lr=0.1)


@pytest.mark.parametrize("data,error,match", [
    ([1.0], TypeError, r"Parameter: data must be a float32 or float64 NumPy array or CUDA device array, got list"),
    (3.0, TypeError, r"Parameter: data must be a float32 or float64 NumPy array.*got float"),
    (np.float32(3.0), TypeError, r"Parameter: data must be .* got float32"),
    (np.zeros(3, np.int64), TypeError, r"Parameter: data must be float32 or float64, got dtype int64"),
    (np.zeros((4, 6))[:, ::2], ValueError, r"Parameter: data must be C-contiguous"),
])
def test_parameter_names_what_it_accepts(data, error, match):
    with pytest.raises(error, match=match):
        Parameter(data)


def test_parameter_refuses_read_only_data():
    data = np.zeros(3)
    data.flags.writeable = False
    with pytest.raises(ValueError, match="Parameter: data is read-only"):
        Parameter(data)


def test_accumulate_checks_dtype_and_keeps_a_hand_set_strided_gradient():
    (p,) = _params(np.float64, shapes=((3, 4),))
    with pytest.raises(TypeError, match=r"Parameter\.accumulate: delta has dtype float32, expected float64"):
        p.accumulate(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"Parameter\.accumulate: delta has shape \(12,\), expected \(3, 4\)"):
        p.accumulate(np.ones(12))
    rng = np.random.default_rng(2)
    hand_set = np.asarray(rng.standard_normal((4, 3)).T)  # strided: a flat view would be a copy
    delta = rng.standard_normal((3, 4))
    p.grad = hand_set
    p.accumulate(delta)
    np.testing.assert_array_equal(p.grad, hand_set + delta)
    p.grad = np.ones((2, 2))
    with pytest.raises(ValueError, match=r"Parameter\.accumulate: grad has shape \(2, 2\), expected \(3, 4\)"):
        p.accumulate(delta)


def test_load_state_dict_refuses_foreign_states_and_changes_nothing():
    _, _, _, opt = _run(SGD, dict(lr=0.1, momentum=0.9), np.float64, steps=1)
    good = opt.state_dict()
    before = opt.state_dict()
    bad_states = [
        ({**good, "hyperparameters": {**good["hyperparameters"], "params": []}}, ValueError,
         r"unexpected hyperparameter 'params'"),
        ({**good, "hyperparameters": {**good["hyperparameters"], "lr": -1.0}}, ValueError, r"lr must be a finite"),
        ({**good, "hyperparameters": {**good["hyperparameters"], "nesterov": "yes"}}, TypeError,
         r"nesterov must be a bool"),
        ({k: v for k, v in good.items() if k != "buffers"}, ValueError, r"state has no 'buffers' entry"),
        ({**good, "buffers": {"x.velocity": np.zeros(3)}}, ValueError, r"unexpected buffer 'x\.velocity'"),
        ({**good, "step_count": -3}, ValueError, r"step_count must be an int >= 0"),
        ([1, 2], TypeError, r"state must be a dict"),
    ]
    for state, error, match in bad_states:
        with pytest.raises(error, match=r"SGD\.load_state_dict: " + match):
            opt.load_state_dict(state)
        after = opt.state_dict()
        assert after["hyperparameters"] == before["hyperparameters"]
        assert after["step_count"] == before["step_count"]
        for key in before["buffers"]:
            np.testing.assert_array_equal(after["buffers"][key], before["buffers"][key])
    adam = Adam(_params(np.float64))
    state = adam.state_dict()
    with pytest.raises(ValueError, match=r"Adam\.load_state_dict: param_steps must be 2 ints >= 0"):
        adam.load_state_dict({**state, "param_steps": [1]})
    with pytest.raises(TypeError, match=r"Adam\.load_state_dict: betas must be a pair"):
        adam.load_state_dict({**state, "hyperparameters": {**state["hyperparameters"], "betas": 0.9}})


def test_schedulers_name_bad_arguments():
    opt = SGD(_params(np.float64), lr=0.1)
    with pytest.raises(TypeError, match=r"StepLR: optimizer must be an Optimizer.*got dict"):
        StepLR({"lr": 0.1}, step_size=1)
    with pytest.raises(ValueError, match=r"StepLR: step_size must be a positive int, got 0"):
        StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match=r"StepLR: gamma must be a finite number >= 0"):
        StepLR(opt, step_size=1, gamma=float("nan"))
    with pytest.raises(ValueError, match=r"CosineAnnealingLR: T_max must be a positive int, got 2\.5"):
        CosineAnnealingLR(opt, T_max=2.5)
    sched = StepLR(opt, step_size=2)
    with pytest.raises(ValueError, match=r"StepLR\.load_state_dict: state has no 'last_epoch' entry"):
        sched.load_state_dict({"type": "StepLR", "base_lr": 0.1})
    with pytest.raises(ValueError, match=r"StepLR\.load_state_dict: last_epoch must be an int >= 0, got -1"):
        sched.load_state_dict({"type": "StepLR", "base_lr": 0.1, "last_epoch": -1})
    assert (sched.last_epoch, opt.lr) == (0, 0.1)


@pytest.mark.parametrize("make, buffer", [(lambda ps: SGD(ps, lr=0.1, momentum=0.9), "velocity"),
                                          (lambda ps: Adam(ps), "exp_avg")])
def test_step_refuses_a_parameter_resized_after_its_buffers_were_made(make, buffer):
    params = _params(np.float64)
    opt = make(params)
    for p in params:
        p.grad = np.ones(p.shape)
    opt.step()
    params[1].data = np.zeros(50)  # was (5,): the kernel would walk past the old buffer's end
    params[1].grad = np.ones(50)
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=rf"params\[1\] is now \(50,\) float64 but its '{buffer}' buffer is "
                                         rf"\(5,\) float64"):
        opt.step()
    _assert_untouched(opt, before)
