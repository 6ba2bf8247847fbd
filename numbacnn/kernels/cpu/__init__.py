"""CPU backend: ``@njit(parallel=True, cache=True)`` kernels and host allocation.

``numbacnn.device.backend("cpu")`` returns this module. It provides exactly the
names of ``numbacnn.kernels.interface`` (whose comments give each signature), with
the same parameter names as the CUDA backend: ``tests/test_backend_interface.py``
holds it to that list.
"""

import numpy as np

from numbacnn.kernels.cpu.activation import relu_backward, relu_forward
from numbacnn.kernels.cpu.avg_pool import (
    window_avg_backward,
    window_avg_forward,
    window_max_backward,
    window_max_forward,
)
from numbacnn.kernels.cpu.conv import (
    conv2d_backward_bias,
    conv2d_backward_input,
    conv2d_backward_weight,
    conv2d_forward,
)
from numbacnn.kernels.cpu.dropout import dropout_apply
from numbacnn.kernels.cpu.leaky_relu import leaky_relu_backward, leaky_relu_forward
from numbacnn.kernels.cpu.linear import linear_backward_input, linear_backward_weight, linear_forward
from numbacnn.kernels.cpu.loss import softmax_cross_entropy
from numbacnn.kernels.cpu.metrics import accumulate_loss_and_correct
from numbacnn.kernels.cpu.norm import batch_norm_backward, batch_norm_forward, batch_norm_stats
from numbacnn.kernels.cpu.optim import adam_step, grad_accumulate, sgd_step
from numbacnn.kernels.cpu.pool import (
    max_pool2d_backward,
    max_pool2d_backward_indices,
    max_pool2d_forward,
    max_pool2d_forward_indices,
    max_unpool2d_backward,
    max_unpool2d_forward,
)
from numbacnn.kernels.cpu.softmax import (
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

# The fused wing's kernel modules (interface.CPU_FAST_WING_MODULES; CPU only):
# numbacnn/fused reaches them as backend("cpu").conv_rows etc.
from numbacnn.kernels.cpu import (  # noqa: F401
    bordered, conv, conv_fft, conv_gathered, conv_lanes, conv_rows, conv_small_maps, conv_tuning, conv_weight_grad,
    lanes_blocks, norm)


def empty(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Uninitialised C-contiguous host array."""
    return np.empty(shape, dtype=dtype)


def zeros(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Zero-filled C-contiguous host array."""
    return np.zeros(shape, dtype=dtype)


# the interface's names, plus the CPU fast wing's own entry points
__all__ = [*interface.BACKEND_NAMES, *interface.CPU_FAST_WING_NAMES]
