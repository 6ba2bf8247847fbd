"""The functional API and dispatcher: ``import numbacnn.functional as F``.

Each function validates its arguments once (``numbacnn.shapes``), picks the kernel
backend from where the input arrays live (``numbacnn.device.backend``), allocates
the outputs there and calls the kernel. Nothing here loops over pixels, and no
function modifies its inputs. Results keep the inputs' dtype (float32 or float64)
and device.

Layout is NCHW; weights are (F, C / groups, KH, KW) and linear weights (OUT, IN),
as in PyTorch, whose ``torch.nn.functional`` semantics these functions follow.

One module per family of ops (``conv``, ``pool``, ``activation``, ``linear``,
``loss``); ``_dispatch`` holds the device and contiguity helpers they share.
"""

from numbacnn.functional._dispatch import Array, IntOrPair  # noqa: F401  (type aliases)
from numbacnn.functional.conv import conv2d, conv2d_backward
from numbacnn.functional.pool import max_pool2d, max_pool2d_backward
from numbacnn.functional.pool import max_unpool2d, max_unpool2d_backward  # noqa: E402
from numbacnn.functional.activation import relu, relu_backward
from numbacnn.functional.linear import linear, linear_backward
from numbacnn.functional.loss import softmax_cross_entropy
from numbacnn.functional.softmax import (  # noqa: E402
    cross_entropy, cross_entropy_backward, log_softmax, log_softmax_backward, nll_loss, nll_loss_backward, softmax,
    softmax_backward,
)

__all__ = [
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
    "relu",
    "relu_backward",
    "linear",
    "linear_backward",
    "softmax_cross_entropy",
    "cross_entropy",
    "cross_entropy_backward",
    "log_softmax",
    "log_softmax_backward",
    "nll_loss",
    "nll_loss_backward",
    "softmax",
    "softmax_backward",
]
from numbacnn.functional.metrics import RunningMetrics, softmax_cross_entropy_rows  # noqa: E402,F401
from numbacnn.functional.activation import leaky_relu, leaky_relu_backward  # noqa: E402,F401
from numbacnn.functional.dropout import dropout, dropout_backward, dropout_mask  # noqa: E402,F401
from numbacnn.functional.norm import batch_norm, batch_norm_backward  # noqa: E402,F401
from numbacnn.functional.avg_pool import (  # noqa: E402,F401
    adaptive_avg_pool2d, adaptive_avg_pool2d_backward, adaptive_max_pool2d, adaptive_max_pool2d_backward, avg_pool2d,
    avg_pool2d_backward,
)
__all__ += ["leaky_relu", "leaky_relu_backward", "dropout", "dropout_backward", "batch_norm",  # noqa: E305
            "batch_norm_backward", "avg_pool2d", "avg_pool2d_backward", "adaptive_avg_pool2d",
            "adaptive_avg_pool2d_backward", "adaptive_max_pool2d", "adaptive_max_pool2d_backward"]
