"""Softmax, log-softmax, NLL loss and cross-entropy with PyTorch's options, and their
backwards: the dispatcher for ``kernels/<device>/softmax.py``.

These follow ``torch.nn.functional`` exactly: ``softmax(x, dim)`` over any axis of
any shape; losses on (N, C), (N, C, d1, d2, ...) or unbatched (C,) scores with
class-index targets (``ignore_index``, per-class ``weight``) or, for
cross-entropy, class-probability targets; ``reduction`` "mean" | "sum" | "none"
(and the deprecated ``size_average`` / ``reduce`` pair); ``label_smoothing``.
"mean" with class-index targets divides by the sum of the weights of the targets
that are not ignored (so an all-ignored batch gives NaN, as in PyTorch); with
probability targets it divides by the number of elements N * d1 * d2 * ....

A reduced loss ("mean", "sum") is returned as a 0-d NumPy array in the scores'
dtype, on the host whatever the device (it is the scalar a training loop logs; the
per-element losses are summed there in float64). ``reduction="none"`` returns the
per-element losses on the scores' device. ``softmax_cross_entropy`` in ``loss.py``
stays the fast path for the common case (batched (N, C), mean, no options).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from numbacnn.device import to_device, to_host
from numbacnn.functional._dispatch import Array, _common_device, _prepare
from numbacnn.shapes import ShapeError, check_array, check_same_dtype, check_shape

REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------- #
# argument handling shared by the ops
# --------------------------------------------------------------------------- #


def _class_view(shape: tuple[int, ...], dim: int) -> tuple[int, int, int]:
    """(M, K, S): the axes before ``dim`` folded into M, after it into S."""
    outer = int(np.prod(shape[:dim], dtype=np.int64))
    inner = int(np.prod(shape[dim + 1:], dtype=np.int64))
    return outer, int(shape[dim]) if shape else 1, inner


def _softmax_dim(op: str, shape: tuple[int, ...], dim: Any) -> int:
    """``dim`` normalised to [0, ndim) (0 for a 0-d array). ``None`` is PyTorch's
    deprecated implicit choice: 0 for 0-, 1- and 3-d input, else 1."""
    ndim = len(shape)
    if dim is None:
        return 0 if ndim in (0, 1, 3) else 1
    if not isinstance(dim, numbers.Integral) or isinstance(dim, (bool, np.bool_)):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise ValueError(f"{op}: dim={dim} is out of range for an array of shape {shape}; "
                         f"expected {-rank} <= dim < {rank}")
    return int(dim) % rank


def _cast_to_dtype_argument(op: str, x: Array, dtype: Any) -> Array:
    """x cast to ``dtype`` when given: an explicit ``dtype=`` is the caller asking for the
    cast, as in PyTorch ("the input is cast to dtype before the operation"); numbacnn
    never casts without being asked."""
    if dtype is None:
        return x
    try:  # a NumPy dtype or name, or PyTorch's torch.float64 (whose str is "torch.float64")
        wanted = np.dtype(dtype)
    except TypeError:
        try:
            wanted = np.dtype(str(dtype).removeprefix("torch."))
        except TypeError:
            raise TypeError(f"{op}: dtype={dtype!r} is not a dtype; expected float32 or float64") from None
    if wanted not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{op}: dtype={wanted.name} is not supported; expected float32 or float64")
    if wanted == np.dtype(x.dtype):
        return x
    where = _common_device(op, x=x)
    return to_device(np.ascontiguousarray(to_host(x), dtype=wanted), where)


def _reduction(op: str, reduction: Any, size_average: Any, reduce: Any) -> str:
    """The reduction, from PyTorch's deprecated ``size_average``/``reduce`` when either is given."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else bool(size_average)
        reduce = True if reduce is None else bool(reduce)
        return "mean" if (size_average and reduce) else "sum" if reduce else "none"
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _is_probability_target(target: Any) -> bool:
    return hasattr(target, "dtype") and np.dtype(target.dtype).kind == "f"


def _check_scores(op: str, scores: Array, name: str) -> tuple[int, int, int]:
    """(N, C, S) view of (C,), (N, C) or (N, C, d1, ...) scores; unbatched (C,) is (1, C, 1)."""
    check_array(scores, name, op, empty="any")
    shape = tuple(int(s) for s in scores.shape)
    if len(shape) == 0:
        raise ShapeError(f"{op}: {name} must have a class axis: (C,), (N, C) or (N, C, d1, ...), got shape ()")
    classes = shape[0] if len(shape) == 1 else shape[1]
    if classes < 1:
        raise ShapeError(f"{op}: {name} has shape {shape} with no classes; zero classes are not supported")
    if len(shape) == 1:
        return 1, classes, 1
    return _class_view(shape, 1)


