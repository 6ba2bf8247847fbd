"""Optimizer update kernels (CPU): SGD, Adam and gradient accumulation.

Every kernel works on flat 1-D, C-contiguous arrays of one dtype (float32 or
float64), updates its first arguments **in place** and returns nothing. The caller
(``numbacnn.optim`` / ``numbacnn.nn``) flattens each parameter with
``.reshape(-1)`` (a view) and computes every scalar on the host, so a backend only
loops over elements. Scalars arrive as Python floats (float64) and the arithmetic
is done in float64, then stored in the array's dtype.

The CUDA backend (``numbacnn/kernels/cuda/optim.py``) must provide the same three
names with the same signatures:

``sgd_step(param, grad, velocity, lr, momentum, dampening, weight_decay, nesterov)``
    PyTorch's SGD for one parameter, element by element::

        g = grad + weight_decay * param
        if momentum != 0:
            velocity = momentum * velocity + (1 - dampening) * g
            g = g + momentum * velocity  if nesterov  else velocity
        param = param - lr * g

    ``param``, ``grad``, ``velocity`` are (n,). ``velocity`` is read and written
    only when ``momentum != 0`` (it may then be any (n,) buffer, else it is
    ignored). PyTorch's first step sets ``velocity = g`` with no dampening; the
    caller reproduces it by passing a zero velocity and ``dampening=0`` on the
    first step, so the kernel has no special case.

``adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
decoupled, bias_correction1, bias_correction2)``
    PyTorch's Adam (``decoupled=False``) or AdamW (``decoupled=True``)::

        if decoupled: param = param * (1 - lr * weight_decay)
        else:         g = grad + weight_decay * param
        exp_avg    = beta1 * exp_avg + (1 - beta1) * g
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
        denom = sqrt(exp_avg_sq) / sqrt(bias_correction2) + eps
        param = param - (lr / bias_correction1) * exp_avg / denom

    All arrays are (n,). ``bias_correction1 = 1 - beta1**t`` and
    ``bias_correction2 = 1 - beta2**t`` for the 1-based step count ``t`` are
    computed by the caller.

``grad_accumulate(grad, delta)``
    ``grad += delta`` on (n,) arrays: how layers add a new gradient into a
    parameter's existing one (on CUDA device arrays have no ``+=``).
"""

from __future__ import annotations

import math

from numba import njit, prange

from numbacnn.kernels.common import adam_update, sgd_update


# Updates of fewer elements than this run on one thread. A parallel region costs a
# fork/join (microseconds on a quiet machine, milliseconds when another process holds
# a core: every worker waits for a descheduled one), more than the work: Tiny VGG's
# SGD step over its 7,740 scalars takes ~0.1 ms serially. Measured beside a loaded
# machine (load 11, 2 cores): a Tiny VGG SGD step (10 parameters, one parallel
# region each) 15 ms, the same step serial 0.1 ms (issue 10).
SERIAL_BELOW = 1 << 15


@njit(cache=True)
def _sgd_at(param, grad, velocity, i, lr, momentum, dampening, weight_decay, nesterov):
    new_param, new_velocity = sgd_update(param[i], grad[i], velocity[i], lr, momentum, dampening,
                                         weight_decay, nesterov)
    param[i] = new_param
    if momentum != 0.0:
        velocity[i] = new_velocity


@njit(parallel=True, cache=True)
def sgd_step(param, grad, velocity, lr, momentum, dampening, weight_decay, nesterov):
    # param, grad: (n,) updated / read; velocity: (n,) momentum buffer, used when momentum != 0
    n = param.shape[0]
    if n < SERIAL_BELOW:
        for i in range(n):
            _sgd_at(param, grad, velocity, i, lr, momentum, dampening, weight_decay, nesterov)
    else:
        for i in prange(n):
            _sgd_at(param, grad, velocity, i, lr, momentum, dampening, weight_decay, nesterov)


@njit(cache=True)
def _adam_at(param, grad, exp_avg, exp_avg_sq, i, lr, beta1, beta2, eps, weight_decay, decoupled, step_size,
             sqrt_bias_correction2):
    param[i], exp_avg[i], exp_avg_sq[i] = adam_update(
        param[i], grad[i], exp_avg[i], exp_avg_sq[i], lr, beta1, beta2, eps, weight_decay, decoupled,
        step_size, sqrt_bias_correction2)


@njit(parallel=True, cache=True)
def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled,
              bias_correction1, bias_correction2):
    # param, grad, exp_avg (first moment), exp_avg_sq (second moment): all (n,)
    step_size = lr / bias_correction1
    sqrt_bias_correction2 = math.sqrt(bias_correction2)
    n = param.shape[0]
    if n < SERIAL_BELOW:
        for i in range(n):
            _adam_at(param, grad, exp_avg, exp_avg_sq, i, lr, beta1, beta2, eps, weight_decay, decoupled,
                     step_size, sqrt_bias_correction2)
    else:
        for i in prange(n):
            _adam_at(param, grad, exp_avg, exp_avg_sq, i, lr, beta1, beta2, eps, weight_decay, decoupled,
                     step_size, sqrt_bias_correction2)


@njit(parallel=True, cache=True)
def grad_accumulate(grad, delta):
    # grad += delta; both (n,)
    n = grad.shape[0]
    if n < SERIAL_BELOW:
        for i in range(n):
            grad[i] += delta[i]
    else:
        for i in prange(n):
            grad[i] += delta[i]


__all__ = ["adam_step", "grad_accumulate", "sgd_step"]
