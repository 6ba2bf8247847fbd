"""Optimizers (SGD, Adam/AdamW) and learning-rate schedules (StepLR, CosineAnnealingLR).

The update rules are PyTorch's, element for element; the arithmetic runs in the
device's ``sgd_step`` / ``adam_step`` kernels (``numbacnn/kernels/<device>/optim.py``)
on each parameter flattened to 1-D. Parameters without a gradient are skipped, as
in PyTorch.

Example
-------
>>> opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
>>> model.zero_grad(); model.backward(grad_logits); opt.step()
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from numbacnn.device import backend, to_device, to_host
from numbacnn.nn.module import Parameter, check_parameter_data


def _check_number(value: Any, name: str, op: str) -> float:
    """``value`` as a float; TypeError unless it is a real number (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{op}: {name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def _check_nonnegative(value: Any, name: str, op: str) -> float:
    """``value`` as a float; TypeError for a non-number, ValueError unless finite and >= 0."""
    number = _check_number(value, name, op)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{op}: {name} must be a finite number >= 0, got {value!r}")
    return number


def _check_betas(betas: Any, op: str) -> tuple[float, float]:
    """Adam's ``betas``: a pair of numbers, each in [0, 1)."""
    accepted = "a pair of numbers in [0, 1), e.g. betas=(0.9, 0.999)"
    if isinstance(betas, (str, bytes)) or not isinstance(betas, (tuple, list, np.ndarray)) or len(betas) != 2:
        raise TypeError(f"{op}: betas must be {accepted}, got {betas!r}")
    pair = tuple(_check_number(b, f"betas[{i}]", op) for i, b in enumerate(betas))
    for i, b in enumerate(pair):
        if not 0.0 <= b < 1.0:  # also refuses NaN
            raise ValueError(f"{op}: betas[{i}] must be in [0, 1), got {betas[i]!r} ({accepted})")
    return pair[0], pair[1]


class Optimizer:
    """Base class: holds the parameters, their per-parameter state and ``lr``.

    ``state_dict()`` returns host arrays (named ``"<index>.<buffer>"``) and scalars so
    checkpoints can store it; ``load_state_dict()`` checks shapes and dtypes.
    """

    buffers: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        op = type(self).__name__
        if isinstance(params, (Parameter, np.ndarray)) or not isinstance(params, Iterable):
            raise TypeError(f"{op}: params must be an iterable of Parameters (e.g. model.parameters() or [p]), "
                            f"got {type(params).__name__}")
        self.params: list[Parameter] = list(params)
        if not self.params:
            raise ValueError(f"{op}: params is empty; pass model.parameters()")
        seen: dict[int, int] = {}
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{op}: params[{i}] must be a Parameter, got {type(p).__name__}")
            if id(p) in seen:
                raise ValueError(f"{op}: params[{i}] is the same Parameter as params[{seen[id(p)]}]; "
                                 f"each may appear once (it would be updated twice per step)")
            seen[id(p)] = i
        self.lr = _check_nonnegative(lr, "lr", op)
        self.step_count = 0
        # Per-parameter buffers, allocated lazily on the parameter's device.
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def zero_grad(self) -> None:
        """Forget every parameter's gradient."""
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _parameters_to_update(self) -> list[int]:
        """Indices of the parameters that have a gradient, after checking every one of
        them (data, gradient shape/dtype/device) and ``lr``, so that a bad gradient
        raises before any parameter is changed and never reaches a kernel."""
        op = f"{type(self).__name__}.step"
        _check_nonnegative(self.lr, "lr", op)  # a scheduler or the user may have set it
        indices = []
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            check_parameter_data(p.data, f"{op}: params[{i}].data")
            p.check_gradient(p.grad, f"{op}: params[{i}].grad")
            for name, buf in self.state[i].items():
                # a parameter whose data was replaced by another shape would make the
                # kernel walk past the end of its old-sized buffer
                if tuple(buf.shape) != p.shape or np.dtype(buf.dtype) != p.dtype:
                    raise ValueError(
                        f"{op}: params[{i}] is now {p.shape} {p.dtype} but its {name!r} buffer is "
                        f"{tuple(buf.shape)} {np.dtype(buf.dtype)}: its data was replaced after the optimizer "
                        f"started (create a new optimizer for the new parameters)"
                    )
            indices.append(i)
        return indices

    def _buffer(self, index: int, name: str) -> Any:
        """The named state buffer of parameter ``index``: zeros of its shape, on its
        device and in its dtype, created on first use and moved if the parameter moved."""
        p = self.params[index]
        buf = self.state[index].get(name)
        if buf is None:
            buf = backend(p.device).zeros(p.shape, p.dtype)
            self.state[index][name] = buf
        elif type(buf) is not type(p.data):
            buf = to_device(to_host(buf), p.device)
            self.state[index][name] = buf
        return buf

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr}

    def state_dict(self) -> dict[str, Any]:
        """{"step_count", "hyperparameters", "buffers": {"<i>.<name>": host array}}."""
        buffers = {}
        for i, st in enumerate(self.state):
            for name, buf in st.items():
                buffers[f"{i}.{name}"] = np.array(to_host(buf), copy=True)
        return {"type": type(self).__name__, "step_count": self.step_count,
                "hyperparameters": self.hyperparameters(), "buffers": buffers}

    def _checked_hyperparameter(self, name: str, value: Any, op: str) -> Any:
        """A saved hyperparameter, checked as the constructor checks it."""
        if name in ("nesterov", "decoupled_weight_decay"):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
            return bool(value)
        if name == "betas":
            return _check_betas(value, op)
        number = _check_nonnegative(value, name, op)
        if name == "eps" and number == 0:
            raise ValueError(f"{op}: eps must be a finite number > 0, got {value!r}")
        return number

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; buffers must match the parameters.

        Everything is checked before anything changes: a foreign or hand-edited state
        raises (ValueError / TypeError naming the entry) and leaves the optimizer as
        it was.
        """
        op = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict):
            raise TypeError(f"{op}: state must be a dict from state_dict(), got {type(state).__name__}")
        if state.get("type") != type(self).__name__:
            raise ValueError(f"{op}: state is for {state.get('type')!r}")
        for key in ("step_count", "hyperparameters", "buffers"):
            if key not in state:
                raise ValueError(f"{op}: state has no {key!r} entry (not a state_dict() of {type(self).__name__})")
        if not isinstance(state["buffers"], dict) or not isinstance(state["hyperparameters"], dict):
            raise TypeError(f"{op}: state's 'buffers' and 'hyperparameters' must be dicts")
        step_count = state["step_count"]
        if isinstance(step_count, bool) or not isinstance(step_count, (int, np.integer)) or step_count < 0:
            raise ValueError(f"{op}: step_count must be an int >= 0, got {step_count!r}")
        known = self.hyperparameters()
        hyperparameters = {}
        for name, value in state["hyperparameters"].items():
            if name not in known:
                raise ValueError(f"{op}: unexpected hyperparameter {name!r}; expected some of {sorted(known)}")
            hyperparameters[name] = self._checked_hyperparameter(name, value, op)
        new_state: list[dict[str, Any]] = [{} for _ in self.params]
        for key, value in state["buffers"].items():
            index_text, _, name = str(key).partition(".")
            if not index_text.isdigit() or int(index_text) >= len(self.params) or name not in self.buffers:
                raise ValueError(
                    f"{op}: unexpected buffer {key!r}; expected '<parameter index>.<name>' with an index below "
                    f"{len(self.params)} and a name in {self.buffers}"
                )
            index = int(index_text)
            p = self.params[index]
            value = np.asarray(value)
            if tuple(value.shape) != p.shape or value.dtype != p.dtype:
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: buffer {key!r} is {value.shape} {value.dtype}, "
                    f"expected {p.shape} {p.dtype} like its parameter"
                )
            new_state[index][name] = to_device(np.array(value, copy=True), p.device)
        self.state = new_state
        self.step_count = int(step_count)
        for name, value in hyperparameters.items():
            setattr(self, name, value)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

    Exactly ``torch.optim.SGD``: ``g = grad + weight_decay*p``; with momentum,
    ``v = g`` on the first step and ``v = momentum*v + (1-dampening)*g`` after;
    ``g = g + momentum*v`` (Nesterov) or ``g = v``; ``p -= lr*g``.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float
    momentum, dampening, weight_decay : float, >= 0
    nesterov : bool
        Needs momentum > 0 and dampening == 0 (as PyTorch).
    """

    buffers = ("velocity",)

    def __init__(self, params: Iterable[Parameter], lr: float = 0.01, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, lr)
        self.momentum = _check_nonnegative(momentum, "momentum", "SGD")
        self.dampening = _check_nonnegative(dampening, "dampening", "SGD")
        self.weight_decay = _check_nonnegative(weight_decay, "weight_decay", "SGD")
        if not isinstance(nesterov, bool):
            raise TypeError(f"SGD: nesterov must be a bool, got {nesterov!r}")
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                f"SGD: nesterov=True needs momentum > 0 and dampening == 0, got momentum={momentum}, "
                f"dampening={dampening}"
            )
        self.nesterov = nesterov

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov}

    def step(self) -> None:
        """Update every parameter that has a gradient, in place.

        Raises
        ------
        TypeError, ValueError
            A gradient's shape, dtype or device differs from its parameter's (or a
            parameter's data was replaced by an unusable array); nothing is updated.
        """
        to_update = self._parameters_to_update()
        self.step_count += 1
        for i in to_update:
            p = self.params[i]
            first = "velocity" not in self.state[i]
            if self.momentum != 0:
                velocity = self._buffer(i, "velocity").reshape(-1)
            else:
                velocity = p.grad.reshape(-1)  # not touched when momentum == 0
            # PyTorch's first momentum step is v = g (no dampening): zero v + dampening 0.
            dampening = 0.0 if first else self.dampening
            backend(p.device).sgd_step(p.data.reshape(-1), p.grad.reshape(-1), velocity, self.lr,
                                       self.momentum, dampening, self.weight_decay, self.nesterov)


