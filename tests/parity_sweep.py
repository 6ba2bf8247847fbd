"""The acceptance sweep of issue 11: how much of what torch.nn.functional accepts does
numbacnn accept, and is every accepted call right?

A seeded generator draws argument combinations for conv2d, max_pool2d, relu, linear
and cross_entropy the way a PyTorch user might write them: batched and unbatched
input, empty batches, int / pair / one-element-list hyperparameters, string
paddings, return_indices, inplace, (*, in) inputs, 1-D weights, class-index and
class-probability targets, weights, ignore_index, every reduction (and the
deprecated size_average / reduce), label smoothing, float32 and float64, strided
(non-contiguous) inputs, and some combinations PyTorch itself refuses. Each draw is
first given to PyTorch in its own dtype; a draw PyTorch refuses is not counted.
For the rest, numbacnn either

- accepts it: the forward outputs and every input gradient (from a random upstream
  gradient) must match PyTorch evaluated in float64 on the same values, to the
  accuracy bar (``helpers.assert_close``: 2e-4 float32, 1e-10 float64), or
- refuses it: the message must say "not supported".

Run ``python tests/parity_sweep.py [count] [seed] [device]`` to print the report.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

import numbacnn
import numbacnn.functional as F
from helpers import assert_close
from reference import pool_output_size

OPS = ("conv2d", "max_pool2d", "relu", "linear", "cross_entropy")
REFUSAL_WORDING = "not supported"


@dataclass
class Report:
    torch_accepted: int = 0
    torch_refused: int = 0
    accepted: int = 0
    refused: int = 0
    mismatches: list[str] = field(default_factory=list)
    bad_refusals: list[str] = field(default_factory=list)
    per_op: dict[str, list[int]] = field(default_factory=lambda: {op: [0, 0] for op in OPS})
    refusal_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.accepted / self.torch_accepted if self.torch_accepted else 0.0

    def summary(self) -> str:
        lines = [f"numbacnn accepts {self.accepted} of {self.torch_accepted} PyTorch-accepted calls "
                 f"({100 * self.rate:.1f}%); {self.torch_refused} draws PyTorch refused were not counted; "
                 f"{len(self.mismatches)} accepted calls differ from PyTorch; "
                 f"{len(self.bad_refusals)} refusals without '{REFUSAL_WORDING}'"]
        for op, (accepted, total) in self.per_op.items():
            lines.append(f"  {op:14s} {accepted:5d} / {total:5d}")
        for reason, count in sorted(self.refusal_reasons.items(), key=lambda item: -item[1]):
            lines.append(f"  refused x{count}: {reason}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- #
# drawing calls
# --------------------------------------------------------------------------- #


def _int_or_pair(rng, low, high):
    """An int, an (h, w) tuple or a one-element list, as PyTorch users write them."""
    form = rng.integers(0, 3)
    if form == 0:
        return int(rng.integers(low, high))
    if form == 1:
        return (int(rng.integers(low, high)), int(rng.integers(low, high)))
    return [int(rng.integers(low, high))]


def _array(rng, shape, dtype, strided=False):
    """Random values; ``strided`` gives a non-contiguous view with these values' shape."""
    if strided and len(shape) >= 2:
        base = rng.standard_normal((*shape[:-2], shape[-1], shape[-2])).astype(dtype)
        return np.swapaxes(base, -1, -2)
    return rng.standard_normal(shape).astype(dtype)


def _batch_shape(rng, rest, zero_d=True):
    batch = rng.choice(["unbatched", "zero", "one", "some"], p=[0.2, 0.1, 0.3, 0.4])
    if batch == "unbatched":
        return tuple(rest)
    return (0 if batch == "zero" else 1 if batch == "one" else int(rng.integers(2, 4)), *rest)


