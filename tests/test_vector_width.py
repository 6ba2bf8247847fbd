"""numbacnn compiles its CPU kernels for whole AVX-512 vectors where the CPU has them
(``numbacnn/_environment.py``, "Vector width"): the rule, the user's setting winning,
and the effect itself, a 512-bit loop in the machine code."""

import os
import subprocess
import sys

import pytest

from numbacnn._environment import FULL_WIDTH_FEATURE, full_width_features

AVX512_HOST = {"avx512f": True, "avx2": True, "sse2": True, "avx512vnni": False}


def test_avx512_host_gets_its_features_and_full_width():
    features = full_width_features({}, AVX512_HOST)
    assert features.split(",") == ["+avx2", "+avx512f", "-avx512vnni", "+sse2", FULL_WIDTH_FEATURE]


@pytest.mark.parametrize("host", [{"avx2": True, "sse2": True}, {"avx512f": False, "avx2": True}])
def test_without_avx512_numba_chooses(host):
    assert full_width_features({}, host) is None


@pytest.mark.parametrize("variable", ["NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME"])
def test_the_users_setting_wins(variable):
    assert full_width_features({variable: "+avx2" if variable == "NUMBA_CPU_FEATURES" else "skylake"},
                               AVX512_HOST) is None


def _host_has_avx512() -> bool:
    import llvmlite.binding as llvm

    return bool(llvm.get_host_cpu_features().get("avx512f"))


PROBE = """
import numpy as np
import numbacnn  # sets the features before Numba compiles anything
from numba import njit
from numba.core import config

@njit(fastmath=True)  # not cached: the machine code is compiled here, where it can be read
def axpy(out, x, a):
    for i in range(out.shape[0]):
        out[i] = a * x[i] + out[i]

x = np.ones(1024, np.float32)
axpy(x.copy(), x, np.float32(3))
asm = next(iter(axpy.inspect_asm().values()))
fma_registers = [line.split()[-1] for line in asm.splitlines() if "vfmadd" in line]
print(config.CPU_FEATURES.endswith("-prefer-256-bit"), any("zmm" in r for r in fma_registers))
"""


@pytest.mark.skipif(not _host_has_avx512(), reason="the host has no AVX-512")
def test_kernels_compile_to_512_bit_vectors():
    """In a fresh process without the user's setting, a vectorised float32 loop's
    multiply-adds use zmm (512-bit) registers; with the host's features as they are
    (LLVM's prefer-256-bit tuning, where the CPU model has it) they may use ymm only."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME")}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]
    # and the user's setting wins: their features (here the host's, tuning untouched) are kept
    import llvmlite.binding as llvm

    env["NUMBA_CPU_FEATURES"] = llvm.get_host_cpu_features().flatten()
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "False"