class Adam(Optimizer):
    """Adam with bias correction; ``decoupled_weight_decay=True`` makes it AdamW.

    Exactly ``torch.optim.Adam`` (``amsgrad=False``) / ``torch.optim.AdamW``.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float
    betas : (float, float), each in [0, 1)
    eps : float > 0
    weight_decay : float >= 0
        L2 penalty added to the gradient (Adam) or, when decoupled, a direct
        ``p *= 1 - lr*weight_decay`` shrink (AdamW).
    decoupled_weight_decay : bool
    """

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, lr)
        op = type(self).__name__
        self.betas = _check_betas(betas, op)
        self.eps = _check_nonnegative(eps, "eps", op)
        if self.eps == 0:
            raise ValueError(f"{op}: eps must be a finite number > 0, got {eps!r}")
        self.weight_decay = _check_nonnegative(weight_decay, "weight_decay", op)
        if not isinstance(decoupled_weight_decay, bool):
            raise TypeError(f"{op}: decoupled_weight_decay must be a bool, got {decoupled_weight_decay!r}")
        self.decoupled_weight_decay = decoupled_weight_decay
        self.param_steps = [0] * len(self.params)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay,
                "decoupled_weight_decay": self.decoupled_weight_decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        op = f"{type(self).__name__}.load_state_dict"
        steps = state.get("param_steps", []) if isinstance(state, dict) else []
        if isinstance(state, dict) and state.get("type") == type(self).__name__ and (  # else super() says why
                isinstance(steps, (str, bytes)) or not isinstance(steps, (list, tuple, np.ndarray))
                or len(steps) != len(self.params)
                or not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t >= 0 for t in steps)):
            raise ValueError(f"{op}: param_steps must be {len(self.params)} ints >= 0 (one per parameter), "
                             f"got {steps!r}")
        super().load_state_dict(state)
        self.param_steps = [int(t) for t in steps]

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["param_steps"] = list(self.param_steps)
        return out

    def step(self) -> None:
        """Update every parameter that has a gradient, in place.

        Raises
        ------
        TypeError, ValueError
            As :meth:`SGD.step`; nothing is updated.
        """
        to_update = self._parameters_to_update()
        self.step_count += 1
        beta1, beta2 = self.betas
        for i in to_update:
            p = self.params[i]
            # Each parameter counts its own steps (PyTorch's per-parameter "step"),
            # so a parameter that missed a step keeps a correct bias correction.
            self.param_steps[i] += 1
            t = self.param_steps[i]
            exp_avg = self._buffer(i, "exp_avg").reshape(-1)
            exp_avg_sq = self._buffer(i, "exp_avg_sq").reshape(-1)
            backend(p.device).adam_step(p.data.reshape(-1), p.grad.reshape(-1), exp_avg, exp_avg_sq, self.lr,
                                        beta1, beta2, self.eps, self.weight_decay, self.decoupled_weight_decay,
                                        1.0 - beta1 ** t, 1.0 - beta2 ** t)


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``; default weight_decay 0.01)."""

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, decoupled_weight_decay=True)


# --------------------------------------------------------------------------- #
# learning-rate schedules (call .step() once per epoch, after the optimizer's)
# --------------------------------------------------------------------------- #


class LRScheduler:
    """Sets ``optimizer.lr`` from the epoch count; closed forms, so resuming from a
    saved ``last_epoch`` gives the same rates as an uninterrupted run."""

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: optimizer must be an Optimizer (SGD, Adam, AdamW), "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def lr_at(self, epoch: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set the optimizer's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self) -> float:
        return self.optimizer.lr

    def state_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (checked first; a bad state changes nothing)."""
        op = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict) or state.get("type") != type(self).__name__:
            found = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{op}: state is for {found!r}")
        for key in ("base_lr", "last_epoch"):
            if key not in state:
                raise ValueError(f"{op}: state has no {key!r} entry")
        base_lr = _check_nonnegative(state["base_lr"], "base_lr", op)
        last_epoch = state["last_epoch"]
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, (int, np.integer)) or last_epoch < 0:
            raise ValueError(f"{op}: last_epoch must be an int >= 0, got {last_epoch!r}")
        self.base_lr = base_lr
        self.last_epoch = int(last_epoch)
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size) (``torch.optim.lr_scheduler.StepLR``)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        if isinstance(step_size, bool) or not isinstance(step_size, (int, np.integer)) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive int, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _check_nonnegative(gamma, "gamma", "StepLR")
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2
    (``torch.optim.lr_scheduler.CosineAnnealingLR``'s closed form)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803
        if isinstance(T_max, bool) or not isinstance(T_max, (int, np.integer)) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive int, got {T_max!r}")
        self.T_max = int(T_max)
        self.eta_min = _check_nonnegative(eta_min, "eta_min", "CosineAnnealingLR")
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


__all__ = ["SGD", "Adam", "AdamW", "CosineAnnealingLR", "LRScheduler", "Optimizer", "StepLR"]
