"""Hyperparameter arithmetic and argument checks: the one place shapes are computed.

Everything about sizes lives here: normalising int-or-pair arguments, output sizes of
convolution and pooling, "same" padding, every validation the functional API
performs, and CNN Explainer's lesson that a kernel should slide over its input
symmetrically (:func:`explain_conv`). Kernels and layers never do shape arithmetic
of their own; they call these functions.

Errors are ``ValueError`` (or ``TypeError`` for a wrong type) whose message starts
with the operation, names the argument, says what it got and what was expected.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class ShapeError(ValueError):
    """An argument's shape or a hyperparameter does not fit the operation."""


class HyperparameterWarning(UserWarning):
    """A kernel does not slide symmetrically over its input (border pixels are lost)."""


# --------------------------------------------------------------------------- #
# int-or-pair arguments
# --------------------------------------------------------------------------- #


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def pair(value: Any, name: str, op: str, minimum: int = 0) -> tuple[int, int]:
    """Normalise an int or an (h, w) pair of ints to a pair.

    Parameters
    ----------
    value : int or sequence of two ints
        The user's argument, e.g. ``stride=2`` or ``stride=(2, 1)``.
    name, op : str
        Argument and operation names, used in error messages.
    minimum : int
        Smallest allowed value of each entry.

    Returns
    -------
    (int, int)
        ``(value_h, value_w)``.
    """
    if _is_int(value):
        values = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        values = (int(value[0]), int(value[1]))
    elif isinstance(value, (tuple, list)) and len(value) == 1 and _is_int(value[0]):
        values = (int(value[0]), int(value[0]))
    else:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints (h, w), got {value!r}")
    if min(values) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum} on both axes, got {value!r}")
    return values


# --------------------------------------------------------------------------- #
# output sizes
# --------------------------------------------------------------------------- #


def effective_kernel_size(kernel: int, dilation: int = 1) -> int:
    """Span of a dilated kernel along one axis: ``dilation * (kernel - 1) + 1``."""
    return dilation * (kernel - 1) + 1


def conv_output_size(
    in_size: int, kernel: int, stride: int = 1, pad_before: int = 0, pad_after: int | None = None,
    dilation: int = 1,
) -> int:
    """Convolution output size along one axis (PyTorch's formula).

    ``floor((in + pad_before + pad_after - dilation*(kernel-1) - 1) / stride) + 1``;
    ``pad_after`` defaults to ``pad_before``. The result may be < 1; callers that
    need a valid size use :func:`conv2d_geometry`, which checks it.
    """
    if pad_after is None:
        pad_after = pad_before
    padded = in_size + pad_before + pad_after
    return (padded - effective_kernel_size(kernel, dilation)) // stride + 1