def _target_shape(scores_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Class-index target / per-element loss shape: the scores' without the class axis."""
    return () if len(scores_shape) == 1 else (scores_shape[0], *scores_shape[2:])


def _check_class_target(op: str, target: Array, scores_shape: tuple[int, ...], classes: int,
                        ignore_index: int) -> np.ndarray:
    """Integer class indices of the right shape, each in [0, C) or ignore_index; returns a host copy."""
    if not hasattr(target, "dtype") or not hasattr(target, "shape"):
        raise TypeError(f"{op}: target must be an integer array, got {type(target).__name__}")
    if np.dtype(target.dtype).kind not in "iu":
        raise TypeError(
            f"{op}: target has dtype {np.dtype(target.dtype).name}, which is not supported: expected integer "
            f"class indices, or (cross_entropy only) class probabilities in the scores' float dtype"
        )
    check_shape(target, "target", op, _target_shape(scores_shape),
                " (the scores' shape without the class axis: one class index per element)")
    host = to_host(target)
    valid = (host >= 0) & (host < classes) | (host == ignore_index)
    if not np.all(valid):
        bad = int(host[~valid].ravel()[0])
        raise ValueError(f"{op}: target contains {bad}, expected 0 <= target < {classes} "
                         f"or ignore_index={ignore_index}")
    return host


def _check_options(op: str, ignore_index: Any, label_smoothing: Any = 0.0) -> tuple[int, float]:
    if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, (bool, np.bool_)):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    if not isinstance(label_smoothing, numbers.Real) or isinstance(label_smoothing, (bool, np.bool_)):
        raise TypeError(f"{op}: label_smoothing must be a float, got {label_smoothing!r}")
    return int(ignore_index), float(label_smoothing)


def _weights(op: str, weight: Array | None, classes: int, dtype: np.dtype, where: str, kernels: Any) -> Array:
    """The per-class weights on the device (ones when None)."""
    if weight is None:
        ones = np.ones(classes, dtype)
        return ones if where == "cpu" else to_device(ones, where)
    check_array(weight, "weight", op, 1)
    check_shape(weight, "weight", op, (classes,), " (one weight per class)")
    return weight


def _host_weights(weight: Array | None, classes: int) -> np.ndarray:
    return np.ones(classes) if weight is None else to_host(weight).astype(np.float64)


def _reduce(losses: Array, denominator: float, reduction: str, dtype: np.dtype, out_shape: tuple[int, ...]) -> Array:
    """Per-element losses (N, S) -> the result: summed (float64, on the host), averaged, or reshaped."""
    if reduction == "none":
        return losses.reshape(out_shape)
    total = np.sum(to_host(losses), dtype=np.float64)
    if reduction == "sum":
        return np.asarray(total, dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.float64(total) / np.float64(denominator), dtype)


