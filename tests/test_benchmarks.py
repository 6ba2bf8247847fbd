"""The comparison in ``benchmarks/compare_torch.py`` measures like with like.

What must hold for its ratios to mean anything: PyTorch's Tiny VGG has numbacnn's
initial weights and computes the same step (same logits, loss and gradients, in
every PyTorch variant the script times); the FLOP counts that turn times into
GFLOP/s are right (an independent count from the layer shapes); and the per-kernel
instrumentation times each call of a real step once and leaves numbacnn unpatched.
"""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn.functional as F
import numbacnn.functional.fused as FF
import numbacnn.fused.bordered_ops as BO
from benchmarks import compare_torch as ct
from benchmarks.common import TinyVGGStep, tiny_vgg_step_flops, training_step_flops
from tests.helpers import assert_close


def _independent_step_flops(batch, channels, size, padding):
    """2 * multiply-adds, counted output element by output element from the shapes."""
    total, first = 0, True
    for stage in range(2):
        for _ in range(2):
            size = size + 2 * padding - 3 + 1
            forward = batch * 10 * size * size * (channels * 9) * 2
            total += forward * (2 if first else 3)  # forward + grad-weight (+ grad-input)
            channels, first = 10, False
        size //= 2
    return total + 3 * (2 * batch * 10 * size * size * 10)


@pytest.mark.parametrize("batch, channels, size, padding", [(64, 1, 28, 1), (32, 3, 64, 0), (5, 2, 17, 1)])
def test_step_flops_match_an_independent_count(batch, channels, size, padding):
    assert tiny_vgg_step_flops(batch, channels, size, padding) == _independent_step_flops(batch, channels, size,
                                                                                           padding)
    assert training_step_flops(batch) == _independent_step_flops(batch, 3, 64, 0)


def test_issue_figures():
    # issue 10: "the steps are 426 and 1,010 MFLOP"
    assert round(tiny_vgg_step_flops(64, 1, 28, 1) / 1e6) == 426
    assert round(tiny_vgg_step_flops(32, 3, 64, 0) / 1e6) == 1010


@pytest.mark.parametrize("variant", ["NCHW", "channels_last"])
def test_torch_step_is_numbacnns_step(variant):
    torch = pytest.importorskip("torch")
    ours = TinyVGGStep(4, "float64", in_channels=1, image_size=12, padding=1)
    model = ct.torch_tiny_vgg_like(torch, ours, padding=1)
    x = torch.from_numpy(ours.x.copy())
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(ours.labels))
    loss.backward()

    ours.model.train()
    our_logits = ours.model(ours.x)
    our_loss, grad = F.softmax_cross_entropy(our_logits, ours.labels)
    ours.optimizer.zero_grad()
    ours.model.backward(grad, input_grad=False)
    assert_close(our_logits, logits.detach().numpy(), np.float64, "logits")
    assert abs(our_loss - loss.item()) <= 1e-10 * abs(loss.item())
    for mine, theirs in zip(ours.model.parameters(), model.parameters()):
        assert_close(mine.grad, theirs.grad.numpy(), np.float64, "parameter gradient")


def test_torch_step_function_trains():
    torch = pytest.importorskip("torch")
    ours = TinyVGGStep(4, "float32", in_channels=1, image_size=12, padding=1)
    step = ct.torch_step(torch, ours, 1, "channels_last")
    losses = [step() for _ in range(5)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]  # same batch: the loss must fall


def test_kernel_table_times_each_call_once_and_unpatches():
    before = {name: getattr(FF, name) for name in dir(FF) if not name.startswith("_")}
    before_bo = {name: getattr(BO, name) for name in dir(BO) if not name.startswith("_")}
    before_f = {name: getattr(F, name) for name in ("linear", "linear_backward", "softmax_cross_entropy")}
    ours = TinyVGGStep(4, "float32", in_channels=1, image_size=12, padding=1)
    ours.step()
    rows, step_seconds = ct.kernel_table(ours, 3)
    labels = [row[0] for row in rows]
    # 4 conv forwards, 4 conv backwards, linear both ways, the loss and SGD: each once per step
    assert sum("forward + ReLU" in label for label in labels) == 4
    assert sum("grad-weight + grad-bias" in label for label in labels) == 4
    assert sum(label.startswith("linear") for label in labels) == 2
    assert "SGD update" in labels and "softmax cross-entropy (loss + gradient)" in labels
    assert 0 < sum(row[1] for row in rows) <= step_seconds
    conv = [row for row in rows if row[0].startswith("conv 1->10 12x12: forward")][0]
    assert conv[2] == 2 * 4 * 10 * 1 * 9 * 12 * 12 and conv[3] == "GFLOP/s"
    assert {name: getattr(FF, name) for name in before} == before
    assert {name: getattr(BO, name) for name in before_bo} == before_bo
    assert {name: getattr(F, name) for name in before_f} == before_f
    assert "step" not in vars(ours.optimizer)


