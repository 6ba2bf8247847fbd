"""Shared pieces of the asv benchmarks and ``compare_torch.py``.

* the Tiny VGG layer shapes (64x64x3 input, 10 filters, 3x3 kernels, padding 0);
* float64 NumPy references (padding 0, stride 1) used to check a result once
  in ``setup()`` before anything is timed;
* one Tiny VGG training step and one inference pass, built on
  ``numbacnn.models.tiny_vgg`` + ``numbacnn.optim.SGD`` when the training stack is
  importable, else on the functional API with a NumPy SGD update;
* FLOP counts, so a time can be printed as GFLOP/s.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import numbacnn.functional as F
from numbacnn.models import tiny_vgg
from numbacnn.optim import SGD

BATCHES = [1, 32, 128]
DTYPES = ["float32", "float64"]
RELATIVE_L2_TOLERANCE = {"float32": 2e-4, "float64": 1e-10}

# name -> (in_channels, out_channels, input height = width); kernel 3, padding 0, stride 1
CONV_SHAPES = {
    "conv_1_1": (3, 10, 64),
    "conv_1_2": (10, 10, 62),
    "conv_2_1": (10, 10, 30),
    "conv_2_2": (10, 10, 28),
}
KERNEL = 3
# name -> (channels, input height = width); 2x2 windows, stride 2
POOL_SHAPES = {
    "max_pool_1": (10, 60),
    "max_pool_2": (10, 26),
}
POOL = 2
IMAGE_SIZE, IN_CHANNELS, FILTERS, CLASSES = 64, 3, 10, 10
LINEAR_FEATURES = FILTERS * 13 * 13


# --------------------------------------------------------------------------- #
# inputs and references
# --------------------------------------------------------------------------- #


def conv_inputs(name: str, batch: int, dtype: str, seed: int = 0):
    """(x, w, b, gy) for the named Tiny VGG convolution."""
    in_channels, out_channels, size = CONV_SHAPES[name]
    rng = np.random.default_rng(seed)
    out_size = size - KERNEL + 1
    x = rng.standard_normal((batch, in_channels, size, size)).astype(dtype)
    w = (rng.standard_normal((out_channels, in_channels, KERNEL, KERNEL)) * 0.2).astype(dtype)
    b = rng.standard_normal(out_channels).astype(dtype)
    gy = rng.standard_normal((batch, out_channels, out_size, out_size)).astype(dtype)
    return x, w, b, gy


def pool_inputs(name: str, batch: int, dtype: str, seed: int = 0):
    """(x, gy) for the named Tiny VGG max pool."""
    channels, size = POOL_SHAPES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels, size, size)).astype(dtype)
    gy = rng.standard_normal((batch, channels, size // POOL, size // POOL)).astype(dtype)
    return x, gy


def reference_conv2d(x, w, b=None):
    """y (N, F, OH, OW) in float64; padding 0, stride 1."""
    windows = sliding_window_view(np.asarray(x, np.float64), w.shape[2:], axis=(2, 3))  # (N, C, OH, OW, KH, KW)
    y = np.einsum("nchwij,fcij->nfhw", windows, np.asarray(w, np.float64), optimize=True)
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def reference_conv2d_backward(gy, x, w):
    """(gx, gw, gb) in float64; padding 0, stride 1. gx is a full correlation of gy
    with the flipped, transposed kernel."""
    gy = np.asarray(gy, np.float64)
    w = np.asarray(w, np.float64)
    kh, kw = w.shape[2:]
    windows = sliding_window_view(np.asarray(x, np.float64), (kh, kw), axis=(2, 3))
    gw = np.einsum("nfhw,nchwij->fcij", gy, windows, optimize=True)
    padded = np.pad(gy, ((0, 0), (0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1)))
    gy_windows = sliding_window_view(padded, (kh, kw), axis=(2, 3))
    gx = np.einsum("nfhwij,fcij->nchw", gy_windows, w[:, :, ::-1, ::-1], optimize=True)
    return gx, gw, gy.sum(axis=(0, 2, 3))


def reference_max_pool2x2(x):
    """y (N, C, H//2, W//2) in float64 (2x2 windows, stride 2)."""
    n, c, h, w = x.shape
    blocks = np.asarray(x, np.float64)[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
    return blocks.max(axis=(3, 5))


def reference_max_pool2x2_backward(gy, x):
    """gx in float64: each window's gradient goes to its first maximum."""
    n, c, h, w = x.shape
    blocks = np.asarray(x, np.float64).reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    flat = blocks.reshape(n, c, h // 2, w // 2, 4)
    first_max = np.argmax(flat, axis=-1)  # argmax returns the first maximum
    gx_blocks = np.zeros_like(flat)
    np.put_along_axis(gx_blocks, first_max[..., None], np.asarray(gy, np.float64)[..., None], axis=-1)
    return gx_blocks.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


def check_close(actual, expected, dtype: str, what: str) -> None:
    """Raise if ``actual`` is not within the accuracy bar of the float64 ``expected``."""
    actual = np.asarray(actual, np.float64)
    error = np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-300)
    if not error <= RELATIVE_L2_TOLERANCE[dtype]:
        raise AssertionError(f"{what}: relative L2 error {error:.3g} > {RELATIVE_L2_TOLERANCE[dtype]} ({dtype})")


# --------------------------------------------------------------------------- #
# FLOP counts
# --------------------------------------------------------------------------- #


def conv_forward_flops(name: str, batch: int) -> int:
    """2 * multiply-adds of one forward convolution."""
    in_channels, out_channels, size = CONV_SHAPES[name]
    out_size = size - KERNEL + 1
    return 2 * batch * out_channels * out_size * out_size * in_channels * KERNEL * KERNEL


def conv_backward_flops(name: str, batch: int, input_grad: bool = True) -> int:
    """grad-weight plus (when asked) grad-input: each as many FLOPs as the forward."""
    return conv_forward_flops(name, batch) * (2 if input_grad else 1)


def tiny_vgg_conv_layers(in_channels: int, image_size: int, padding: int) -> list[tuple[str, int, int, int, int]]:
    """(name, in_channels, out_channels, input size, output size) of Tiny VGG's four
    3x3 convolutions (stride 1) for a square input, and the size after the last pool
    as the last entry's name ``"final"``."""
    rows, channels, size = [], in_channels, image_size
    for index, name in enumerate(("conv_1_1", "conv_1_2", "conv_2_1", "conv_2_2")):
        out = size + 2 * padding - KERNEL + 1
        rows.append((name, channels, FILTERS, size, out))
        channels, size = FILTERS, out // POOL if index % 2 else out
    rows.append(("final", FILTERS, FILTERS, size, size))
    return rows


def tiny_vgg_step_flops(batch: int, in_channels: int = IN_CHANNELS, image_size: int = IMAGE_SIZE,
                        padding: int = 0) -> int:
    """FLOPs of one training step at any input: the four convolutions forward,
    grad-weight and (all but the first) grad-input, each 2 * multiply-adds, and the
    linear layer's three matrix products; ReLU, pooling, loss and SGD are left out.
    426 MFLOP for the main job (1x28x28, batch 64, padding 1), 1,010 for 3x64x64
    batch 32 padding 0."""
    *convs, (_, _, _, final, _) = tiny_vgg_conv_layers(in_channels, image_size, padding)
    forward = [2 * batch * cout * cin * KERNEL * KERNEL * out * out for _, cin, cout, _, out in convs]
    linear = 2 * batch * FILTERS * final * final * CLASSES
    return 3 * sum(forward) - forward[0] + 3 * linear


def training_step_flops(batch: int) -> int:
    """:func:`tiny_vgg_step_flops` of the 64x64x3, padding-0 step. (Until issue 10 this
    counted the forward convolutions twice, 4x instead of 3x, which overstated the
    step's GFLOP/s in older RESULTS.md tables by ~35%.)"""
    return tiny_vgg_step_flops(batch)


# --------------------------------------------------------------------------- #
# a whole Tiny VGG training step
# --------------------------------------------------------------------------- #


class TinyVGGStep:
    """One Tiny VGG training step (forward, loss, backward, SGD update) and one
    inference pass on a fixed batch of images (64x64x3, padding 0 by default; the main
    job is ``in_channels=1, image_size=28, padding=1``), with
    ``numbacnn.models.tiny_vgg`` and ``numbacnn.optim.SGD``."""

    def __init__(self, batch: int, dtype: str = "float32", lr: float = 0.01, seed: int = 0,
                 in_channels: int = IN_CHANNELS, image_size: int = IMAGE_SIZE, padding: int = 0,
                 **model_options) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((batch, in_channels, image_size, image_size)).astype(dtype)
        self.labels = rng.integers(0, CLASSES, batch).astype(np.int64)
        # model_options: tiny_vgg's kernel_size, stride, batch_norm, dropout (numbacnn train's variants)
        self.model = tiny_vgg(in_channels, CLASSES, image_size, FILTERS, padding=padding, dtype=np.dtype(dtype),
                              seed=seed, **model_options)
        self.optimizer = SGD(self.model.parameters(), lr=lr)

    def step(self) -> float:
        """One training step; returns the loss."""
        if not self.model.training:  # after infer(); PyTorch's step, beside it, sets no mode either
            self.model.train()
        logits = self.model(self.x)
        loss, grad = F.softmax_cross_entropy(logits, self.labels)
        self.optimizer.zero_grad()
        self.model.backward(grad, input_grad=False)
        self.optimizer.step()
        return loss

    def infer(self):
        """Logits (N, 10) of the fixed batch, no caching for backward."""
        self.model.eval()
        return self.model(self.x)


def places_of(module, name: str) -> list:
    """Where a function is looked up at call time: its module, and the module's package
    where that re-exports the same function (``numbacnn.functional`` and the backend
    packages do: ``backend("cpu").linear_forward`` is ``kernels.cpu.linear``'s)."""
    import importlib

    package = importlib.import_module(module.__name__.rsplit(".", 1)[0])
    return [module] + ([package] if getattr(package, name, None) is getattr(module, name) else [])


def alternate_in_steps(step: TinyVGGStep, versions: dict, places: dict, blocks: int, steps: int,
                       warm: int = 0) -> dict:
    """Versions of some functions alternating in whole training steps, in one process.

    ``versions``: {label: {name: function}}; ``places``: {name: [modules]} where each
    name is swapped (:func:`places_of`). Each version is first run ``warm`` steps
    (compiling it), then, ``blocks`` times in turn, 3 untimed steps and ``steps`` timed
    ones. Returns {label: [ms per step of each block]}. The caller puts the originals
    back (and clears ``fused.fast_path``'s cache, as each switch here does)."""
    import time

    from numbacnn.fused import fast_path

    def use(functions):
        for name, function in functions.items():
            for place in places[name]:
                setattr(place, name, function)
        fast_path.cache_clear()  # the fused wing's rule remembers its answers: a swapped rule or limit must be asked again

    for functions in versions.values():
        use(functions)
        for _ in range(warm):
            step.step()
    times: dict = {label: [] for label in versions}
    for _ in range(blocks):
        for label, functions in versions.items():
            use(functions)
            for _ in range(3):
                step.step()
            start = time.perf_counter()
            for _ in range(steps):
                step.step()
            times[label].append((time.perf_counter() - start) / steps * 1e3)
    return times