def pool_output_size(
    in_size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Max-pooling output size along one axis, with PyTorch's ``ceil_mode`` rule.

    With ``ceil_mode`` the division rounds up, but a last window that would start
    beyond the input plus the left padding is dropped (it would see only padding).
    """
    span = in_size + 2 * padding - effective_kernel_size(kernel, dilation)
    if ceil_mode:
        out = -(-span // stride) + 1  # ceil division
        if (out - 1) * stride >= in_size + padding:
            out -= 1
        return out
    return span // stride + 1


def receptive_field_step(field_size: tuple[int, int], jump: tuple[int, int], kernel: tuple[int, int],
                         stride: tuple[int, int], dilation: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """One layer's effect on the receptive field, per axis (h, w).

    A layer whose outputs are ``jump`` input pixels apart in its input's frame
    widens the field by ``(effective kernel - 1) * jump``; its own outputs are
    ``jump * stride`` input pixels apart.

    Parameters
    ----------
    field_size, jump : (int, int)
        Receptive field (input pixels seen by one unit) and jump of the layer's input.
    kernel, stride, dilation : (int, int)

    Returns
    -------
    (field_size, jump) of the layer's output.
    """
    new_field = tuple(f + (effective_kernel_size(k, d) - 1) * j
                      for f, j, k, d in zip(field_size, jump, kernel, dilation))
    new_jump = tuple(j * s for j, s in zip(jump, stride))
    return new_field, new_jump  # type: ignore[return-value]


def same_padding(kernel: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) zero padding that keeps the size at stride 1.

    The total is ``dilation * (kernel - 1)``; when it is odd the extra row/column
    goes after (bottom/right), as in PyTorch.
    """
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def fft_size(in_size: int, pad: int) -> int:
    """Length N of the circular transforms that correlate an axis of ``in_size``
    values, zero-padded by ``pad`` on each side, exactly (``kernels/cpu/conv_fft.py``):
    the smallest power of two with N >= in_size + pad. A stride-1 correlation reads
    the unpadded input at -pad .. in_size + pad - 1 (for any kernel with pad < kernel
    size); placed at 0 .. in_size - 1 of N zeros, those reads wrap onto zeros only
    while N - pad >= in_size. The input gradient of the same layer needs the same N.
    The kernel's wrapped taps must fit as well: ``fft_size(K, 0)`` (the smallest power
    of two >= K) is the least N for a K-tap kernel; ``conv_tuning.fft_size_for`` takes
    the largest of the three."""
    need = in_size + pad
    return 1 << max(need - 1, 0).bit_length()


# --------------------------------------------------------------------------- #
# array checks
# --------------------------------------------------------------------------- #


def describe(a: Any) -> str:
    """Short description of an array for error messages: ``shape=(2, 3) dtype=float32``."""
    return f"shape={tuple(a.shape)} dtype={np.dtype(a.dtype).name}"


def check_array(a: Any, name: str, op: str, ndim: int | None = None, batched_image: bool = False,
                empty: str = "refuse") -> None:
    """Check that ``a`` is a float32/float64 array of rank ``ndim``.

    ``batched_image`` adds the hint that an unbatched (C, H, W) image needs a
    leading batch axis. ``empty`` says which zero-size axes are allowed: "refuse"
    (none), "batch" (the first axis only, as PyTorch allows N = 0) or "any".
    """
    if type(a) is np.ndarray and a.dtype in FLOAT_DTYPES and (ndim is None or a.ndim == ndim) and (
            empty == "any" or a.size or (empty == "batch" and 0 not in a.shape[1:])):
        return  # the common case, several times per op and step, told without the checks below
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{op}: {name} must be an array, got {type(a).__name__}")
    dtype = np.dtype(a.dtype)
    if dtype.kind == "f" and not dtype.isnative and dtype.newbyteorder("=") in FLOAT_DTYPES:
        order = "big" if dtype.byteorder == ">" else "little"
        raise TypeError(  # '>f4'.name is "float32": without the byte order the refusal read as nonsense
            f"{op}: {name} has dtype {dtype.str} ({order}-endian {dtype.name}), which is not supported: the kernels "
            f"read native byte order (convert explicitly, e.g. {name}.astype(np.{dtype.name}))"
        )
    if dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}: {name} has dtype {dtype.name}, which is not supported: expected float32 or float64 "
            f"(convert explicitly, e.g. {name}.astype(np.float32); numbacnn never casts silently)"
        )
    if ndim is not None and len(a.shape) != ndim:
        raise ShapeError(
            f"{op}: {name} must have {ndim} dimensions"
            f"{' (N, C, H, W) or 3 (C, H, W)' if batched_image else ''}, got shape {tuple(a.shape)}"
        )
    checked = () if empty == "any" else tuple(a.shape)[1:] if empty == "batch" else tuple(a.shape)
    if any(size == 0 for size in checked):
        where = "every axis but the batch axis" if empty == "batch" else "every axis"
        raise ShapeError(
            f"{op}: {name} has an empty axis, shape {tuple(a.shape)}; zero-size axes are not supported here "
            f"({where} must be >= 1)"
        )


def check_same_dtype(op: str, **arrays: Any) -> np.dtype:
    """All given arrays (None skipped) share one float dtype; return it."""
    named = [(name, a) for name, a in arrays.items() if a is not None]
    first_name, first = named[0]
    dtype = np.dtype(first.dtype)
    for name, a in named[1:]:
        if np.dtype(a.dtype) != dtype:
            raise TypeError(
                f"{op}: {name} has dtype {np.dtype(a.dtype).name} but {first_name} has "
                f"{dtype.name}; mixed dtypes are not supported: all inputs must share one dtype "
                f"(numbacnn never casts silently)"
            )
    return dtype


def check_shape(a: Any, name: str, op: str, expected: Sequence[int], why: str = "") -> None:
    """``a.shape`` must equal ``expected``."""
    if tuple(a.shape) != tuple(expected):
        raise ShapeError(
            f"{op}: {name} has shape {tuple(a.shape)}, expected {tuple(expected)}{why}"
        )


# --------------------------------------------------------------------------- #
# convolution
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Conv2dGeometry:
    """Every size a conv2d kernel needs, computed and checked once.

    ``pad_top``/``pad_left`` are what kernels use; ``pad_bottom``/``pad_right`` are
    implied by the output size (they differ from top/left only for "same" padding
    with an even kernel span).
    """

    batch: int
    in_channels: int
    in_height: int
    in_width: int
    out_channels: int
    kernel_height: int
    kernel_width: int
    out_height: int
    out_width: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    dilation_h: int
    dilation_w: int
    groups: int

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.in_height, self.in_width)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, self.kernel_height, self.kernel_width)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_channels, self.out_height, self.out_width)

    def kernel_args(self) -> tuple[int, ...]:
        """Hyperparameters in kernel order: strides, top/left pads, dilations, groups."""
        return (self.stride_h, self.stride_w, self.pad_top, self.pad_left,
                self.dilation_h, self.dilation_w, self.groups)