def test_alternating_blocks_runs_each_function_in_turn():
    calls = []
    samples = ct.alternating_blocks({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 0.0)
    assert [len(v) for v in samples.values()] == [3, 3]
    assert calls[6:] == ["a", "b"] * 3  # after three timed calls each: one call per block (0 s blocks)


def test_compile_log_summary_skips_partial_lines_and_refuses_a_missing_log(tmp_path):
    """benchmarks/compile_log.py: a worker killed mid-write leaves a partial last line,
    which is skipped with a note (the other records still count); a folder without a
    log is refused in one line, not summarised as "0 compiles"."""
    import subprocess
    import sys

    log = tmp_path / "gw0.jsonl"
    log.write_text('{"seconds": 1.5, "test": "tests/test_a.py::test_b", "kernel": "conv_rows", "args": "f4"}\n'
                   '{"seconds": 2.5, "test": "tests/test_a.py::test_c", "kernel": "conv_rows", "args": "f8"}\n'
                   '{"seconds": 4, "test": "tests/te\n')
    script = "benchmarks/compile_log.py"
    result = subprocess.run([sys.executable, script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"compile_log.py: skipped {log}:3, not a compile record\n"
    assert "2 compiles, 4 s" in result.stdout
    assert "     4.0 s     2  tests/test_a.py" in result.stdout  # the file table sums both records
    missing = tmp_path / "none"
    result = subprocess.run([sys.executable, script, str(missing)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [(
        f"compile_log.py: error: no compile log (*.jsonl) in {missing} (run the tests with "
        f"NUMBACNN_COMPILE_LOG={missing} first)")]


def test_variant_names_choose_variants_in_order_with_plain_where_asked():
    names = [ct.variant_name(label) for label, _ in ct.VARIANTS]
    assert names == ["plain", "batch-norm", "stride-2", "kernel-size-5", "kernel-size-7"]
    assert ct.chosen_variants(None) == ct.VARIANTS
    assert [label for label, _ in ct.chosen_variants(["kernel-size-7", "stride-2"])] == [
        "--stride 2", "--kernel-size 7 --padding 3"]
    assert [label for label, _ in ct.chosen_variants(["stride-2"], with_plain=True)] == [
        "plain (padding 1)", "--stride 2"]


def test_variant_steps_of_each_path_keep_their_own_layout_and_numbacnns_loss():
    """Each PyTorch path of the variants table has its own network: building the
    channels_last one (``Module.to`` converts in place) leaves the NCHW one's weights
    NCHW, as it did not when they shared a model (batch norm's NCHW step then ran on
    channels_last weights, 1.5-2.3x slower). Both start from numbacnn's loss."""
    torch = pytest.importorskip("torch")
    ours = TinyVGGStep(4, "float32", in_channels=1, image_size=12, padding=1, batch_norm=True)
    nchw_step, nchw_model = ct.torch_variant_step(torch, ours, "NCHW")
    last_step, last_model = ct.torch_variant_step(torch, ours, "channels_last")
    assert nchw_model is not last_model
    convs = [m for m in nchw_model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous() for m in convs)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in last_model.modules() if isinstance(m, torch.nn.Conv2d))
    ours.model.train()
    our_loss, _ = F.softmax_cross_entropy(ours.model(ours.x), ours.labels)
    for step in (nchw_step, last_step):
        assert abs(step() - our_loss) <= 1e-5 * abs(our_loss)


def test_compile_log_summary_refuses_an_unreadable_log_in_one_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "gw0.jsonl").mkdir()  # a folder where a log file should be
    result = subprocess.run([sys.executable, "benchmarks/compile_log.py", str(tmp_path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"compile_log.py: error: cannot read {tmp_path / 'gw0.jsonl'}: Is a directory (remove it, or rerun the "
        f"tests with a fresh NUMBACNN_COMPILE_LOG folder)"]