def _upstream(op: str, grad_output: Any, reduction: str, denominator: float, loss_shape: tuple[int, ...],
              batch: int, inner: int, scores: Array, where: str) -> Array:
    """The gradient of each element's loss, (N, S), or (1, 1) for one value broadcast to all."""
    dtype = np.dtype(scores.dtype)
    if reduction == "none" and (loss_shape or hasattr(grad_output, "shape")):  # a number for one unbatched loss
        check_array(grad_output, "grad_output", op, empty="any")
        check_shape(grad_output, "grad_output", op, loss_shape, " (the per-element loss shape)")
        check_same_dtype(op, scores=scores, grad_output=grad_output)
        _common_device(op, scores=scores, grad_output=grad_output)
        if where == "cpu":
            grad_output = np.ascontiguousarray(grad_output)
        return grad_output.reshape((batch, inner))
    if hasattr(grad_output, "shape"):
        if int(np.prod(tuple(grad_output.shape), dtype=np.int64)) != 1:
            raise ShapeError(f"{op}: grad_output must be a scalar for reduction={reduction!r}, "
                             f"got shape {tuple(grad_output.shape)}")
        grad_output = to_host(grad_output).reshape(-1)[0]
    if not isinstance(grad_output, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{op}: grad_output must be a number or a 1-element array, got {type(grad_output).__name__}")
    scale = float(grad_output)
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = float(np.float64(scale) / np.float64(denominator))
    value = np.full((1, 1), scale, dtype)
    return value if where == "cpu" else to_device(value, where)


# --------------------------------------------------------------------------- #
# softmax and log-softmax
# --------------------------------------------------------------------------- #


def _softmax_family(op: str, x: Array, dim: Any, dtype: Any, log: bool) -> Array:
    check_array(x, "x", op, empty="any")
    x = _cast_to_dtype_argument(op, x, dtype)
    shape = tuple(int(s) for s in x.shape)
    axis = _softmax_dim(op, shape, dim)
    view = _class_view(shape, axis) if shape else (1, 1, 1)
    _, kernels, arrays = _prepare(op, x=x)
    out = kernels.empty(view, np.dtype(x.dtype))
    if out.size:
        forward = kernels.log_softmax_forward if log else kernels.softmax_forward
        forward(out, arrays["x"].reshape(view))
    return out.reshape(shape)


def _softmax_family_backward(op: str, gy: Array, y: Array, dim: Any, log: bool) -> Array:
    check_array(gy, "gy", op, empty="any")
    check_array(y, "y", op, empty="any")
    dtype = check_same_dtype(op, gy=gy, y=y)
    shape = tuple(int(s) for s in y.shape)
    check_shape(gy, "gy", op, shape, " (the forward output's shape)")
    axis = _softmax_dim(op, shape, dim)
    view = _class_view(shape, axis) if shape else (1, 1, 1)
    _, kernels, arrays = _prepare(op, gy=gy, y=y)
    gx = kernels.empty(view, dtype)
    if gx.size:
        backward = kernels.log_softmax_backward if log else kernels.softmax_backward
        backward(gx, arrays["gy"].reshape(view), arrays["y"].reshape(view))
    return gx.reshape(shape)


def softmax(x: Array, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Array:
    """``exp(x) / sum(exp(x))`` along ``dim``, the maximum subtracted first.

    Parameters
    ----------
    x : array of any shape (0-d and zero-size included), float32 or float64
    dim : int, optional
        The axis that sums to 1 (negative counts from the end). None is PyTorch's
        deprecated implicit choice: 0 for 0-, 1- and 3-d x, else 1.
    _stacklevel : int
        Ignored; keeps PyTorch's positional order (x, dim, _stacklevel, dtype).
    dtype : dtype, optional
        float32 or float64: x is cast to it first and the result has it, as in
        PyTorch (an explicit request; numbacnn never casts unasked).

    Returns
    -------
    array of x's shape, of ``dtype`` (default x's), on x's device
    """
    return _softmax_family("softmax", x, dim, dtype, log=False)


def log_softmax(x: Array, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Array:
    """``x - logsumexp(x)`` along ``dim`` (see :func:`softmax` for the arguments).

    Returns
    -------
    array of x's shape and dtype, on x's device
    """
    return _softmax_family("log_softmax", x, dim, dtype, log=True)


def softmax_backward(gy: Array, y: Array, dim: int | None = None) -> Array:
    """Gradient of ``sum(gy * softmax(x, dim))`` with respect to x, from the output
    ``y = softmax(x, dim)``: ``y * (gy - sum(gy * y, dim))``.

    Returns
    -------
    array of y's shape
    """
    return _softmax_family_backward("softmax_backward", gy, y, dim, log=False)


def log_softmax_backward(gy: Array, y: Array, dim: int | None = None) -> Array:
    """Gradient of ``sum(gy * log_softmax(x, dim))`` with respect to x, from the output
    ``y = log_softmax(x, dim)``: ``gy - exp(y) * sum(gy, dim)``.

    Returns
    -------
    array of y's shape
    """
    return _softmax_family_backward("log_softmax_backward", gy, y, dim, log=True)


# --------------------------------------------------------------------------- #
# NLL loss
# --------------------------------------------------------------------------- #


def _nll_setup(op: str, log_probs: Array, target: Array, weight: Array | None, ignore_index: Any):
    batch, classes, inner = _check_scores(op, log_probs, "log_probs")
    ignore, _ = _check_options(op, ignore_index)
    dtype = check_same_dtype(op, log_probs=log_probs, weight=weight)
    shape = tuple(int(s) for s in log_probs.shape)
    host_target = _check_class_target(op, target, shape, classes, ignore)
    where, kernels, arrays = _prepare(op, log_probs=log_probs, target=target, weight=weight)
    device_target = arrays["target"].reshape((batch, inner))
    if where == "cpu":
        device_target = device_target.astype(np.int64, copy=False)  # one target dtype, one compiled kernel
    weights = _weights(op, arrays["weight"], classes, dtype, where, kernels)
    host_w = _host_weights(weight, classes)
    kept = host_target != ignore
    denominator = float(np.sum(host_w[host_target[kept]]))
    return (batch, classes, inner), shape, dtype, where, kernels, arrays, device_target, weights, ignore, denominator


def nll_loss(
    log_probs: Array, target: Array, weight: Array | None = None, size_average: bool | None = None,
    ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean",
) -> Array:
    """Negative log-likelihood: ``-weight[t] * log_probs[t]`` per element, reduced.

    Parameters
    ----------
    log_probs : array (N, C), (N, C, d1, ...) or (C,)
        Log-probabilities (e.g. from :func:`log_softmax` over the class axis).
    target : integer array (N,), (N, d1, ...) or ()
        Class indices ``0 <= t < C``, or ``ignore_index``.
    weight : array (C,), optional
        Per-class weights, log_probs' dtype.
    size_average, reduce : bool, optional
        PyTorch's deprecated spelling of ``reduction`` (used when either is given).
    ignore_index : int
        Targets equal to it contribute 0 and are left out of the mean.
    reduction : "mean" | "sum" | "none"
        "mean" divides by the sum of the weights of the kept targets.

    Returns
    -------
    0-d host array (mean, sum) or an array of target's shape on log_probs' device (none)
    """
    op = "nll_loss"
    mode = _reduction(op, reduction, size_average, reduce)
    (batch, classes, inner), shape, dtype, where, kernels, arrays, target_view, weights, ignore, denominator = \
        _nll_setup(op, log_probs, target, weight, ignore_index)
    losses = kernels.empty((batch, inner), dtype)
    target_weights = kernels.empty((batch, inner), dtype)
    if losses.size:
        kernels.nll_loss_forward(losses, target_weights, arrays["log_probs"].reshape((batch, classes, inner)),
                                 target_view, weights, ignore)
    return _reduce(losses, denominator, mode, dtype, _target_shape(shape))


def nll_loss_backward(
    grad_output: Any, log_probs: Array, target: Array, weight: Array | None = None,
    size_average: bool | None = None, ignore_index: int = -100, reduce: bool | None = None,
    reduction: str = "mean",
) -> Array:
    """Gradient of ``grad_output * nll_loss(log_probs, target, ...)`` with respect to log_probs.

    Parameters
    ----------
    grad_output : number or 1-element array (mean, sum); array of target's shape (none)
        Upstream gradient of the (reduced) loss.
    log_probs, target, weight, size_average, ignore_index, reduce, reduction
        As passed to :func:`nll_loss`.

    Returns
    -------
    array of log_probs' shape: ``-grad * weight[t]`` at each target class, 0 elsewhere
    """
    op = "nll_loss_backward"
    mode = _reduction(op, reduction, size_average, reduce)
    (batch, classes, inner), shape, dtype, where, kernels, arrays, target_view, weights, ignore, denominator = \
        _nll_setup(op, log_probs, target, weight, ignore_index)
    upstream = _upstream(op, grad_output, mode, denominator, _target_shape(shape), batch, inner, log_probs, where)
    grad = kernels.empty((batch, classes, inner), dtype)
    if grad.size:
        kernels.nll_loss_backward(grad, upstream, target_view, weights, ignore)
    return grad.reshape(shape)


# --------------------------------------------------------------------------- #
# cross-entropy
# --------------------------------------------------------------------------- #


def _cross_entropy_setup(op: str, logits: Array, target: Array, weight: Array | None, ignore_index: Any,
                         label_smoothing: Any):
    batch, classes, inner = _check_scores(op, logits, "logits")
    ignore, smoothing = _check_options(op, ignore_index, label_smoothing)
    shape = tuple(int(s) for s in logits.shape)
    probabilities = _is_probability_target(target)
    if probabilities:
        if ignore != -100:
            raise ValueError(f"{op}: ignore_index={ignore} is not supported for class-probability targets "
                             f"(PyTorch refuses it too); leave it at -100")
        check_array(target, "target", op, empty="any")
        check_shape(target, "target", op, shape, " (class probabilities have the logits' shape)")
        dtype = check_same_dtype(op, logits=logits, target=target, weight=weight)
        denominator = float(batch * inner)
    else:
        dtype = check_same_dtype(op, logits=logits, weight=weight)
        host_target = _check_class_target(op, target, shape, classes, ignore)
        kept = host_target != ignore
        denominator = float(np.sum(_host_weights(weight, classes)[host_target[kept]]))
    where, kernels, arrays = _prepare(op, logits=logits, target=target, weight=weight)
    if probabilities:
        target_view = arrays["target"].reshape((batch, classes, inner))
    else:
        target_view = arrays["target"].reshape((batch, inner))
        if where == "cpu":
            target_view = target_view.astype(np.int64, copy=False)  # one target dtype, one compiled kernel
    weights = _weights(op, arrays["weight"], classes, dtype, where, kernels)
    logits_view = arrays["logits"].reshape((batch, classes, inner))
    return ((batch, classes, inner), shape, dtype, where, kernels, logits_view, target_view, probabilities,
            weights, ignore, smoothing, denominator)


def cross_entropy(
    logits: Array, target: Array, weight: Array | None = None, size_average: bool | None = None,
    ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Array:
    """Cross-entropy of ``softmax(logits)`` over the class axis, PyTorch's semantics.

    Parameters
    ----------
    logits : array (N, C), (N, C, d1, ...) or (C,)
        Unnormalised class scores, float32 or float64.
    target : integer array (N,), (N, d1, ...) or (); or a float array of logits' shape
        Class indices (``0 <= t < C`` or ``ignore_index``), or class probabilities
        (logits' dtype; ``ignore_index`` must stay -100).
    weight : array (C,), optional
        Per-class weights, logits' dtype.
    size_average, reduce : bool, optional
        PyTorch's deprecated spelling of ``reduction`` (used when either is given).
    ignore_index : int
        Class-index targets equal to it contribute 0 and are left out of the mean.
    reduction : "mean" | "sum" | "none"
        "mean" divides by the sum of the kept targets' weights (class indices) or by
        the number of elements N * d1 * ... (probabilities); NaN when that is 0.
    label_smoothing : float
        ``eps``: the target becomes ``(1 - eps) * target + eps / C`` (PyTorch's formula).

    Returns
    -------
    0-d host array in logits' dtype (mean, sum), or the per-element losses (N, d1, ...)
    on logits' device (none)
    """
    op = "cross_entropy"
    mode = _reduction(op, reduction, size_average, reduce)
    ((batch, classes, inner), shape, dtype, where, kernels, logits_view, target_view, probabilities,
     weights, ignore, smoothing, denominator) = _cross_entropy_setup(
        op, logits, target, weight, ignore_index, label_smoothing)
    losses = kernels.empty((batch, inner), dtype)
    if losses.size:
        if probabilities:
            kernels.cross_entropy_probs_forward(losses, logits_view, target_view, weights, smoothing)
        else:
            target_weights = kernels.empty((batch, inner), dtype)
            kernels.cross_entropy_forward(losses, target_weights, logits_view, target_view, weights, ignore,
                                          smoothing)
    return _reduce(losses, denominator, mode, dtype, _target_shape(shape))


def cross_entropy_backward(
    grad_output: Any, logits: Array, target: Array, weight: Array | None = None,
    size_average: bool | None = None, ignore_index: int = -100, reduce: bool | None = None,
    reduction: str = "mean", label_smoothing: float = 0.0,
) -> Array:
    """Gradient of ``grad_output * cross_entropy(logits, target, ...)`` with respect to logits.

    Parameters
    ----------
    grad_output : number or 1-element array (mean, sum); array (N, d1, ...) (none)
        Upstream gradient of the (reduced) loss; 1.0 for the loss itself.
    logits, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing
        As passed to :func:`cross_entropy`.

    Returns
    -------
    array of logits' shape and dtype, on logits' device
    """
    op = "cross_entropy_backward"
    mode = _reduction(op, reduction, size_average, reduce)
    ((batch, classes, inner), shape, dtype, where, kernels, logits_view, target_view, probabilities,
     weights, ignore, smoothing, denominator) = _cross_entropy_setup(
        op, logits, target, weight, ignore_index, label_smoothing)
    upstream = _upstream(op, grad_output, mode, denominator, _target_shape(shape), batch, inner, logits, where)
    grad = kernels.empty((batch, classes, inner), dtype)
    if grad.size:
        if probabilities:
            kernels.cross_entropy_probs_backward(grad, upstream, logits_view, target_view, weights, smoothing)
        else:
            kernels.cross_entropy_backward(grad, upstream, logits_view, target_view, weights, ignore, smoothing)
    return grad.reshape(shape)
