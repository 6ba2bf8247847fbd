"""The backend interface: the names every kernel backend provides, by op family.

``numbacnn.device.backend("cpu")`` and ``backend("cuda")`` return
``numbacnn.kernels.cpu`` and ``numbacnn.kernels.cuda``; ``numbacnn.functional`` calls
these names on whichever it got and nothing else, so each backend's ``__all__`` is
:data:`BACKEND_NAMES` (the CPU's adds :data:`CPU_FAST_WING_NAMES`), and
``tests/test_backend_interface.py`` holds both backends to it: every name present,
nothing public beyond it, and the same parameter names on both backends.

Conventions shared by every kernel (see each group's comment for its arguments):

- **Outputs first, then inputs, then hyperparameters**, all arrays preallocated by
  the functional layer (which validates; kernels never do, and never allocate).
- **Every output element is written**: a kernel that accumulates zeroes its own
  slice first, so outputs come from ``empty``, never ``zeros``.
- **Outputs keep the input dtype** (float32 or float64); index arrays are int64.
- **One signature per name on every backend**: a missing conv bias is a zero
  vector, never ``None``; the CUDA name is a launcher (grid and block chosen
  beside its kernel), the CPU name the ``@njit`` kernel itself or a dispatcher.

Adding an op means adding its names here, then to both backends; the test fails
until both provide it.
"""

# empty(shape, dtype), zeros(shape, dtype): a C-contiguous array on the backend's device
# (a NumPy array, or a CUDA device array from numbacnn's pool).
MEMORY = (
    "empty",
    "zeros",
)

# conv2d_forward(out, x, w, b, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups)
# conv2d_backward_input(dx, dout, w, <the same hyperparameters>)
# conv2d_backward_weight(dw, dout, x, <the same hyperparameters>)
# conv2d_backward_bias(db, dout)
# x, dx (N, C, H, W); w, dw (F, C // groups, KH, KW); b, db (F,); out, dout (N, F, OH, OW).
# pad_h / pad_w are the top / left padding; the bottom / right padding is implied by
# the output size the caller allocated (asymmetric "same" padding needs no argument).
CONVOLUTION = (
    "conv2d_backward_bias",
    "conv2d_backward_input",
    "conv2d_backward_weight",
    "conv2d_forward",
)

# linear_forward(out, x, w, b), linear_backward_input(dx, dout, w), linear_backward_weight(dw, dout, x)
# x, dx (N, IN); w, dw (OUT, IN); b (OUT,); out, dout (N, OUT). The bias gradient is
# conv2d_backward_bias on dout viewed as (N, OUT, 1, 1).
LINEAR = (
    "linear_backward_input",
    "linear_backward_weight",
    "linear_forward",
)

# max_pool2d_forward(out, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)
# max_pool2d_backward(dx, dout, x, <the same hyperparameters>)     recomputes each window's argmax
# max_pool2d_forward_indices(out, indices, x, <the same hyperparameters>)
# max_pool2d_backward_indices(dx, dout, indices, <the same hyperparameters>)
# max_unpool2d_forward(out, x, indices), max_unpool2d_backward(dx, dout, indices)
# x, dx (N, C, H, W); out, dout, indices (N, C, OH, OW); indices hold the flat h * W + w
# of each window's first maximum (a NaN wins), int64.
MAX_POOLING = (
    "max_pool2d_backward",
    "max_pool2d_backward_indices",
    "max_pool2d_forward",
    "max_pool2d_forward_indices",
    "max_unpool2d_backward",
    "max_unpool2d_forward",
)

# window_avg_forward(out, x, h_start, h_end, w_start, w_end, divisor)
# window_avg_backward(gx, gy, h_start, h_end, w_start, w_end, divisor)
# window_max_forward(out, indices, x, h_start, h_end, w_start, w_end), window_max_backward(gx, gy, indices)
# avg_pool2d and the adaptive pools: output row oh covers input rows [h_start[oh], h_end[oh])
# (int64 (OH,)), likewise columns (OW,); divisor (OH, OW) is each window's count.
WINDOW_POOLING = (
    "window_avg_backward",
    "window_avg_forward",
    "window_max_backward",
    "window_max_forward",
)

