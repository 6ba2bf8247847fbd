"""``numbacnn info --kernels`` names the kernels that really run: every kernel it lists
for a training step is called during one, and every conv/pool/fused kernel called is
listed (calls counted by wrapping the kernel functions where the code looks them up)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

import numbacnn.functional as F
from numbacnn.models import tiny_vgg
from numbacnn.report.kernels import format_kernel_choices, kernel_choices

# the kernel modules whose functions are counted (conv, pool, the fused wing's)
COUNTED = {
    "conv": ["conv2d_forward_general", "conv2d_backward_input_general", "conv2d_backward_weight_general",
             "conv2d_backward_bias"],
    "conv_rows": ["conv_rows_kernel", "correlation_kernel"],
    "conv_weight_grad": ["weight_gradient_kernel", "weight_bias_gradient_3x3_kernel",
                         "weight_gradient_winograd_kernel"],
    "bordered": ["copy_into_border_kernel", "max_pool2x2_relu_backward_kernel", "relu_mask_bordered_kernel",
                 "copy_interior_kernel", "relu_into_border_kernel"],
    "pool": ["max_pool2x2_forward", "max_pool2x2_backward", "max_pool2d_forward_general",
             "max_pool2d_backward_general"],
    "conv_small_maps": ["unpack_relu_pool_kernel", "unpack_masked_kernel"],
    "conv_gathered": ["gathered_forward_kernel", "gathered_weight_gradient_3x3_kernel"],
    "conv_lanes": ["forward_lanes_kernel", "grad_input_lanes_kernel", "weight_gradient_lanes_kernel"],
    "lanes_blocks": ["relu_pool_into_border", "pool_relu_backward_into_border"],
    "conv_fft": ["spectra", "products", "planes"],
    "norm": ["batch_norm_stats", "batch_norm_forward", "batch_norm_backward", "batch_norm_stats_planes",
             "batch_norm_relu_kernel", "batch_norm_relu_pool2x2_kernel", "batch_norm_backward_bordered_kernel",
             "batch_norm_pool2x2_backward_bordered_kernel"],
}


def _count_calls(monkeypatch) -> Counter:
    import importlib

    calls: Counter = Counter()
    package = importlib.import_module("numbacnn.kernels.cpu")
    for module_name, names in COUNTED.items():
        module = importlib.import_module(f"numbacnn.kernels.cpu.{module_name}")
        for name in names:
            original = getattr(module, name)

            def wrapper(*args, _original=original, _key=f"{module_name}.{name}", **kwargs):
                calls[_key] += 1
                return _original(*args, **kwargs)

            wrapper.__wrapped__ = original
            monkeypatch.setattr(module, name, wrapper)
            if getattr(package, name, None) is original:  # the dispatcher's way in: backend("cpu").name
                monkeypatch.setattr(package, name, wrapper)
    return calls


def _training_step(model, shape, dtype) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    labels = rng.integers(0, 10, shape[0])
    model.zero_grad()
    _, grad = F.softmax_cross_entropy(model(x), labels)
    model.backward(grad, input_grad=False)


@pytest.mark.parametrize("options, batch", [
    (dict(padding=1), 4),                       # the main job: the fused fast path everywhere
    (dict(padding=0), 4),                       # 3x3 without padding: gz bordered twice
    (dict(padding=1, stride=2), 4),             # strided blocks on the fast path (GATHERED, PHASES) beside stride 1
    (dict(padding=1, stride=2), 16),            # LANES: the strided blocks and the 4x4 maps, images in the lanes
    (dict(kernel_size=5, padding=2), 4),
    (dict(kernel_size=7, padding=3), 16),   # the 28x28 layer's forward and grad-input by FFT (batch >= 16)
    (dict(padding=1, batch_norm=True), 4),      # Conv -> BatchNorm -> ReLU (-> pool) blocks on the fast path
    (dict(padding=1, stride=2, batch_norm=True), 4),   # strided batch norm blocks: the strided conv into z
    (dict(padding=1, stride=2, batch_norm=True), 16),  # the same, LANES
], ids=["main-job", "padding0", "stride2", "stride2-batch16", "k5", "k7", "batch-norm", "batch-norm-stride2",
        "batch-norm-stride2-batch16"])
def test_listed_kernels_are_the_ones_that_run(options, batch, monkeypatch):
    dtype = np.float32
    shape = (batch, 1, 28, 28)
    model = tiny_vgg(1, 10, 28, dtype=dtype, seed=0, **options)
    choices = kernel_choices(model, shape, "cpu", dtype)
    listed = {c.kernel for c in choices if c.kernel.split(".")[0] in COUNTED}
    calls = _count_calls(monkeypatch)
    _training_step(model, shape, dtype)
    ran = {name for name, count in calls.items() if count}
    assert listed == ran, f"listed but not run: {listed - ran}; run but not listed: {ran - listed}"
    # the bias kernel as often as listed: a strided block whose grad-weight gathers its taps
    # sums its bias in that pass, and nothing sums it twice
    for kernel in ("conv.conv2d_backward_bias", "conv_gathered.gathered_weight_gradient_3x3_kernel"):
        assert sum(c.kernel == kernel for c in choices) == calls[kernel], kernel
    # LANES, one call per listed layer and pass (at batch 16, stride 2: the two 4x4 blocks
    # are lanes blocks, forward, grad-weight and grad-input each; the first strided layer
    # gathers its taps, forward and grad-weight, once each)
    lanes_listed = Counter(c.kernel for c in choices if c.kernel.startswith("conv_lanes."))
    lanes_ran = Counter({name: count for name, count in calls.items() if name.startswith("conv_lanes.") and count})
    assert lanes_listed == lanes_ran, f"LANES kernels listed {dict(lanes_listed)}, called {dict(lanes_ran)}"
    if options == dict(padding=1, stride=2) and batch == 16:
        assert lanes_ran == {"conv_lanes.weight_gradient_lanes_kernel": 2, "conv_lanes.forward_lanes_kernel": 2,
                             "conv_lanes.grad_input_lanes_kernel": 2}, lanes_ran
        gathered_ran = {name: count for name, count in calls.items() if name.startswith("conv_gathered.") and count}
        assert gathered_ran == {"conv_gathered.gathered_forward_kernel": 1,
                                "conv_gathered.gathered_weight_gradient_3x3_kernel": 1}, gathered_ran


@pytest.mark.parametrize("options", [dict(padding=1), dict(padding=1, batch_norm=True),
                                     dict(padding=1, stride=2, batch_norm=True)],
                         ids=["plain", "batch-norm", "batch-norm-stride2"])
def test_listed_eval_kernels_are_the_ones_that_run(options, monkeypatch):
    """Eval mode: a batch norm's running statistics are folded into its conv (a strided
    first layer's gathered forward then writes the ReLU itself)."""
    dtype = np.float32
    shape = (4, 1, 28, 28)
    model = tiny_vgg(1, 10, 28, dtype=dtype, seed=0, **options)
    model.eval()
    listed = {c.kernel for c in kernel_choices(model, shape, "cpu", dtype, training=False)
              if c.kernel.split(".")[0] in COUNTED}
    calls = _count_calls(monkeypatch)
    model(np.random.default_rng(0).standard_normal(shape).astype(dtype))
    ran = {name for name, count in calls.items() if count}
    assert listed == ran, f"listed but not run: {listed - ran}; run but not listed: {ran - listed}"