def _padding_pairs(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int],
                   stride: tuple[int, int], op: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) from an int, a pair, "valid" or "same"."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0), (0, 0)
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"{op}: padding='same' needs stride 1 on both axes, got stride={stride}; "
                    f"pass explicit padding for strided convolutions"
                )
            return same_padding(kernel[0], dilation[0]), same_padding(kernel[1], dilation[1])
        raise ValueError(f"{op}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    pad_h, pad_w = pair(padding, "padding", op, minimum=0)
    return (pad_h, pad_h), (pad_w, pad_w)


def conv2d_geometry(
    x_shape: Sequence[int], w_shape: Sequence[int], stride: Any = 1, padding: Any = 0,
    dilation: Any = 1, groups: Any = 1, op: str = "conv2d",
) -> Conv2dGeometry:
    """Check conv2d hyperparameters against x (N, C, H, W) and w (F, C/groups, KH, KW)
    and return the geometry. Raises ShapeError/ValueError/TypeError naming the argument."""
    batch, in_channels, in_height, in_width = (int(s) for s in x_shape)
    out_channels, w_channels, kernel_height, kernel_width = (int(s) for s in w_shape)
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    if in_channels % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels, but x has {in_channels} channels")
    if out_channels % groups:
        raise ValueError(
            f"{op}: groups={groups} must divide the output channels, but w has {out_channels} "
            f"filters (w.shape={tuple(w_shape)})"
        )
    if w_channels * groups != in_channels:
        expected = w_channels * groups
        raise ShapeError(
            f"{op}: x has {in_channels} channels but w expects {expected} "
            f"(w.shape={tuple(w_shape)}{f', groups={groups}' if groups > 1 else ''})"
        )
    stride_h, stride_w = pair(stride, "stride", op, minimum=1)
    dilation_h, dilation_w = pair(dilation, "dilation", op, minimum=1)
    (pad_top, pad_bottom), (pad_left, pad_right) = _padding_pairs(
        padding, (kernel_height, kernel_width), (dilation_h, dilation_w), (stride_h, stride_w), op
    )
    out_height = conv_output_size(in_height, kernel_height, stride_h, pad_top, pad_bottom, dilation_h)
    out_width = conv_output_size(in_width, kernel_width, stride_w, pad_left, pad_right, dilation_w)
    if out_height < 1 or out_width < 1:
        raise ShapeError(
            f"{op}: kernel {kernel_height}x{kernel_width} (dilation {(dilation_h, dilation_w)}) does not fit "
            f"the padded input: x is {in_height}x{in_width}, padding {(pad_top, pad_left)}, giving output "
            f"{out_height}x{out_width}; expected an output of at least 1x1 (use a smaller kernel or more padding)"
        )
    return Conv2dGeometry(
        batch, in_channels, in_height, in_width, out_channels, kernel_height, kernel_width,
        out_height, out_width, stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right,
        dilation_h, dilation_w, groups,
    )


# --------------------------------------------------------------------------- #
# max pooling
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Pool2dGeometry:
    """Every size a max-pooling kernel needs, computed and checked once."""

    batch: int
    channels: int
    in_height: int
    in_width: int
    out_height: int
    out_width: int
    kernel_height: int
    kernel_width: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.out_height, self.out_width)

    def kernel_args(self) -> tuple[int, ...]:
        """Hyperparameters in kernel order: kernel, stride, padding, dilation (h, w each)."""
        return (self.kernel_height, self.kernel_width, self.stride_h, self.stride_w,
                self.pad_h, self.pad_w, self.dilation_h, self.dilation_w)