# batch_norm_stats(mean, invstd, running_mean, running_var, x, eps, momentum, training, update)
# batch_norm_forward(y, x, mean, invstd, weight, bias)
# batch_norm_backward(gx, gweight, gbias, gy, x, mean, invstd, weight, training)
# x, y, gx, gy (N, C, L) (any spatial size folded into L); every other array (C,).
BATCH_NORM = (
    "batch_norm_backward",
    "batch_norm_forward",
    "batch_norm_stats",
)

# relu_forward(out, x), relu_backward(dx, dout, x)
# leaky_relu_forward(out, x, negative_slope), leaky_relu_backward(dx, dout, x, negative_slope)
# dropout_apply(out, x, mask)                        mask holds 0 or 1 / (1 - p), drawn on the host
# Elementwise, on flat 1-D views of any shape (all arrays the same length).
ELEMENTWISE = (
    "dropout_apply",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "relu_backward",
    "relu_forward",
)

# softmax_forward(out, x), softmax_backward(dx, dout, y)               y = the forward's output
# log_softmax_forward(out, x), log_softmax_backward(dx, dout, y)
# cross_entropy_forward(losses, target_weights, logits, target, weight, ignore_index, smoothing)
# cross_entropy_backward(dlogits, dlosses, logits, target, weight, ignore_index, smoothing)
# cross_entropy_probs_forward(losses, logits, probs, weight, smoothing)
# cross_entropy_probs_backward(dlogits, dlosses, logits, probs, weight, smoothing)
# nll_loss_forward(losses, target_weights, log_probs, target, weight, ignore_index)
# nll_loss_backward(dlog_probs, dlosses, target, weight, ignore_index)
# Every array viewed as (M, K, S), the class axis K in the middle: x, out, logits, probs
# (M, K, S); target, losses, target_weights (M, S); weight (K,); dlosses (M, S) or (1, 1).
# The row bodies are written once, in kernels/common.py, for both backends.
SOFTMAX_AND_LOSSES = (
    "cross_entropy_backward",
    "cross_entropy_forward",
    "cross_entropy_probs_backward",
    "cross_entropy_probs_forward",
    "log_softmax_backward",
    "log_softmax_forward",
    "nll_loss_backward",
    "nll_loss_forward",
    "softmax_backward",
    "softmax_forward",
)

# softmax_cross_entropy(grad, losses, logits, labels)     one pass: losses (N,), grad = (softmax - one_hot) / N
# accumulate_loss_and_correct(totals, losses, logits, labels)   totals (2,) += (sum of losses, correct rows)
# The training loop's fast path: logits, grad (N, K); labels (N,) int64.
TRAINING_LOOP = (
    "accumulate_loss_and_correct",
    "softmax_cross_entropy",
)

# sgd_step(param, grad, velocity, lr, momentum, dampening, weight_decay, nesterov)
# adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled,
#           bias_correction1, bias_correction2)
# grad_accumulate(grad, delta)                       grad += delta
# In place, on flat 1-D views of one parameter and its state (PyTorch's update rules).
OPTIMISERS = (
    "adam_step",
    "grad_accumulate",
    "sgd_step",
)

BACKEND_NAMES: tuple[str, ...] = (
    MEMORY + CONVOLUTION + LINEAR + MAX_POOLING + WINDOW_POOLING + BATCH_NORM + ELEMENTWISE
    + SOFTMAX_AND_LOSSES + TRAINING_LOOP + OPTIMISERS
)
"""Every name each backend (``numbacnn.kernels.cpu``, ``numbacnn.kernels.cuda``) provides."""

CPU_FAST_WING_NAMES: tuple[str, ...] = ()
"""Functions the CPU backend provides beyond :data:`BACKEND_NAMES` (none: the fast wing
reaches its kernels through the modules below)."""

CPU_FAST_WING_MODULES: tuple[str, ...] = ("bordered", "conv", "conv_fft", "conv_gathered", "conv_lanes", "conv_rows",
                                          "conv_small_maps", "conv_tuning", "conv_weight_grad", "lanes_blocks",
                                          "norm")
"""Kernel modules of the CPU backend that the fused wing (``numbacnn/fused``) calls as
``backend("cpu").<module>.<function>``: the convolution catalogue (``conv``) and its fast
variants, and batch norm's (``norm``: the kernels of the Conv -> BatchNorm -> ReLU
blocks). They have no CUDA twin: on the GPU every fused group runs the composed ops.
``tests/test_backend_interface.py`` requires them of the CPU backend."""
