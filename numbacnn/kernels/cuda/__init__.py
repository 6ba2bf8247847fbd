"""CUDA backend: ``@cuda.jit`` kernels, their launch configuration, device allocation.

Every backend exposes the same names; ``numbacnn.device.backend("cuda")`` returns
this module, and importing it is the only thing in numbacnn that imports
``numba.cuda``. Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's
CUDA simulator with small launch configurations (see ``launch.py``).

As on the CPU, every kernel writes every element of its outputs, so the
dispatcher hands them uninitialised arrays from ``empty``.
"""

from numbacnn.kernels.cuda.activation import relu_backward, relu_forward
from numbacnn.kernels.cuda.conv import (
    conv2d_backward_bias,
    conv2d_backward_input,
    conv2d_backward_weight,
    conv2d_forward,
)
from numbacnn.kernels.cuda.linear import linear_backward_input, linear_backward_weight, linear_forward
from numbacnn.kernels.cuda.loss import softmax_cross_entropy
from numbacnn.kernels.cuda.memory import empty, zeros
from numbacnn.kernels.cuda.optim import adam_step, grad_accumulate, sgd_step
from numbacnn.kernels.cuda.pool import max_pool2d_backward, max_pool2d_forward

__all__ = [
    "adam_step", "conv2d_backward_bias", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_forward",
    "empty", "grad_accumulate", "linear_backward_input", "linear_backward_weight", "linear_forward",
    "max_pool2d_backward", "max_pool2d_forward", "relu_backward", "relu_forward", "sgd_step",
    "softmax_cross_entropy", "zeros",
]
from numbacnn.kernels.cuda.pool import max_pool2d_backward_indices, max_pool2d_forward_indices  # noqa: E402,F401
from numbacnn.kernels.cuda.pool import max_unpool2d_backward, max_unpool2d_forward  # noqa: E402,F401
from numbacnn.kernels.cuda.softmax import (  # noqa: E402,F401
    cross_entropy_backward, cross_entropy_forward, cross_entropy_probs_backward, cross_entropy_probs_forward,
    log_softmax_backward, log_softmax_forward, nll_loss_backward, nll_loss_forward, softmax_backward, softmax_forward,
)
from numbacnn.kernels.cuda.metrics import accumulate_loss_and_correct  # noqa: E402,F401
from numbacnn.kernels.cuda.leaky_relu import dropout_apply, leaky_relu_backward, leaky_relu_forward  # noqa: E402,F401
from numbacnn.kernels.cuda.avg_pool import (  # noqa: E402,F401
    window_avg_backward, window_avg_forward, window_max_backward, window_max_forward,
)
from numbacnn.kernels.cuda.norm import batch_norm_backward, batch_norm_forward, batch_norm_stats  # noqa: E402,F401