def pool2d_geometry(
    x_shape: Sequence[int], kernel_size: Any, stride: Any = None, padding: Any = 0,
    dilation: Any = 1, ceil_mode: Any = False, op: str = "max_pool2d",
) -> Pool2dGeometry:
    """Check max-pooling hyperparameters against x (N, C, H, W) and return the geometry."""
    batch, channels, in_height, in_width = (int(s) for s in x_shape)
    kernel_height, kernel_width = pair(kernel_size, "kernel_size", op, minimum=1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride_h, stride_w = kernel_height, kernel_width
    else:
        stride_h, stride_w = pair(stride, "stride", op, minimum=1)
    if isinstance(padding, str):
        raise TypeError(f"{op}: padding must be an int or a pair of ints, got {padding!r}")
    pad_h, pad_w = pair(padding, "padding", op, minimum=0)
    dilation_h, dilation_w = pair(dilation, "dilation", op, minimum=1)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"{op}: ceil_mode must be a bool, got {ceil_mode!r}")
    if pad_h > kernel_height // 2 or pad_w > kernel_width // 2:
        raise ValueError(
            f"{op}: padding must be at most half the kernel size, got padding={(pad_h, pad_w)} "
            f"for kernel_size={(kernel_height, kernel_width)}; expected <= {(kernel_height // 2, kernel_width // 2)}"
        )
    out_height = pool_output_size(in_height, kernel_height, stride_h, pad_h, dilation_h, bool(ceil_mode))
    out_width = pool_output_size(in_width, kernel_width, stride_w, pad_w, dilation_w, bool(ceil_mode))
    if out_height < 1 or out_width < 1:
        raise ShapeError(
            f"{op}: kernel_size={(kernel_height, kernel_width)} (dilation {(dilation_h, dilation_w)}) does not "
            f"fit x of {in_height}x{in_width} with padding {(pad_h, pad_w)}: output would be "
            f"{out_height}x{out_width}, expected at least 1x1"
        )
    return Pool2dGeometry(
        batch, channels, in_height, in_width, out_height, out_width, kernel_height, kernel_width,
        stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    )


