"""Optimizer update kernels (CUDA): SGD, Adam and gradient accumulation.

The same names, signatures and arithmetic as ``numbacnn/kernels/cpu/optim.py``
(whose docstring is the specification): flat 1-D, C-contiguous device arrays of one
dtype, updated **in place**; scalars arrive as Python floats and the arithmetic is
done in float64, then stored in the array's dtype. Elementwise, so each element is
owned by one thread and the result does not depend on the launch configuration.
"""

from __future__ import annotations

import math

from numba import cuda

from numbacnn.kernels.common import adam_update, sgd_update
from numbacnn.kernels.cuda.launch import SIMULATOR, blocks_for, configured

OPTIM_THREADS = 8 if SIMULATOR else 256
OPTIM_MAX_BLOCKS = 2 if SIMULATOR else 4096


@cuda.jit
def sgd_step_kernel(param, grad, velocity, lr, momentum, dampening, weight_decay, nesterov):
    # param (n,) updated; grad (n,); velocity (n,) momentum buffer, read and written when momentum != 0
    for i in range(cuda.grid(1), param.shape[0], cuda.gridsize(1)):
        new_param, new_velocity = sgd_update(param[i], grad[i], velocity[i], lr, momentum, dampening,
                                             weight_decay, nesterov)
        param[i] = new_param
        if momentum != 0.0:
            velocity[i] = new_velocity


@cuda.jit
def adam_step_kernel(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled,
                     bias_correction1, bias_correction2):
    # param (n,) updated; grad (n,); exp_avg, exp_avg_sq (n,) first and second moments, updated
    step_size = lr / bias_correction1
    sqrt_bias_correction2 = math.sqrt(bias_correction2)
    for i in range(cuda.grid(1), param.shape[0], cuda.gridsize(1)):
        new_param, new_exp_avg, new_exp_avg_sq = adam_update(
            param[i], grad[i], exp_avg[i], exp_avg_sq[i], lr, beta1, beta2, eps, weight_decay, decoupled,
            step_size, sqrt_bias_correction2)
        param[i] = new_param
        exp_avg[i] = new_exp_avg
        exp_avg_sq[i] = new_exp_avg_sq


@cuda.jit
def grad_accumulate_kernel(grad, delta):
    # grad (n,) updated; delta (n,)
    for i in range(cuda.grid(1), grad.shape[0], cuda.gridsize(1)):
        grad[i] += delta[i]


def _blocks(n: int) -> int:
    return blocks_for(n, OPTIM_THREADS, OPTIM_MAX_BLOCKS)


def sgd_step(param, grad, velocity, lr, momentum, dampening, weight_decay, nesterov) -> None:
    """PyTorch's SGD update of one flat parameter, in place (see the CPU kernel)."""
    configured(sgd_step_kernel, _blocks(param.shape[0]), OPTIM_THREADS)(
        param, grad, velocity, float(lr), float(momentum), float(dampening), float(weight_decay), bool(nesterov))


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled,
              bias_correction1, bias_correction2) -> None:
    """PyTorch's Adam / AdamW update of one flat parameter, in place (see the CPU kernel)."""
    configured(adam_step_kernel, _blocks(param.shape[0]), OPTIM_THREADS)(
        param, grad, exp_avg, exp_avg_sq, float(lr), float(beta1), float(beta2), float(eps), float(weight_decay),
        bool(decoupled), float(bias_correction1), float(bias_correction2))


def grad_accumulate(grad, delta) -> None:
    """grad += delta on flat (n,) device arrays."""
    configured(grad_accumulate_kernel, _blocks(grad.shape[0]), OPTIM_THREADS)(grad, delta)


__all__ = ["adam_step", "grad_accumulate", "sgd_step"]
