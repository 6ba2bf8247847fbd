"""Every CUDA kernel compiled by NVIDIA's compilers (NVVM, ptxas) for sm_80 and sm_90,
on the signatures the library launches, and every launch checked against the card.

How (see ``tests/cuda_compile_check.py``): the library's own paths run
here under the simulator while ``recording`` notes each backend call (a Tiny VGG
training step in float32 and float64, a general convolution with stride, dilation
and groups, and the other ops once each); then one process per compute capability,
without the simulator and without a GPU or driver, replays the calls with the GPU's
launch constants, compiles each (kernel, signature) with ``compile_ptx`` and reads
``ptxas -v``: registers x threads per block, static shared memory, spills, block
and grid sizes, and at least two resident blocks per SM for the tiled forward.

Skipped, saying why, when libnvvm or ptxas is missing (they come with
``numba-cuda[cu12]``, in the ``test`` extra).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import numbacnn
import numbacnn.functional as F
from helpers import CUDA_SIMULATED, available_devices

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("cuda" not in available_devices() or not CUDA_SIMULATED,
                       reason="records the launches under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"),
]

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
COMPILE_CHECK = os.path.join(TESTS, "cuda_compile_check.py")  # a CI tool, outside the runtime package


def _compiler_environment() -> dict:
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)  # the compilers live in the real CUDA target
    env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS, env.get("PYTHONPATH", "")])
    return env


def _compilers_missing() -> str | None:
    probe = "from cuda_compile_check import compilers_missing as m; print(m() or '')"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=_compiler_environment())
    if result.returncode != 0:
        return f"numba's CUDA target does not import without the simulator: {result.stderr.strip()[-300:]}"
    return result.stdout.strip() or None


@pytest.fixture(scope="module")
def compilers() -> None:
    missing = _compilers_missing()
    if missing:
        pytest.skip(f"NVIDIA compilers not installed ({missing}); pip install \"numba-cuda[cu12]\"")


def _record_library_paths() -> list:
    """Backend calls of the library's own paths (under the simulator, tiny sizes: only
    the argument types and the launch constants matter for compiling)."""
    from cuda_compile_check import recording
    from numbacnn.models import tiny_vgg
    from numbacnn.optim import SGD, Adam

    rng = np.random.default_rng(0)
    calls: list = []
    with recording(calls):
        for dtype in (np.float32, np.float64):
            # Tiny VGG training steps: conv (tiled), relu, pool, flatten, linear, loss, SGD and Adam
            model = tiny_vgg(in_channels=3, num_classes=3, image_size=8, filters=2, padding=1, dtype=dtype,
                             seed=0).to("cuda")
            for optimizer in (SGD(model.parameters(), lr=0.1, momentum=0.9), Adam(model.parameters(), lr=1e-3)):
                x = numbacnn.to_device(rng.standard_normal((2, 3, 8, 8)).astype(dtype), "cuda")
                labels = numbacnn.to_device(np.array([0, 2]), "cuda")
                optimizer.zero_grad()
                for _ in range(2):  # the second backward accumulates into .grad
                    _, grad = F.softmax_cross_entropy(model(x), labels)
                    model.backward(grad, input_grad=False)
                optimizer.step()
                # the train loop's way: per-row losses and metrics kept on the device
                metrics = F.RunningMetrics("cuda")
                logits = model(x)
                losses, grad = F.softmax_cross_entropy_rows(logits, labels, check_labels=False)
                metrics.add(losses, logits, labels)
            # a general convolution: stride 3, dilation, groups (the direct kernel)
            x = numbacnn.to_device(rng.standard_normal((1, 4, 9, 9)).astype(dtype), "cuda")
            w = numbacnn.to_device(rng.standard_normal((4, 2, 3, 2)).astype(dtype), "cuda")
            y = F.conv2d(x, w, stride=3, padding=1, dilation=(2, 1), groups=2)
            F.conv2d_backward(y, x, w, stride=3, padding=1, dilation=(2, 1), groups=2)
            # the other ops, once each
            F.max_pool2d_backward(F.max_pool2d(x, 2), x, 2)
            pooled, indices = F.max_pool2d(x, 2, return_indices=True)
            F.max_pool2d_backward(pooled, x, 2, indices=indices)
            unpooled = F.max_unpool2d(pooled, indices, 2)
            F.max_unpool2d_backward(unpooled, indices)
            logits = numbacnn.to_device(rng.standard_normal((3, 4)).astype(dtype), "cuda")
            target = numbacnn.to_device(np.array([0, 3, 1]), "cuda")
            probs = numbacnn.to_device(np.full((3, 4), 0.25, dtype), "cuda")
            weight = numbacnn.to_device(np.ones(4, dtype), "cuda")
            for forward, backward in ((F.softmax, F.softmax_backward), (F.log_softmax, F.log_softmax_backward)):
                out = forward(logits, 1)
                backward(out, out, 1)
            F.cross_entropy(logits, target, weight=weight, label_smoothing=0.1)
            F.cross_entropy_backward(1.0, logits, target, weight=weight, label_smoothing=0.1)
            F.cross_entropy(logits, probs)
            F.cross_entropy_backward(1.0, logits, probs)
            log_probs = F.log_softmax(logits, 1)
            F.nll_loss(log_probs, target)
            F.nll_loss_backward(1.0, log_probs, target)
            # issue 11's new ops: average / adaptive pooling, batch norm, leaky ReLU, dropout
            avg = F.avg_pool2d(x, 2, ceil_mode=True)
            F.avg_pool2d_backward(avg, x.shape, 2, ceil_mode=True)
            F.adaptive_avg_pool2d_backward(F.adaptive_avg_pool2d(x, 1), x.shape)
            peak, where = F.adaptive_max_pool2d(x, (2, 3), return_indices=True)
            F.adaptive_max_pool2d_backward(peak, indices=where, input_shape=x.shape)
            running_mean = numbacnn.to_device(np.zeros(4, dtype), "cuda")
            running_var = numbacnn.to_device(np.ones(4, dtype), "cuda")
            scale = numbacnn.to_device(np.ones(4, dtype), "cuda")
            shift = numbacnn.to_device(np.zeros(4, dtype), "cuda")
            for training in (True, False):
                normed = F.batch_norm(x, running_mean, running_var, scale, shift, training=training)
                F.batch_norm_backward(normed, x, running_mean, running_var, scale, training=training)
            F.leaky_relu_backward(F.leaky_relu(x, 0.1), x, 0.1)
            F.dropout(x, 0.5, training=True, seed=0)
    return calls


@pytest.fixture(scope="module")
def records(tmp_path_factory, compilers) -> str:
    path = tmp_path_factory.mktemp("cuda_compile") / "calls.json"
    path.write_text(json.dumps(_record_library_paths()))
    return str(path)


def _check(records: str, cc: str, *options: str, out: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, COMPILE_CHECK, records, "--cc", cc, *options]
    if out:
        command += ["--out", out]
    return subprocess.run(command, capture_output=True, text=True, env=_compiler_environment(), timeout=600)


@pytest.mark.parametrize("cc", ["8.0", "9.0"])
def test_every_kernel_compiles_and_every_launch_fits(records, cc, tmp_path):
    out = tmp_path / "result.json"
    result = _check(records, cc, "--require-all", out=str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    rows = report["kernels"]
    kernels = {row["kernel"] for row in rows}
    # float32 and float64 of the Tiny VGG path and the general conv were all compiled
    for name in ("conv2d_forward_tiled_kernel", "conv2d_forward_direct_kernel", "conv2d_backward_weight_kernel",
                 "softmax_cross_entropy_kernel", "max_pool2d_backward_kernel", "linear_forward_kernel"):
        signatures = [row["signature"] for row in rows if row["kernel"].endswith(":" + name)]
        assert any("float32" in s for s in signatures) and any("float64" in s for s in signatures), name
    assert len(kernels) >= 17
    for row in rows:
        assert row["spill_stores"] == 0 and row["spill_loads"] == 0, row
        assert row["registers"] * row["threads"] <= 65536, row
        assert row["shared_bytes"] <= 48 * 1024, row
        if row["kernel"].endswith(":conv2d_forward_tiled_kernel"):
            assert row["blocks_per_sm"] >= 2, row  # issue 12 item 3


def test_an_oversized_tile_fails_the_check(records):
    """A 40 x 40 tile is 1600 threads per block (more than 1024) and an 85 x 85 patch ((40 - 1) * 2 + 7)
    (56 KB of float64 shared memory, more than 48 KB): the check must say so."""
    result = _check(records, "9.0", "--set", "numbacnn.kernels.cuda.conv.TILE=40",
                    "--set", "numbacnn.kernels.cuda.conv.PATCH=85", "--only", "conv2d_forward_tiled")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "conv2d_forward_tiled_kernel" in result.stdout
    assert "1600 threads" in result.stdout
    assert "shared" in result.stdout  # ptxas refuses 85*85*8 + 8*49*8 bytes of shared data


def test_a_kernel_that_does_not_compile_fails_the_check(records):
    extra = json.dumps({"kernel": "cuda_broken_kernels:untypeable_kernel",
                        "argtypes": ["float32[::1]", "float32[::1]"], "block": [32, 1, 1]})
    result = _check(records, "8.0", "--extra", extra, "--only", "cuda_broken_kernels")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cuda_broken_kernels:untypeable_kernel" in result.stdout and "does not compile" in result.stdout


def test_too_many_registers_for_the_block_fails_the_check(records):
    """A kernel whose registers x threads exceed the SM's 65536 (a launch of 1024
    threads of a kernel that needs more than 64 registers)."""
    extra = json.dumps({"kernel": "cuda_broken_kernels:register_hungry_kernel",
                        "argtypes": ["float64[::1]", "float64[::1]"], "block": [1024, 1, 1]})
    result = _check(records, "9.0", "--extra", extra, "--only", "cuda_broken_kernels")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "register_hungry_kernel" in result.stdout and "registers x 1024 threads" in result.stdout


def test_missing_compilers_are_named_in_the_skip_reason():
    """The reason the compile tests skip on a machine without the NVIDIA wheels."""
    probe = ("import cuda_compile_check as c; c.find_ptxas = lambda: None; "
             "print(c.compilers_missing())")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=_compiler_environment())
    assert result.returncode == 0, result.stderr
    reason = result.stdout.strip()
    assert reason.startswith("ptxas was not found") or reason.startswith("libnvvm is not usable"), reason
