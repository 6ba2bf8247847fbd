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
from numbacnn.nn.module import Parameter


def _check_nonnegative(value: Any, name: str, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{op}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


class Optimizer:
    """Base class: holds the parameters, their per-parameter state and ``lr``.

    ``state_dict()`` returns host arrays (named ``"<index>.<buffer>"``) and scalars so
    checkpoints can store it; ``load_state_dict()`` checks shapes and dtypes.
    """

    buffers: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params: list[Parameter] = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: params is empty; pass model.parameters()")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__}: params[{i}] must be a Parameter, got {type(p).__name__}")
        self.lr = _check_nonnegative(lr, "lr", type(self).__name__)
        self.step_count = 0
        # Per-parameter buffers, allocated lazily on the parameter's device.
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def zero_grad(self) -> None:
        """Forget every parameter's gradient."""
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; buffers must match the parameters."""
        if state.get("type") != type(self).__name__:
            raise ValueError(f"{type(self).__name__}.load_state_dict: state is for {state.get('type')!r}")
        new_state: list[dict[str, Any]] = [{} for _ in self.params]
        for key, value in state["buffers"].items():
            index_text, _, name = key.partition(".")
            index = int(index_text)
            if index >= len(self.params) or name not in self.buffers:
                raise KeyError(f"{type(self).__name__}.load_state_dict: unexpected buffer {key!r}")
            p = self.params[index]
            value = np.asarray(value)
            if tuple(value.shape) != p.shape or value.dtype != p.dtype:
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: buffer {key!r} is {value.shape} {value.dtype}, "
                    f"expected {p.shape} {p.dtype} like its parameter"
                )
            new_state[index][name] = to_device(np.array(value, copy=True), p.device)
        self.state = new_state
        self.step_count = int(state["step_count"])
        for name, value in state["hyperparameters"].items():
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
        """Update every parameter that has a gradient, in place."""
        self.step_count += 1
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
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
        if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
            raise ValueError(f"Adam: betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = _check_nonnegative(eps, "eps", "Adam")
        if self.eps == 0:
            raise ValueError("Adam: eps must be > 0, got 0")
        self.weight_decay = _check_nonnegative(weight_decay, "weight_decay", "Adam")
        if not isinstance(decoupled_weight_decay, bool):
            raise TypeError(f"Adam: decoupled_weight_decay must be a bool, got {decoupled_weight_decay!r}")
        self.decoupled_weight_decay = decoupled_weight_decay
        self.param_steps = [0] * len(self.params)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay,
                "decoupled_weight_decay": self.decoupled_weight_decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        steps = [int(t) for t in state.get("param_steps", [])]
        if len(steps) != len(self.params):
            raise ValueError(f"Adam.load_state_dict: param_steps has {len(steps)} entries, expected {len(self.params)}")
        self.param_steps = steps

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["param_steps"] = list(self.param_steps)
        return out

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        self.step_count += 1
        beta1, beta2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
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
        if state.get("type") != type(self).__name__:
            raise ValueError(f"{type(self).__name__}.load_state_dict: state is for {state.get('type')!r}")
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
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