def test_listed_kernels_of_a_frozen_batch_norm_are_the_ones_that_run(monkeypatch):
    """Fine-tuning: the network trains with one BatchNorm2d in eval mode (frozen). Its
    block runs the composed ops on the running statistics (fused.fast_path's
    ``frozen_norm``), the other blocks stay fast, and the table says so."""
    from numbacnn import nn

    dtype = np.float32
    shape = (4, 1, 28, 28)
    model = tiny_vgg(1, 10, 28, dtype=dtype, seed=0, padding=1, batch_norm=True)
    frozen = next(layer for layer in model.modules() if isinstance(layer, nn.BatchNorm2d))
    frozen.eval()
    choices = kernel_choices(model, shape, "cpu", dtype)
    assert any("running statistics" in c.why for c in choices)
    listed = {c.kernel for c in choices if c.kernel.split(".")[0] in COUNTED}
    assert {"conv_rows.correlation_kernel", "conv_rows.conv_rows_kernel"} <= listed  # composed, and fast
    calls = _count_calls(monkeypatch)
    _training_step(model, shape, dtype)
    ran = {name for name, count in calls.items() if count}
    assert listed == ran, f"listed but not run: {listed - ran}; run but not listed: {ran - listed}"


def test_locations_point_at_the_kernels():
    choices = kernel_choices(tiny_vgg(1, 10, 28, padding=1, seed=0), (64, 1, 28, 28))
    for choice in choices:
        if choice.kernel == "-":
            continue
        path, line = choice.location.rsplit(":", 1)
        source = open(path).read().splitlines()[int(line) - 1]
        assert f"def {choice.kernel.split('.')[1]}(" in source, (choice, source)
    table = format_kernel_choices(choices)
    assert "conv_rows_kernel" in table and "numbacnn/kernels/cpu/conv_rows.py:" in table
    assert "MODE_RELU_POOL" in table and "conv_1_2 + relu_1_2 + max_pool_1" in table


def test_info_kernels_command_prints_the_table_and_refuses_bad_options():
    ok = subprocess.run([sys.executable, "-m", "numbacnn", "info", "--kernels", "--eval"], capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr
    assert "conv_rows_kernel" in ok.stdout and "grad-weight" not in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "numbacnn", "info", "--kernels", "--image-size", "2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("numbacnn info: error:")


def test_readme_table_is_what_info_kernels_prints():
    """The README's excerpt of ``numbacnn info --kernels`` (the main job) is the table the
    code prints now: file:line moves whenever a kernel file changes."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("```text\ntiny_vgg, input 64x1x28x28 float32 on cpu, a training step:\n")
    excerpt = readme[start:readme.index("```", start + 3)].splitlines()[2:]
    assert excerpt[-1] == "..."
    printed = format_kernel_choices(kernel_choices(tiny_vgg(1, 10, 28, padding=1, seed=0), (64, 1, 28, 28)))
    now = printed.splitlines()[:len(excerpt) - 1]
    stale = [f"  README: {old}\n  now:    {new}" for old, new in zip(excerpt, now) if old != new]
    assert not stale and len(now) == len(excerpt) - 1, (
        f"README.md's `numbacnn info --kernels` excerpt is stale ({len(stale)} lines): replace its table lines, "
        f"above the '...', with these {len(now)} lines of the table the code prints now:\n" + "\n".join(now)
        + "\nfirst differences:\n" + "\n".join(stale[:3]))