def unpool2d_output_size(
    in_hw: Sequence[int], kernel_size: Any, stride: Any = None, padding: Any = 0, output_size: Any = None,
    op: str = "max_unpool2d",
) -> tuple[int, int]:
    """(OH, OW) of max unpooling, PyTorch's rule.

    The default is ``(in - 1) * stride - 2 * padding + kernel`` per axis; an explicit
    ``output_size`` ((OH, OW), or a full shape whose last two entries are used) must
    lie strictly within ``stride`` of it, the sizes a max_pool2d with these
    hyperparameters could have pooled from.
    """
    kernel = pair(kernel_size, "kernel_size", op, minimum=1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        strides = kernel
    else:
        strides = pair(stride, "stride", op, minimum=1)
    pads = pair(padding, "padding", op, minimum=0)
    default = tuple((int(i) - 1) * s - 2 * p + k for i, k, s, p in zip(in_hw, kernel, strides, pads))
    if output_size is None:
        sizes = default
    else:
        if not isinstance(output_size, (tuple, list)) or not all(_is_int(v) for v in output_size) \
                or len(output_size) not in (2, 3, 4):
            raise TypeError(f"{op}: output_size must be (OH, OW) or a full shape ending in them, got {output_size!r}")
        sizes = tuple(int(v) for v in output_size[-2:])
        for axis, (size, base, s) in enumerate(zip(sizes, default, strides)):
            if not base - s < size < base + s:
                raise ValueError(
                    f"{op}: output_size={tuple(output_size)} is invalid on axis {axis}: expected a size "
                    f"strictly between {base - s} and {base + s} for this input, kernel_size, stride and padding"
                )
    if min(sizes) < 1:
        raise ShapeError(f"{op}: output would be {sizes[0]}x{sizes[1]}, expected at least 1x1")
    return sizes  # type: ignore[return-value]


# --------------------------------------------------------------------------- #
# the symmetric-slide lesson (CNN Explainer)
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ConvExplanation:
    """What a kernel does to an input, per axis (h, w), for teaching and warnings.

    The lesson's one rule: a slide is *sound* when it passes three checks on both
    axes, and every suggestion passes all three:

    1. the slide is exact (``symmetric``): the kernel positions end at the padded
       input's last row/column, so the floor in the output-size formula drops nothing;
    2. every input pixel is read (``unread == (0, 0)``): no rows are left out at the
       border nor skipped between positions (a stride longer than the kernel) or
       between dilated taps;
    3. no kernel position sees only zero padding (``padding_only == (0, 0)``;
       padding >= the kernel's span makes whole windows of zeros).

    Attributes
    ----------
    output_size : (int, int)
        Output height and width (may be < 1 when the kernel does not fit).
    arithmetic : (str, str)
        The formula with numbers filled in, e.g. ``"(7 + 2*0 - 3) / 2 + 1 = 3"``.
    symmetric : bool
        True when the kernel's positions cover the padded input exactly, so no
        border row or column is dropped by the floor in the output-size formula
        (check 1 only; layers warn on this alone).
    uncovered : (int, int)
        Rows (bottom) and columns (right) of the padded input after the last kernel
        position (the remainder the floor drops, padding first).
    unread : (int, int)
        Input rows and columns (not padding) that no kernel tap reads, wherever they are.
    padding_only : (int, int)
        Kernel positions along each axis whose taps see only zero padding.
    sound : bool
        All three checks pass on both axes (and the kernel fits).
    problems : tuple of str
        One short sentence per failed check, in the order above; the picture's
        title and the printed verdict are made from these. Empty when sound.
    suggested_paddings, suggested_strides : tuple of (int, int)
        Nearby paddings (with the same stride) and strides (with the same padding)
        whose slides are sound, nearest first.
    message : str
        One paragraph explaining the problem and the fixes; empty when sound.
    """

    input_size: tuple[int, int]
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    output_size: tuple[int, int]
    arithmetic: tuple[str, str]
    symmetric: bool
    uncovered: tuple[int, int]
    suggested_paddings: tuple[tuple[int, int], ...] = field(default=())
    suggested_strides: tuple[tuple[int, int], ...] = field(default=())
    message: str = ""
    unread: tuple[int, int] = (0, 0)
    padding_only: tuple[int, int] = (0, 0)
    sound: bool = False
    problems: tuple[str, ...] = field(default=())


def _uncovered(in_size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Padded rows after the last kernel position (the remainder the floor drops)."""
    span = in_size + 2 * padding - effective_kernel_size(kernel, dilation)
    return span % stride if span >= 0 else 0


# Dilated kernels are checked tap by tap (a boolean row of the padded size) up to
# this many taps; beyond, the span is used as if the kernel had no holes.
_TAP_CHECK_LIMIT = 4_000_000


def _in_residues(n: int, stride: int, kernel: int) -> int:
    """How many of 0, 1, ..., n-1 fall in the first ``kernel`` rows of a window of
    period ``stride`` (``x % stride < kernel``)."""
    return (n // stride) * min(kernel, stride) + min(n % stride, kernel)


def _axis_reads(in_size: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple[int, int]:
    """(input rows never read, kernel positions that see only padding) along one axis.

    Padded coordinates: the input is rows ``[padding, padding + in_size)``; position
    ``j`` reads rows ``j*stride + dilation*t`` for ``t < kernel``. Closed forms for an
    undilated kernel (any size, O(1)); a dilated one is checked tap by tap when small.
    """
    span = effective_kernel_size(kernel, dilation)
    padded = in_size + 2 * padding
    if padded < span:
        return in_size, 0
    out = (padded - span) // stride + 1
    first, end = padding, padding + in_size  # the input's rows
    if dilation > 1 and out * kernel <= _TAP_CHECK_LIMIT:
        taps = (np.arange(out, dtype=np.int64)[:, None] * stride
                + dilation * np.arange(kernel, dtype=np.int64)[None, :])
        inside = (taps >= first) & (taps < end)
        read = np.zeros(padded, dtype=bool)
        read[taps[inside]] = True
        return in_size - int(read[first:end].sum()), int((~inside.any(axis=1)).sum())
    # windows [j*s, j*s + span): rows read below the last window's end
    last_end = (out - 1) * stride + span
    stop = min(end, last_end)
    read = _in_residues(stop, stride, span) - _in_residues(first, stride, span) if stop > first else 0
    # positions ending at or before the input (j*s + span <= first) or starting after it (j*s >= end)
    before = (first - span) // stride + 1 if first >= span else 0
    after = max(0, out - (-(-end // stride)))
    return in_size - read, min(out, before + after)


# Divisor search bound for the stride suggestions: trial division up to this (exact
# for spans up to its square, 10**10); beyond it, divisors near the stride are tried.
_DIVISOR_SEARCH = 10**5
# Exact paddings tried on each side of the current one before giving up.
_PADDING_TRIES = 32


def _axis_sound(in_size: int, kernel: int, stride: int, padding: int, dilation: int) -> bool:
    """The lesson's three checks on one axis (see :class:`ConvExplanation`)."""
    if in_size + 2 * padding < effective_kernel_size(kernel, dilation):
        return False
    unread, padding_only = _axis_reads(in_size, kernel, stride, padding, dilation)
    return _uncovered(in_size, kernel, stride, padding, dilation) == 0 and unread == 0 and padding_only == 0


def _axis_fixes(in_size: int, kernel: int, stride: int, padding: int, dilation: int,
                search: int = 4, count: int = 3) -> tuple[list[int], list[int]]:
    """The ``count`` nearest paddings (same stride, at most ``padding + search*stride``)
    and strides (same padding, at most ``max(stride + search, 2*stride)``) whose
    slides are sound (:func:`_axis_sound`), nearest first.

    Closed forms, not a scan: the work does not grow with the values (explain conv
    --stride 1000000000 answers at once). A padding p is exact when
    ``(in + 2p - span) % stride == 0``: the solutions form an arithmetic progression;
    it must also be below the span (a larger one makes windows of only padding).
    A stride is exact when it divides ``in + 2*padding - span``. Each candidate is
    then put through every check before it is offered.
    """
    span = effective_kernel_size(kernel, dilation)
    # paddings: 2p = span - in (mod stride), p >= ceil((span - in) / 2) so the kernel fits,
    # p < span so no window is all padding
    lowest = max(0, -((in_size - span) // 2))
    highest = min(padding + search * stride, span - 1)
    residue = (span - in_size) % stride
    if stride % 2:  # 2 is invertible mod an odd stride: one solution per period
        period, first = stride, residue * ((stride + 1) // 2) % stride
    else:  # even stride: solutions only for an even residue, period stride / 2
        period, first = stride // 2, (residue // 2 if residue % 2 == 0 else None)
    paddings: list[int] = []
    if first is not None and lowest <= highest:
        centre = min(max(padding, lowest), highest)
        k = (centre - first) // period
        # nearest first; a dilated kernel may fail the other checks on some, so a
        # bounded number beyond ``count`` is tried
        candidates = (first + j * period for j in range(k - _PADDING_TRIES, k + _PADDING_TRIES + 1))
        ordered_paddings = sorted((p for p in candidates if lowest <= p <= highest),
                                  key=lambda p: (abs(p - padding), p))
        for p in ordered_paddings:
            if len(paddings) == count:
                break
            if _axis_sound(in_size, kernel, stride, p, dilation):
                paddings.append(p)
    # strides: divisors of the covered length (every stride when it is 0)
    length = in_size + 2 * padding - span
    top = max(stride + search, 2 * stride)
    if length < 0:
        strides: set[int] = set()
    elif length == 0:
        strides = {s for offset in range(count + 1) for s in (stride - offset, stride + offset)}
    else:
        strides = set()
        for d in range(1, min(math.isqrt(length), _DIVISOR_SEARCH) + 1):
            if length % d == 0:
                strides.update((d, length // d))
        strides.update(s for s in range(stride - _DIVISOR_SEARCH // 100, stride + _DIVISOR_SEARCH // 100 + 1)
                       if s >= 1 and length % s == 0)
    ordered = sorted((s for s in strides if 1 <= s <= top), key=lambda s: (abs(s - stride), -s))
    checked: list[int] = []
    for s in ordered:
        if len(checked) == count:
            break
        if _axis_sound(in_size, kernel, s, padding, dilation):
            checked.append(s)
    return paddings[:count], checked


def _unfloored(covered: int, stride: int) -> str:
    """``covered / stride + 1`` before the floor, for the arithmetic line: 6 digits
    (``2.33333``) when that still shows it is not whole, else exact (``1 + 4/1000000000``)."""
    rounded = f"{covered / stride + 1:g}"
    if "." in rounded and "e" not in rounded:
        return rounded
    return f"{covered // stride + 1} + {covered % stride}/{stride}"


def _counted(count: int, word: str) -> str:
    """``"the last row"``, ``"the last 2 rows"``."""
    return f"the last {word}" if count == 1 else f"the last {count} {word}s"


def _problems(uncovered: tuple[int, int], padding: tuple[int, int], unread: tuple[int, int],
              padding_only: tuple[int, int]) -> tuple[str, ...]:
    """One short sentence per failed check, in the order of :class:`ConvExplanation`,
    from the per-axis facts; input rows dropped at the border are named once (check 1),
    check 2 then names only the rows skipped elsewhere."""
    problems = []
    names = ("row", "column")
    if any(uncovered):
        lost = []
        for count, pad, name in zip(uncovered, padding, names):
            if count:
                kind = "padding" if count <= pad else "input" if pad == 0 else "padded"
                lost.append(_counted(count, f"{kind} {name}"))
        problems.append(f"not exact: {' and '.join(lost)} never covered")
    skipped = [n - max(0, u - p) for n, u, p in zip(unread, uncovered, padding)]
    if any(skipped):
        words = [f"{n} input {name}{'s' if n != 1 else ''}" for n, name in zip(skipped, names) if n]
        problems.append(f"{' and '.join(words)} never read between kernel taps or positions")
    if any(padding_only):
        words = [f"{n} kernel position{'s' if n != 1 else ''} per {name}"
                 for n, name in zip(padding_only, ("column", "row")) if n]
        problems.append(f"{' and '.join(words)} see{'s' if sum(padding_only) == 1 else ''} only zero padding")
    return tuple(problems)


def explain_conv(input_size: Any, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1) -> ConvExplanation:
    """Explain how a kernel slides over an input: output size, the three checks, fixes.

    CNN Explainer's stride lesson: the designer must make sure the kernel slides
    across the input symmetrically. PyTorch floors ``(in + 2p - k) / s`` silently,
    dropping border rows/columns; a stride longer than the kernel skips rows
    between positions; padding as wide as the kernel makes windows of zeros. This
    says which of these happen (:class:`ConvExplanation`) and suggests paddings or
    strides that avoid all three.

    Parameters
    ----------
    input_size, kernel_size, stride, padding, dilation : int or (h, w)

    Returns
    -------
    ConvExplanation

    Examples
    --------
    >>> e = explain_conv(7, 3, stride=3)
    >>> e.output_size, e.symmetric, e.uncovered, e.unread
    ((2, 2), False, (1, 1), (1, 1))
    >>> explain_conv(7, 3, stride=3).suggested_strides
    ((2, 2), (1, 1))
    """
    op = "explain_conv"
    in_h, in_w = pair(input_size, "input_size", op, minimum=1)
    k_h, k_w = pair(kernel_size, "kernel_size", op, minimum=1)
    s_h, s_w = pair(stride, "stride", op, minimum=1)
    p_h, p_w = pair(padding, "padding", op, minimum=0)
    d_h, d_w = pair(dilation, "dilation", op, minimum=1)
    axes = [(in_h, k_h, s_h, p_h, d_h), (in_w, k_w, s_w, p_w, d_w)]
    outputs = tuple(conv_output_size(i, k, s, p, p, d) for i, k, s, p, d in axes)
    arithmetic = tuple(
        f"({i} + 2*{p} - {effective_kernel_size(k, d)}) / {s} + 1 = {o}"
        + (f"  (floor of {_unfloored(i + 2 * p - effective_kernel_size(k, d), s)})"
           if (i + 2 * p - effective_kernel_size(k, d)) % s else "")
        for (i, k, s, p, d), o in zip(axes, outputs)
    )
    uncovered = tuple(_uncovered(*axis) for axis in axes)
    reads = [_axis_reads(*axis) for axis in axes]
    unread = (reads[0][0], reads[1][0])
    padding_only = (reads[0][1], reads[1][1])
    fits = all(o >= 1 for o in outputs)
    symmetric = fits and uncovered == (0, 0)
    sound = symmetric and unread == (0, 0) and padding_only == (0, 0)
    problems = _problems(uncovered, (p_h, p_w), unread, padding_only) if fits else ()
    fixes = [_axis_fixes(*axis) for axis in axes]
    suggested_paddings = tuple((ph, pw) for ph, pw in zip(fixes[0][0], fixes[1][0]))[:3]
    if not suggested_paddings and fixes[0][0] and fixes[1][0]:
        suggested_paddings = ((fixes[0][0][0], fixes[1][0][0]),)
    suggested_strides = tuple((sh, sw) for sh, sw in zip(fixes[0][1], fixes[1][1]))[:3]

    message = ""
    fixes_text = []
    if suggested_paddings:
        fixes_text.append("padding=" + " or ".join(str(p if p[0] != p[1] else p[0]) for p in suggested_paddings))
    if suggested_strides:
        fixes_text.append("stride=" + " or ".join(str(s if s[0] != s[1] else s[0]) for s in suggested_strides))
    alternatives = f" Sound alternatives: {'; '.join(fixes_text)}." if fixes_text else ""
    if not fits:
        message = (
            f"kernel {k_h}x{k_w} (dilation {(d_h, d_w)}) is larger than the padded input "
            f"{in_h + 2 * p_h}x{in_w + 2 * p_w}: output would be {outputs[0]}x{outputs[1]}. "
            f"Use a smaller kernel or more padding."
        )
    elif not symmetric:
        lost = []
        if uncovered[0]:
            lost.append(f"the last {uncovered[0]} row{'s' if uncovered[0] > 1 else ''}")
        if uncovered[1]:
            lost.append(f"the last {uncovered[1]} column{'s' if uncovered[1] > 1 else ''}")
        # the floor drops the bottom/right remainder, the padding there first
        padding_only_dropped = uncovered[0] <= p_h and uncovered[1] <= p_w
        consequence = ("; they are zero padding, so every input pixel is still read, but the borders are "
                       "treated differently (the padding before the input is read, the padding after it "
                       "is not)" if padding_only_dropped else ", so those pixels are silently dropped")
        others = problems[1:]
        message = (
            f"kernel {k_h}x{k_w} with stride {(s_h, s_w)} and padding {(p_h, p_w)} does not slide "
            f"symmetrically over a {in_h}x{in_w} input: {' and '.join(lost)} of the padded input "
            f"{'are' if len(lost) > 1 or max(uncovered) > 1 else 'is'} never covered{consequence} "
            f"(output {outputs[0]}x{outputs[1]}; "
            f"{arithmetic[0] if uncovered[0] else arithmetic[1]})."
            + "".join(f" Also {p}." for p in others) + alternatives
        )
    elif not sound:
        message = (
            f"kernel {k_h}x{k_w} with stride {(s_h, s_w)} and padding {(p_h, p_w)} over a {in_h}x{in_w} input "
            f"(output {outputs[0]}x{outputs[1]}): {'; '.join(problems)}." + alternatives
        )
    return ConvExplanation(
        input_size=(in_h, in_w), kernel_size=(k_h, k_w), stride=(s_h, s_w), padding=(p_h, p_w),
        dilation=(d_h, d_w), output_size=outputs, arithmetic=arithmetic, symmetric=symmetric,
        uncovered=uncovered, suggested_paddings=suggested_paddings,
        suggested_strides=suggested_strides, message=message, unread=unread, padding_only=padding_only,
        sound=sound, problems=problems,
    )

__all__ = [
    "ConvExplanation", "Conv2dGeometry", "HyperparameterWarning", "Pool2dGeometry", "ShapeError",
    "check_array", "check_same_dtype", "check_shape", "conv2d_geometry", "conv_output_size",
    "describe", "effective_kernel_size", "explain_conv", "pair", "pool2d_geometry",
    "pool_output_size", "receptive_field_step", "same_padding", "unpool2d_output_size",
]


# --------------------------------------------------------------------------- #
# average and adaptive pooling windows (issue 11)
# --------------------------------------------------------------------------- #


def avg_pool2d_windows(geometry: Pool2dGeometry, count_include_pad: bool = True,
                       divisor_override: int | None = None) -> tuple[np.ndarray, ...]:
    """Clipped windows and divisors of ``avg_pool2d`` (PyTorch's rules).

    Window ``oh`` starts at ``oh * stride - pad`` and ends at ``min(start + kernel,
    H + pad)``; that span (padding included) is the divisor with
    ``count_include_pad``, the span clipped to [0, H) without; ``divisor_override``
    replaces both.

    Returns
    -------
    h_start, h_end (OH,), w_start, w_end (OW,) : int64, clipped to the input
    divisor : float64 (OH, OW)
    """
    def axis(out: int, size: int, kernel: int, stride: int, pad: int) -> tuple[np.ndarray, ...]:
        start = np.arange(out, dtype=np.int64) * stride - pad
        end = np.minimum(start + kernel, size + pad)
        padded_span = end - start
        start, end = np.maximum(start, 0), np.minimum(end, size)
        return start, end, padded_span, end - start

    hs, he, h_padded, h_span = axis(geometry.out_height, geometry.in_height, geometry.kernel_height,
                                    geometry.stride_h, geometry.pad_h)
    ws, we, w_padded, w_span = axis(geometry.out_width, geometry.in_width, geometry.kernel_width,
                                    geometry.stride_w, geometry.pad_w)
    if divisor_override is not None:
        divisor = np.full((geometry.out_height, geometry.out_width), float(divisor_override))
    elif count_include_pad:
        divisor = np.outer(h_padded, w_padded).astype(np.float64)
    else:
        divisor = np.outer(h_span, w_span).astype(np.float64)
    return hs, he, ws, we, divisor


def adaptive_pool_windows(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive windows along one axis: output i reads
    [floor(i * in / out), ceil((i + 1) * in / out)). Returns (start, end), int64 (out,)."""
    i = np.arange(out_size, dtype=np.int64)
    return (i * in_size) // out_size, -(-((i + 1) * in_size) // out_size)


def adaptive_output_size(output_size: Any, x_shape: Sequence[int], op: str) -> tuple[int, int]:
    """``output_size`` (int, or a pair whose entries may be None = keep the input's
    size) as (OH, OW), each >= 1."""
    height, width = int(x_shape[-2]), int(x_shape[-1])
    if _is_int(output_size):
        value = (int(output_size), int(output_size))
    elif (isinstance(output_size, (tuple, list)) and len(output_size) == 2
          and all(v is None or _is_int(v) for v in output_size)):
        value = (height if output_size[0] is None else int(output_size[0]),
                 width if output_size[1] is None else int(output_size[1]))
    else:
        raise TypeError(f"{op}: output_size must be an int or a pair of ints or None, got {output_size!r}")
    if min(value) < 1:
        raise ValueError(f"{op}: output_size must be >= 1 on both axes, got {output_size!r}")
    return value