def draw_conv2d(rng, zero_d):
    dtype = rng.choice([np.float32, np.float64])
    groups = int(rng.choice([1, 1, 2, 3]))
    channels, filters = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    kernel = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    size = (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
    kwargs = dict(stride=_int_or_pair(rng, 1, 4), dilation=_int_or_pair(rng, 1, 3), groups=groups)
    kwargs["padding"] = rng.choice(["same", "valid", "int", "pair"], p=[0.2, 0.1, 0.4, 0.3])
    if kwargs["padding"] in ("int", "pair"):
        kwargs["padding"] = _int_or_pair(rng, 0, 4)
    if rng.random() < 0.05:  # PyTorch refuses this one: a wrong channel count
        channels += 1
    strided = rng.random() < 0.15
    arrays = dict(x=_array(rng, _batch_shape(rng, (channels, *size)), dtype, strided),
                  w=_array(rng, (filters, channels // groups if rng.random() > 0.03 else channels, *kernel), dtype),
                  b=_array(rng, (filters,), dtype) if rng.random() < 0.6 else None)
    return arrays, kwargs


def draw_max_pool2d(rng, zero_d):
    dtype = rng.choice([np.float32, np.float64])
    kernel = _int_or_pair(rng, 1, 5)
    kernel_pair = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel) * (2 // len(kernel))
    kwargs = dict(kernel_size=kernel,
                  stride=None if rng.random() < 0.3 else _int_or_pair(rng, 1, 4),
                  padding=(int(rng.integers(0, kernel_pair[0] // 2 + 1 + (rng.random() < 0.1))),
                           int(rng.integers(0, kernel_pair[1] // 2 + 1))),
                  dilation=_int_or_pair(rng, 1, 3), ceil_mode=bool(rng.random() < 0.4),
                  return_indices=bool(rng.random() < 0.4))
    size = (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
    x = _array(rng, _batch_shape(rng, (int(rng.integers(1, 4)), *size)), dtype, rng.random() < 0.15)
    return dict(x=x), kwargs


def draw_relu(rng, zero_d):
    dtype = rng.choice([np.float32, np.float64])
    rank = int(rng.integers(0 if zero_d else 1, 6))
    shape = tuple(int(rng.integers(0 if rng.random() < 0.1 else 1, 5)) for _ in range(rank))
    return dict(x=_array(rng, shape, dtype, rng.random() < 0.15)), dict(inplace=bool(rng.random() < 0.3))


def draw_linear(rng, zero_d):
    dtype = rng.choice([np.float32, np.float64])
    features, outputs = int(rng.integers(0 if rng.random() < 0.03 else 1, 6)), int(rng.integers(1, 5))
    leading = tuple(int(rng.integers(0 if rng.random() < 0.15 else 1, 4)) for _ in range(int(rng.integers(0, 4))))
    one_d_weight = rng.random() < 0.1
    w = _array(rng, (features,) if one_d_weight else (outputs, features), dtype)
    b = None
    if rng.random() < 0.6:
        b = _array(rng, () if one_d_weight and zero_d else (1,) if one_d_weight else (outputs,), dtype)
    return dict(x=_array(rng, (*leading, features), dtype, rng.random() < 0.15), w=w, b=b), {}


def draw_cross_entropy(rng, zero_d):
    dtype = rng.choice([np.float32, np.float64])
    classes = int(rng.integers(1, 6))
    layout = rng.choice(["C", "N,C", "N,C,d", "N,C,d,d"], p=[0.15 if zero_d else 0, 0.45, 0.25, 0.15 + (
        0 if zero_d else 0.15)])
    batch = int(rng.integers(0, 4)) if rng.random() < 0.2 else int(rng.integers(1, 5))
    shape = (classes,) if layout == "C" else (batch, classes, *(int(rng.integers(1, 4))
                                                                 for _ in range(layout.count("d"))))
    logits = _array(rng, shape, dtype, rng.random() < 0.1) * 3
    kwargs: dict = {}
    if rng.random() < 0.25:
        target = rng.uniform(0, 1, shape)
        target = (target / target.sum(axis=0 if layout == "C" else 1, keepdims=True))
        target = target.astype(np.float32 if rng.random() < 0.1 else dtype)  # mixed dtypes: PyTorch accepts
    else:
        target = rng.integers(0, classes, () if layout == "C" else (shape[0], *shape[2:]))
        target = target.astype(rng.choice([np.int64, np.int64, np.uint8, np.int32]))
        if rng.random() < 0.4:
            kwargs["ignore_index"] = int(rng.choice([0, classes - 1, -1, 100]))
    if rng.random() < 0.05:  # PyTorch refuses this one: a class index out of range
        target = np.full(np.shape(target), classes, np.int64)
    if rng.random() < 0.4:
        kwargs["weight"] = rng.uniform(0.1, 2, classes).astype(dtype)
    if rng.random() < 0.15:
        kwargs["size_average"] = bool(rng.random() < 0.5)
        kwargs["reduce"] = rng.choice([None, True, False])
    else:
        kwargs["reduction"] = str(rng.choice(["mean", "sum", "none"]))
    if rng.random() < 0.4:
        kwargs["label_smoothing"] = float(rng.choice([0.05, 0.1, 0.5, 1.0]))
    return dict(logits=logits, target=target), kwargs


DRAW = dict(conv2d=draw_conv2d, max_pool2d=draw_max_pool2d, relu=draw_relu, linear=draw_linear,
            cross_entropy=draw_cross_entropy)


# --------------------------------------------------------------------------- #
# running a call in PyTorch and in numbacnn
# --------------------------------------------------------------------------- #


def _differentiable(name, a):
    return a is not None and np.issubdtype(a.dtype, np.floating) and not (name == "target")


def _torch_call(torch, op, arrays, kwargs, upstream_rng, float64):
    """(outputs, input gradients, upstream gradients) of one call in PyTorch.

    ``float64`` evaluates on float64 copies of the same values (the expected result);
    otherwise in the draw's own dtype (does PyTorch accept it?)."""
    tf = torch.nn.functional
    tensors = {}
    for name, a in arrays.items():
        if a is None:
            tensors[name] = None
            continue
        t = torch.tensor(np.array(a, np.float64 if float64 and np.issubdtype(a.dtype, np.floating) else a.dtype))
        if _differentiable(name, a) and name not in ("target", "weight"):
            t.requires_grad_(True)
        tensors[name] = t
    torch_kwargs = {k: (torch.tensor(np.array(v, np.float64 if float64 else v.dtype)) if isinstance(v, np.ndarray)
                        else v) for k, v in kwargs.items()}
    if op == "conv2d":
        outputs = [tf.conv2d(tensors["x"], tensors["w"], tensors["b"], **torch_kwargs)]
    elif op == "max_pool2d":
        if _has_window_of_padding_only(arrays["x"].shape, kwargs):
            # PyTorch 2.13's CPU max_pool2d corrupts the heap on such windows (seen:
            # x (1, 2, 1, 5), kernel (2, 1), stride 3, padding (1, 0), dilation 2,
            # return_indices: "munmap_chunk(): invalid pointer"); its result is undefined
            # there, so the draw is not part of the measure (numbacnn gives -inf, tested
            # against reference.py in test_parity_ops)
            raise ValueError("a pooling window lies entirely in the padding")
        result = tf.max_pool2d(tensors["x"], **torch_kwargs)
        outputs = list(result) if kwargs["return_indices"] else [result]
    elif op == "relu":
        source = tensors["x"].clone() if kwargs["inplace"] else tensors["x"]
        outputs = [tf.relu(source, **torch_kwargs)]
    elif op == "linear":
        outputs = [tf.linear(tensors["x"], tensors["w"], tensors["b"])]
    else:
        outputs = [tf.cross_entropy(tensors["logits"], tensors["target"], **torch_kwargs)]
    main = outputs[0]
    upstream = upstream_rng.standard_normal(tuple(main.shape)) if main.dim() else np.float64(0.7)
    main.backward(torch.tensor(upstream, dtype=main.dtype))
    grads = {name: t.grad.numpy() for name, t in tensors.items() if t is not None and t.grad is not None}
    return [o.detach().numpy() for o in outputs], grads, upstream



def _has_window_of_padding_only(x_shape, kwargs) -> bool:
    """Whether some max_pool2d output window holds no input element (only padding)."""
    def _pair(value):  # int, pair or one-element list, as PyTorch takes them
        value = (value,) if isinstance(value, int) else tuple(value)
        return value * 2 if len(value) == 1 else value
    kernel = _pair(kwargs["kernel_size"])
    stride = _pair(kwargs.get("stride") or kwargs["kernel_size"])
    padding = _pair(kwargs.get("padding", 0))
    dilation = _pair(kwargs.get("dilation", 1))
    for axis in range(2):
        size = x_shape[-2 + axis]
        out = pool_output_size(size, kernel[axis], stride[axis], padding[axis], dilation[axis],
                               kwargs.get("ceil_mode", False))
        for o in range(max(out, 0)):
            taps = [o * stride[axis] - padding[axis] + k * dilation[axis] for k in range(kernel[axis])]
            if not any(0 <= t < size for t in taps):
                return True
    return False

def _numbacnn_call(op, arrays, kwargs, upstream, device):
    """(outputs, input gradients) of one call in numbacnn, arrays moved to ``device``."""
    dtype = next(a.dtype for a in arrays.values() if a is not None and np.issubdtype(a.dtype, np.floating))
    moved = {name: None if a is None else numbacnn.to_device(a, device) for name, a in arrays.items()}
    moved_kwargs = {k: numbacnn.to_device(v, device) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    # the losses' upstream gradient of a scalar is a number; every other op's is an array (0-d included)
    gy = float(upstream) if op == "cross_entropy" and not np.ndim(upstream) else np.asarray(upstream).astype(dtype)
    gy_device = numbacnn.to_device(gy, device) if isinstance(gy, np.ndarray) else gy
    host = numbacnn.to_host
    if op == "conv2d":
        y = F.conv2d(moved["x"], moved["w"], moved["b"], **moved_kwargs)
        gx, gw, gb = F.conv2d_backward(gy_device, moved["x"], moved["w"], **moved_kwargs)
        grads = dict(x=host(gx), w=host(gw), b=host(gb))
        return [host(y)], grads
    if op == "max_pool2d":
        hyper = {k: v for k, v in moved_kwargs.items() if k != "return_indices"}
        result = F.max_pool2d(moved["x"], **moved_kwargs)
        outputs = [host(r) for r in result] if kwargs["return_indices"] else [host(result)]
        grads = dict(x=host(F.max_pool2d_backward(gy_device, moved["x"], **hyper)))
        if kwargs["return_indices"]:
            from_indices = F.max_pool2d_backward(gy_device, None, **hyper, indices=result[1],
                                                 input_shape=tuple(arrays["x"].shape))
            grads["x (from indices)"] = host(from_indices)
        return outputs, grads
    if op == "relu":
        source = numbacnn.to_device(np.array(arrays["x"], order="C", copy=True), device) if kwargs["inplace"] \
            else moved["x"]
        y = F.relu(source, **moved_kwargs)
        return [host(y)], dict(x=host(F.relu_backward(gy_device, moved["x"])))
    if op == "linear":
        y = F.linear(moved["x"], moved["w"], moved["b"])
        gx, gw, gb = F.linear_backward(gy_device, moved["x"], moved["w"])
        return [host(y)], dict(x=host(gx), w=host(gw), b=host(gb))
    loss = F.cross_entropy(moved["logits"], moved["target"], **moved_kwargs)
    grad = F.cross_entropy_backward(gy_device, moved["logits"], moved["target"], **moved_kwargs)
    return [np.asarray(host(loss))], dict(logits=host(grad))


def _describe(op, arrays, kwargs):
    shapes = {k: (None if a is None else f"{tuple(a.shape)} {a.dtype}{'' if a.flags.c_contiguous else ' strided'}")
              for k, a in arrays.items()}
    shown = {k: (f"array{v.shape}" if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
    return f"{op}({shapes}, {shown})"


def run(count: int = 1500, seed: int = 2026, device: str = "cpu", zero_d: bool = True) -> Report:
    """Draw ``count`` calls (cycling through the ops) and compare; see the module docstring."""
    import torch

    report = Report()
    rng = np.random.default_rng(seed)
    for index in range(count):
        op = OPS[index % len(OPS)]
        arrays, kwargs = DRAW[op](rng, zero_d)
        upstream_seed = int(rng.integers(0, 2**31))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                _torch_call(torch, op, arrays, kwargs, np.random.default_rng(upstream_seed), float64=False)
            except Exception:  # noqa: BLE001  PyTorch refuses it: not part of the measure
                report.torch_refused += 1
                continue
            expected, expected_grads, upstream = _torch_call(torch, op, arrays, kwargs,
                                                             np.random.default_rng(upstream_seed), float64=True)
        report.torch_accepted += 1
        report.per_op[op][1] += 1
        description = _describe(op, arrays, kwargs)
        try:
            outputs, grads = _numbacnn_call(op, arrays, kwargs, upstream, device)
        except (TypeError, ValueError) as error:
            report.refused += 1
            message = str(error)
            if REFUSAL_WORDING in message:
                reason = message.split(":", 1)[-1].strip()[:90]
                report.refusal_reasons[f"{op}: {reason}"] = report.refusal_reasons.get(f"{op}: {reason}", 0) + 1
            else:
                report.bad_refusals.append(f"{description}: {type(error).__name__}: {message}")
            continue
        report.accepted += 1
        report.per_op[op][0] += 1
        dtype = next(a.dtype for a in arrays.values() if a is not None and np.issubdtype(a.dtype, np.floating))
        try:
            for position, (got, want) in enumerate(zip(outputs, expected)):
                if np.issubdtype(want.dtype, np.integer):
                    assert np.array_equal(got, want) and got.dtype == np.int64, "indices differ"
                else:
                    assert_close(got, want, dtype, f"output {position}")
            for name, got in grads.items():
                key = name.split(" ")[0]
                if key in arrays and arrays[key] is None:
                    # no bias given: numbacnn's backward still returns the bias gradient (the
                    # sum of gy, one signature for every call); PyTorch has no tensor to give it
                    continue
                want = expected_grads.get(key)
                if want is None:  # PyTorch gives no gradient where the input did not matter (e.g. empty x)
                    want = np.zeros(np.shape(got))
                assert_close(got, want, dtype, f"gradient of {name}")
        except AssertionError as error:
            report.mismatches.append(f"{description}: {error}")
    return report


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 2026
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    result = run(count, seed, device, zero_d=device == "cpu")
    print(result.summary())
    for line in (result.mismatches + result.bad_refusals)[:20]:
        print(line)
