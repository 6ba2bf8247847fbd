"""Module and Parameter: the layer API, PyTorch-shaped but explicit (Sequential is in
``sequential.py``).

There is no autograd. ``forward(x)`` caches what the backward pass needs (in
training mode); ``backward(gy)`` returns the gradient with respect to the input
and *adds* each parameter's gradient into ``Parameter.grad``. Parameter names
follow PyTorch (``features.0.weight``), so a PyTorch ``state_dict`` of the same
architecture maps onto a numbacnn model by name and shape.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from numbacnn.device import backend, device_of, is_cuda_array, resolve_device, to_device, to_host
from numbacnn.nn.summary import summary
from numbacnn.shapes import ConvExplanation


def _is_c_contiguous(a: Any) -> bool:
    """C-contiguity of a NumPy or CUDA array (Numba's device arrays and the CUDA
    simulator's have ``is_c_contiguous()``; other CUDA arrays, ``flags``)."""
    if isinstance(a, np.ndarray):
        return bool(a.flags.c_contiguous)
    method = getattr(a, "is_c_contiguous", None)
    if method is not None:
        return bool(method())
    flags = getattr(a, "flags", None)
    return bool(flags is None or flags["C_CONTIGUOUS"])


_PARAMETER_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_parameter_data(data: Any, what: str = "data") -> None:
    """Raise unless ``data`` can hold a parameter: a C-contiguous, writable float32
    or float64 NumPy array or CUDA device array. Optimizers update it in place
    through a flat ``reshape(-1)`` view, which for a strided array would be a copy
    (every update silently lost)."""
    if type(data) is np.ndarray and data.dtype in _PARAMETER_DTYPES and data.flags.c_contiguous \
            and data.flags.writeable:
        return  # the common case, for every parameter at every optimizer step
    if not (isinstance(data, np.ndarray) or is_cuda_array(data)):
        raise TypeError(f"{what} must be a float32 or float64 NumPy array or CUDA device array, got "
                        f"{type(data).__name__} (e.g. np.asarray(values, dtype=np.float32))")
    dtype = np.dtype(data.dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{what} must be float32 or float64, got dtype {dtype} (convert it with .astype)")
    if not _is_c_contiguous(data):
        raise ValueError(f"{what} must be C-contiguous (it is updated in place through a flat view); "
                         f"pass a contiguous copy, e.g. np.ascontiguousarray(data)")
    if isinstance(data, np.ndarray) and not data.flags.writeable:
        raise ValueError(f"{what} is read-only; parameters are updated in place (pass a writable copy)")


class Parameter:
    """A trainable array and its gradient.

    Parameters
    ----------
    data : array
        The values, a C-contiguous float32/float64 NumPy array or CUDA device array.

    Attributes
    ----------
    data : array
        Current values (same shape and device as given).
    grad : array or None
        Accumulated gradient, same shape/dtype/device as ``data``; ``None`` after
        :meth:`zero_grad` until a backward pass writes one.
    """

    def __init__(self, data: Any) -> None:
        check_parameter_data(data, "Parameter: data")
        self.data = data
        self.grad: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def device(self) -> str:
        return device_of(self.data)

    def accumulate(self, delta: Any) -> None:
        """Add a freshly computed gradient ``delta`` (same shape) into ``grad``.

        The first gradient after :meth:`zero_grad` is kept as is (the functional
        ops return new arrays, so nobody else holds it); later ones are added by
        the device's ``grad_accumulate`` kernel.
        """
        self.check_gradient(delta, "Parameter.accumulate: delta")
        if self.grad is None:
            self.grad = delta
            return
        self.check_gradient(self.grad, "Parameter.accumulate: grad")
        if isinstance(self.grad, np.ndarray) and not (self.grad.flags.c_contiguous and self.grad.flags.writeable):
            # a hand-set strided or read-only gradient: the flat view below would be a
            # copy (the sum lost) or unwritable, so accumulate into a fresh copy
            self.grad = np.array(self.grad, order="C", copy=True)
        backend(self.device).grad_accumulate(self.grad.reshape(-1), delta.reshape(-1))

    def check_gradient(self, grad: Any, what: str = "grad") -> None:
        """Raise unless ``grad`` can be this parameter's gradient: an array of the
        same shape, dtype and device (a C-contiguous one on CUDA). The optimizers
        call it for every gradient before updating anything, so a wrong one never
        reaches a kernel (which would read past its end)."""
        data = self.data
        if type(grad) is np.ndarray and type(data) is np.ndarray and grad.shape == data.shape \
                and grad.dtype == data.dtype:
            return  # the common case, twice per parameter and step, told without building messages
        if not (isinstance(grad, np.ndarray) or is_cuda_array(grad)):
            raise TypeError(f"{what} must be a NumPy or CUDA array like the parameter {self!r}, "
                            f"got {type(grad).__name__}")
        if tuple(grad.shape) != self.shape:
            raise ValueError(f"{what} has shape {tuple(grad.shape)}, expected {self.shape} like the parameter")
        if np.dtype(grad.dtype) != self.dtype:
            raise TypeError(f"{what} has dtype {np.dtype(grad.dtype)}, expected {self.dtype} like the parameter "
                            f"(convert it with .astype)")
        if device_of(grad) != self.device:
            raise ValueError(f"{what} is on {device_of(grad)} but the parameter is on {self.device} "
                             f"(move it with numbacnn.to_device(grad, {self.device!r}))")
        if not isinstance(grad, np.ndarray) and not _is_c_contiguous(grad):
            raise ValueError(f"{what} is a non-contiguous CUDA array; expected a C-contiguous one")

    def zero_grad(self) -> None:
        """Forget the accumulated gradient."""
        self.grad = None

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, device={self.device!r})"


class Module:
    """Base class of every layer and model.

    Subclasses set parameters and sub-modules as attributes (they are registered
    in assignment order, which fixes the ``state_dict`` order) and implement
    :meth:`forward` and :meth:`backward`.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())  # non-trainable state (BatchNorm's running stats)
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        state = self.__dict__
        if name in state and name not in state.get("_parameters", (name,)) and name not in state["_modules"] \
                and name not in state["_buffers"] and not isinstance(value, (Parameter, Module)):
            state[name] = value  # a plain attribute again (a layer's cached input, each step)
            return
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before setting attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if name in self.__dict__.get("_buffers", ()):
            self._buffers[name] = value  # reassigning a buffer keeps it a buffer
        elif isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ passes
    def forward(self, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, gy: Any, input_grad: bool = True) -> Any:  # pragma: no cover - abstract
        """Gradient w.r.t. the last forward's input (``None`` when ``input_grad`` is
        False); parameter gradients are accumulated into their ``grad``."""
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def __call__(self, x: Any) -> Any:
        if not (isinstance(x, np.ndarray) or is_cuda_array(x)):
            # say it here: a layer deep inside would fail on a missing .shape or dtype
            raise TypeError(f"{type(self).__name__}: input must be a NumPy array or a CUDA device array, got "
                            f"{type(x).__name__} (e.g. np.asarray(x, dtype=np.float32))")
        return self.forward(x)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``forward``'s output for an input of ``input_shape`` (no compute).
        Layers that change the shape override this."""
        return tuple(input_shape)

    def flops(self, input_shape: tuple[int, ...]) -> int:
        """Floating-point operations of one forward pass (a multiply-add counts 2)."""
        return 0

    def slide(self, input_hw: tuple[int, int]) -> ConvExplanation | None:
        """How this layer's kernel slides over an (H, W) input
        (:func:`numbacnn.shapes.explain_conv`); None for layers without a sliding
        kernel, or whose padding means no border pixel can be dropped."""
        return None

    # ------------------------------------------------------------------ traversal
    def children(self) -> Iterator["Module"]:
        yield from self._modules.values()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """This module and every sub-module, depth first, with dotted names."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        """This module and every sub-module, depth first (as PyTorch's: e.g. freeze the
        batch norms with ``for m in model.modules(): if isinstance(m, nn.BatchNorm2d): m.eval()``)."""
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(name, Parameter)`` pairs with PyTorch-style dotted names, in order."""
        for name, p in self._parameters.items():
            yield (f"{prefix}.{name}" if prefix else name), p
        for name, child in self._modules.items():
            yield from child.named_parameters(f"{prefix}.{name}" if prefix else name)

    def register_buffer(self, name: str, value: Any) -> None:
        """Keep ``value`` (an array) as state that is saved and loaded with the
        parameters but not trained, e.g. BatchNorm's ``running_mean``; it is the
        attribute ``name`` and appears in :meth:`state_dict` after this module's
        parameters, as in PyTorch."""
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """``(name, array)`` pairs of every buffer, dotted names, state_dict order."""
        for name, b in self.__dict__.get("_buffers", {}).items():
            yield (f"{prefix}.{name}" if prefix else name), b
        for name, child in self._modules.items():
            yield from child.named_buffers(f"{prefix}.{name}" if prefix else name)

    def _named_state(self, prefix: str = "") -> Iterator[tuple[str, Any, "Module", str, bool]]:
        """(dotted name, value, owning module, attribute, is_parameter) in PyTorch's
        state_dict order: a module's parameters, its buffers, then its children."""
        for name, p in self._parameters.items():
            yield (f"{prefix}.{name}" if prefix else name), p, self, name, True
        for name, b in self.__dict__.get("_buffers", {}).items():
            yield (f"{prefix}.{name}" if prefix else name), b, self, name, False
        for name, child in self._modules.items():
            yield from child._named_state(f"{prefix}.{name}" if prefix else name)

    def parameters(self) -> list[Parameter]:
        """Every Parameter of this module and its sub-modules, in state_dict order."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        """Total count of trainable scalars."""
        return sum(p.size for p in self.parameters())

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "Module":
        """Training mode: forward caches what backward needs. Returns self."""
        if not isinstance(mode, (bool, np.bool_)):
            raise TypeError(f"{type(self).__name__}.train: mode must be True or False, got {mode!r}")
        for _, m in self.named_modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        """Inference mode: forward caches nothing (backward is then unavailable)."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget every parameter's accumulated gradient."""
        for p in self.parameters():
            p.zero_grad()

    def to(self, device_name: str) -> "Module":
        """Move every parameter (and gradient) to ``device_name`` ("cpu", "cuda",
        "auto"); returns self. Dtypes never change."""
        target = resolve_device(device_name)
        for p in self.parameters():
            p.data = to_device(p.data, target)
            if p.grad is not None:
                p.grad = to_device(p.grad, target)
        for _, b, owner, attr, _ in list(self._named_state()):
            # float buffers follow the parameters; counters (num_batches_tracked) stay on the host
            if not isinstance(b, Parameter) and np.dtype(b.dtype).kind == "f":
                setattr(owner, attr, to_device(b, target))
        return self

    @property
    def device(self) -> str:
        """Device of the first parameter ("cpu" for a module without parameters)."""
        params = self.parameters()
        return params[0].device if params else "cpu"

    # ------------------------------------------------------------------ state
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Host copies of every parameter and buffer, keyed by PyTorch-style name."""
        return OrderedDict((name, np.array(to_host(v.data if is_param else v), copy=True))
                           for name, v, _, _, is_param in self._named_state())

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Copy values into the parameters and buffers, checking names, shapes, dtypes.

        Parameters
        ----------
        state : mapping of name -> array
            E.g. from :meth:`state_dict`, a checkpoint, or a PyTorch model's
            ``state_dict()`` as it is: tensors are converted with
            ``.detach().cpu().numpy()`` (torch itself is never imported here). Values
            must already have the model's dtypes (nothing is cast: build the model
            with ``dtype=np.float32`` for a float32 PyTorch model).
        strict : bool
            When True (PyTorch's default), missing and unexpected names are errors.

        Raises
        ------
        KeyError
            Names missing from ``state`` or not in the model (strict mode).
        ValueError, TypeError
            A shape or dtype differs, or a value is not an array; the message names it.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"load_state_dict: state must be a mapping of name -> array, got {type(state).__name__}")
        targets = OrderedDict((name, (value, owner, attr, is_param))
                              for name, value, owner, attr, is_param in self._named_state())
        missing = [n for n in targets if n not in state]
        unexpected = [n for n in state if n not in targets]
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict: names do not match the model; missing {missing}, unexpected {unexpected} "
                f"(pass strict=False to load the common names only)"
            )
        # Check everything before copying anything, so a bad state leaves the model untouched.
        checked = []
        for name, (current, owner, attr, is_param) in targets.items():
            if name not in state:
                continue
            value = _as_numpy(state[name])
            if not isinstance(value, np.ndarray):
                raise TypeError(f"load_state_dict: {name} must be an array, got {type(state[name]).__name__}")
            shape = current.shape if is_param else tuple(current.shape)
            dtype = current.dtype if is_param else np.dtype(current.dtype)
            if tuple(value.shape) != tuple(shape):
                raise ValueError(f"load_state_dict: {name} has shape {tuple(value.shape)}, expected {tuple(shape)}")
            if value.dtype != dtype:
                raise TypeError(
                    f"load_state_dict: {name} has dtype {value.dtype}, expected {dtype} "
                    f"(convert it explicitly with .astype)"
                )
            checked.append((current, owner, attr, is_param, value))
        for current, owner, attr, is_param, value in checked:
            copy = np.array(value, copy=True, order="C")
            if is_param:
                current.data = to_device(copy, current.device)
            else:
                setattr(owner, attr, to_device(copy, device_of(current)))

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        lines.append(")")
        return "\n".join(lines)

    def summary(self, input_shape: Sequence[int], print_fn: Callable[[str], None] | None = print) -> str:
        """Print (and return) a table of layers, output shapes, parameters and FLOPs.

        See :func:`numbacnn.nn.summary`.
        """
        return summary(self, input_shape, print_fn=print_fn)


def _as_numpy(value: Any) -> Any:
    """A host NumPy array from a NumPy/CUDA array or a PyTorch tensor (duck-typed:
    ``.detach().cpu().numpy()``, so torch is not imported); other values unchanged."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) or is_cuda_array(value):
        return to_host(value)
    if hasattr(value, "numpy"):
        return value.numpy()
    return value
