"""CUDA backend: ``@cuda.jit`` kernels, their launch configuration, device allocation.

``numbacnn.device.backend("cuda")`` returns this module, and importing it is the
only thing in numbacnn that imports ``numba.cuda``. It provides exactly the names of
``numbacnn.kernels.interface`` (whose comments give each signature), with the same
parameter names as the CPU backend: ``tests/test_backend_interface.py`` holds it to
that list. Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's CUDA
simulator with small launch configurations (see ``launch.py``).

As on the CPU, every kernel writes every element of its outputs, so the
dispatcher hands them uninitialised arrays from ``empty``.
"""

from numbacnn.kernels.cuda.activation import relu_backward, relu_forward
from numbacnn.kernels.cuda.avg_pool import (
    window_avg_backward,
    window_avg_forward,
    window_max_backward,
    window_max_forward,
)
from numbacnn.kernels.cuda.conv import (
    conv2d_backward_bias,
    conv2d_backward_input,
    conv2d_backward_weight,
    conv2d_forward,
)
from numbacnn.kernels.cuda.dropout import dropout_apply
from numbacnn.kernels.cuda.leaky_relu import leaky_relu_backward, leaky_relu_forward
from numbacnn.kernels.cuda.linear import linear_backward_input, linear_backward_weight, linear_forward
from numbacnn.kernels.cuda.loss import softmax_cross_entropy
from numbacnn.kernels.cuda.memory import empty, zeros
from numbacnn.kernels.cuda.metrics import accumulate_loss_and_correct
from numbacnn.kernels.cuda.norm import batch_norm_backward, batch_norm_forward, batch_norm_stats
from numbacnn.kernels.cuda.optim import adam_step, grad_accumulate, sgd_step
from numbacnn.kernels.cuda.pool import (
    max_pool2d_backward,
    max_pool2d_backward_indices,
    max_pool2d_forward,
    max_pool2d_forward_indices,
    max_unpool2d_backward,
    max_unpool2d_forward,
)
from numbacnn.kernels.cuda.softmax import (
    cross_entropy_backward,
    cross_entropy_forward,
    cross_entropy_probs_backward,
    cross_entropy_probs_forward,
    log_softmax_backward,
    log_softmax_forward,
    nll_loss_backward,
    nll_loss_forward,
    softmax_backward,
    softmax_forward,
)
from numbacnn.kernels import interface

__all__ = list(interface.BACKEND_NAMES)
