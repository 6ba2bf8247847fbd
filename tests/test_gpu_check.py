"""benchmarks/gpu_check.sh's plumbing, under Numba's CUDA simulator with tiny sizes
(``--tiny``): every section runs and lands in the report. The figures themselves
mean nothing here; on a GPU the same script writes the real table."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import CUDA_SIMULATED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# its sitecustomize gives the script's Python processes (the report, the training epoch,
# the inner pytest) what conftest.py gives this one under the simulator: the short GIL
# switch interval (Python part 70 s -> 13 s) and the locked shared arrays
SIMULATOR_SITE = os.path.join(ROOT, "tests", "simulator_site")


@pytest.mark.slow
@pytest.mark.skipif(not CUDA_SIMULATED, reason="the --tiny plumbing check runs under the simulator")
def test_gpu_check_tiny_writes_every_section(tmp_path):
    out = tmp_path / "gpu_check.md"
    result = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--tiny", "--out", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "PYTHON": sys.executable,
                                 "PYTHONPATH": os.pathsep.join(filter(None, [SIMULATOR_SITE,
                                                                             os.environ.get("PYTHONPATH")]))})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    for heading in ("- GPU: none: Numba's CUDA simulator", "- driver:", "- numba-cuda:", "- torch:",
                    "- load average:", "## (a) test suite against the GPU", "exit status 0: 1 passed",
                    "## (b) milliseconds per call", "## (c) one epoch of the main job", "- status: ok"):
        assert heading in text, heading
    rows = [line for line in text.splitlines() if line.startswith("| 3x8x8 |") or line.startswith("| 1x8x8 |")]
    cases = {row.split("|")[3].strip() for row in rows}
    assert cases == {"training step", "conv2d forward", "conv2d backward", "relu", "max_pool2d 2x2", "linear",
                     "softmax cross-entropy"}
    assert len(rows) == 14
    for row in rows:
        assert float(row.split("|")[4]) > 0  # a numbacnn time in every row


def test_gpu_check_refuses_an_unknown_argument():
    result = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--bogus"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "unknown argument --bogus" in result.stderr


@pytest.mark.skipif(bool(__import__("shutil").which("nvidia-smi")), reason="checks the machine without a GPU")
def test_gpu_check_without_a_gpu_is_one_line_and_writes_no_report(tmp_path):
    """Without a GPU it printed tracebacks and 'report in gpu_check.md' without one (issue 21)."""
    out = tmp_path / "gpu_check.md"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120, env={**env, "PYTHON": sys.executable})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("gpu_check.sh: error: ") and f"no report written to {out}" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr and not out.exists()
