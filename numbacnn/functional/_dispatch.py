"""What every functional op shares: finding the one device of its inputs, making
them contiguous, and picking the kernel backend. No op logic lives here."""

from __future__ import annotations

from typing import Any

import numpy as np

from numbacnn.device import backend, device_of
from numbacnn.shapes import check_array, check_same_dtype, check_shape

Array = Any  # a NumPy array or a CUDA device array
IntOrPair = int | tuple[int, int]


def _common_device(op: str, **arrays: Array) -> str:
    """The one device all given arrays (None skipped) live on; error if they differ."""
    placed = [(name, device_of(a)) for name, a in arrays.items() if a is not None]
    first_name, first_device = placed[0]
    for name, where in placed[1:]:
        if where != first_device:
            raise ValueError(
                f"{op}: {first_name} is on {first_device} but {name} is on {where}; "
                f"all inputs must be on one device (move them with numbacnn.to_device(array, "
                f"'{first_device}'))"
            )
    return first_device


def _contiguous(a: Array, name: str, op: str, where: str) -> Array:
    """C-contiguous version of ``a``: a copy for strided NumPy views (values and dtype
    unchanged); CUDA arrays must already be contiguous."""
    if a is None:
        return None
    if where == "cpu":
        a = np.asarray(a)
        # not np.ascontiguousarray alone: it turns a 0-d array into shape (1,)
        return a if a.flags.c_contiguous else np.ascontiguousarray(a)
    is_contiguous = getattr(a, "is_c_contiguous", None)
    if is_contiguous is not None and not is_contiguous():
        raise ValueError(f"{op}: {name} is a non-contiguous CUDA array; expected a C-contiguous one")
    return a


def _prepare(op: str, **arrays: Array) -> tuple[str, Any, dict[str, Array]]:
    """Device, kernel backend and contiguous versions of the named arrays."""
    if all(a is None or (type(a) is np.ndarray and a.flags.c_contiguous) for a in arrays.values()):
        return "cpu", backend("cpu"), arrays  # the common case, once per op and step: nothing to move or copy
    where = _common_device(op, **arrays)
    kernels = backend(where)
    return where, kernels, {name: _contiguous(a, name, op, where) for name, a in arrays.items()}


def _add_batch_axis(a: Array, batched_ndim: int) -> tuple[Array, bool]:
    """``a`` with a leading batch axis of 1 when it has ``batched_ndim - 1`` axes (an
    unbatched (C, H, W) image, as PyTorch accepts), and whether one was added.

    A reshape: a view of contiguous arrays on either device, nothing copied."""
    if hasattr(a, "shape") and len(a.shape) == batched_ndim - 1:  # non-arrays are refused by the checks
        return a.reshape((1, *a.shape)), True
    return a, False


def _drop_batch_axis(a: Array, added: bool) -> Array:
    """Undo :func:`_add_batch_axis` on a result: (1, ...) -> (...) when ``added``."""
    if a is None or not added:
        return a
    return a.reshape(tuple(a.shape[1:]))


def _byte_range(a: Array) -> tuple[int, int] | None:
    """[start, end) of the memory ``a`` spans, or None when it cannot be told."""
    host = a if isinstance(a, np.ndarray) else getattr(a, "_ary", None)  # the CUDA simulator wraps NumPy
    if isinstance(host, np.ndarray):
        low, high = np.lib.array_utils.byte_bounds(host)
        return low, high
    interface = getattr(a, "__cuda_array_interface__", None)
    if interface is not None:
        start = int(interface["data"][0])
        return start, start + int(a.nbytes)
    return None


def _overlap(a: Array, b: Array) -> str:
    """"same" when a and b are the same memory with the same shape, "partial" when
    their memory overlaps otherwise, "" when it does not."""
    if type(a) is np.ndarray and type(b) is np.ndarray and not np.may_share_memory(a, b):
        return ""  # disjoint bounds, told in C: the common case, once per checked input and step
    ra, rb = _byte_range(a), _byte_range(b)
    if ra is None or rb is None or ra[0] >= rb[1] or rb[0] >= ra[1] or a.nbytes == 0 or b.nbytes == 0:
        return ""
    return "same" if ra == rb and tuple(a.shape) == tuple(b.shape) else "partial"


def _output(op: str, name: str, out: Array | None, kernels: Any, where: str, shape: tuple, dtype: Any,
            inputs: dict[str, Array] | None = None, elementwise: bool = False) -> Array:
    """The array an op writes its result ``name`` into: ``out`` when given (checked:
    shape, dtype, device, C-contiguous and writable, and not overlapping an input,
    except that an elementwise op may write over an input exactly, as PyTorch's
    in-place ops), else a new ``kernels.empty(shape, dtype)``.

    Parameters
    ----------
    name : str
        The argument as the user spells it (``out``, ``out[1]``), named in every error.
    inputs : dict of name -> array
        The op's inputs that ``out`` must not overlap.
    """
    shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    if out is None:
        return kernels.empty(shape, dtype)
    if (type(out) is np.ndarray and where == "cpu" and out.shape == shape and out.dtype == dtype
            and out.flags.c_contiguous and out.flags.writeable
            and all(a is None or (type(a) is np.ndarray and not np.may_share_memory(out, a))
                    for a in (inputs or {}).values())):
        return out  # the common case (a kept workspace), once per op and step: told in C, no messages built

    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise TypeError(f"{op}: {name} must be an array or None, got {type(out).__name__}")
    if tuple(int(s) for s in out.shape) != shape:
        raise ValueError(f"{op}: {name} has shape {tuple(out.shape)}, expected {shape}")
    if np.dtype(out.dtype) != dtype:
        raise TypeError(f"{op}: {name} has dtype {np.dtype(out.dtype).name}, expected {dtype.name} (nothing is cast)")
    out_device = device_of(out)
    if out_device != where:
        raise ValueError(f"{op}: {name} is on {out_device} but the inputs are on {where}; "
                         f"pass an output array on {where}")
    if isinstance(out, np.ndarray):
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ValueError(f"{op}: {name} must be a C-contiguous writable array (a strided view or read-only "
                             f"array cannot be written in place)")
    elif not out.is_c_contiguous():
        raise ValueError(f"{op}: {name} is a non-contiguous CUDA array; expected a C-contiguous one")
    for input_name, a in (inputs or {}).items():
        if a is None:
            continue
        kind = _overlap(out, a)
        if kind == "partial" or (kind == "same" and not elementwise):
            raise ValueError(f"{op}: {name} shares memory with {input_name}; the op reads {input_name} while it "
                             f"writes {name} (pass a separate array)")
    return out


def _split_out(op: str, out: tuple | None, count: int) -> tuple:
    """The entries of a multi-output ``out=`` tuple (all None when out is None)."""
    if out is None:
        return (None,) * count
    if not isinstance(out, (tuple, list)) or len(out) != count:
        raise TypeError(f"{op}: out must be a tuple of {count} arrays or None entries, got {type(out).__name__}"
                        + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    return tuple(out)


def _check_elementwise_pair(op: str, checked: str, reference: str, **arrays: Array) -> np.dtype:
    """The checks of an elementwise backward's two inputs (``arrays``, in the order
    their errors are reported): each an array (empty allowed), one dtype, and
    ``arrays[checked]`` of ``arrays[reference]``'s shape. Returns the dtype."""
    for name, a in arrays.items():
        check_array(a, name, op, empty="any")
    dtype = check_same_dtype(op, **arrays)
    check_shape(arrays[checked], checked, op, tuple(arrays[reference].shape), f" ({reference}'s shape)")
    return dtype
