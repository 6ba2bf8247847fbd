"""numbacnn compiles its CPU kernels for whole AVX-512 vectors where the CPU has them
(``numbacnn/_environment.py``, "Vector width"; ``docs/architecture.md``): the rule, the
user's settings winning, Numba imported first, and the effect itself, 512-bit
multiply-adds in the machine code."""

import os
import subprocess
import sys

import pytest

from numbacnn._environment import CPU_CODE_VARIABLES, FULL_WIDTH_FEATURE, full_width_features

AVX512_HOST = {"avx512f": True, "avx2": True, "sse2": True, "avx512vnni": False}
OURS = "+avx2,+avx512f,-avx512vnni,+sse2," + FULL_WIDTH_FEATURE


def test_avx512_host_gets_its_features_and_full_width():
    features, width = full_width_features({}, AVX512_HOST, "rocketlake")
    assert features == OURS and width.startswith("512-bit")


@pytest.mark.parametrize("host, name, width", [
    ({"avx2": True, "sse2": True}, "znver3", "256-bit or narrower (no AVX-512)"),
    ({"avx512f": False, "avx2": True}, "skylake", "256-bit or narrower (no AVX-512)"),
    (AVX512_HOST, "nocona", "Numba's choice (it turns AVX off on CPUs named 'nocona')"),
])
def test_numba_chooses_without_avx512_or_where_it_turns_avx_off(host, name, width):
    assert full_width_features({}, host, name) == (None, width)


@pytest.mark.parametrize("environ", [{"NUMBA_CPU_FEATURES": "+avx2"}, {"NUMBA_CPU_FEATURES": ""},
                                     {"NUMBA_CPU_NAME": "skylake"}, {"NUMBA_ENABLE_AVX": "0"}])
def test_the_users_setting_wins_even_empty(environ):
    assert full_width_features(environ, AVX512_HOST, "rocketlake") == (None, f"as {next(iter(environ))} set here")


def test_a_child_process_keeps_what_numbacnn_set_in_its_parent():
    features, width = full_width_features({"NUMBA_CPU_FEATURES": OURS}, AVX512_HOST, "rocketlake")
    assert features is None and width.startswith("512-bit")


def _host_has_avx512() -> bool:
    import llvmlite.binding as llvm

    return bool(llvm.get_host_cpu_features().get("avx512f"))


PROBE = """
import numpy as np
{before}
import numbacnn  # sets the features before Numba compiles anything
from numba import njit
from numba.core import config
from numbacnn._environment import VECTOR_WIDTH

@njit(fastmath=True)  # not cached: the machine code is compiled here, where it can be read
def axpy(out, x, a):
    for i in range(out.shape[0]):
        out[i] = a * x[i] + out[i]

x = np.ones(1024, np.float32)
axpy(x.copy(), x, np.float32(3))
asm = next(iter(axpy.inspect_asm().values()))
fma_registers = [line.split()[-1] for line in asm.splitlines() if "vfmadd" in line]
print(str(config.CPU_FEATURES).endswith("-prefer-256-bit"), any("zmm" in r for r in fma_registers))
print(VECTOR_WIDTH[0])
"""
NUMBA_FIRST_COMPILED = """
import numba
numba.njit(lambda a: a + 1)(1)  # Numba compiles before numbacnn is imported
"""


def _probe(env: dict, before: str = "") -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.skipif(not _host_has_avx512(), reason="the host has no AVX-512")
def test_kernels_compile_to_512_bit_vectors_unless_the_user_or_numba_decided():
    """In a fresh process without the user's setting, a vectorised float32 loop's
    multiply-adds use zmm (512-bit) registers, also when Numba was imported (but had
    compiled nothing) first; ``numbacnn info``'s line says so. The user's setting is
    kept, and a Numba that compiled first is left as it is, and said to be."""
    env = {k: v for k, v in os.environ.items() if k not in CPU_CODE_VARIABLES}
    for before in ("", "import numba"):
        assert _probe(env, before) == ["True True", "512-bit (AVX-512; set NUMBA_CPU_FEATURES= for LLVM's choice)"]
    assert _probe(env, NUMBA_FIRST_COMPILED)[1] == "LLVM's choice (Numba compiled code before numbacnn was imported)"
    import llvmlite.binding as llvm

    env["NUMBA_CPU_FEATURES"] = llvm.get_host_cpu_features().flatten()  # the host's, LLVM's tuning untouched
    assert _probe(env) == ["False " + _probe(env)[0].split()[1], "as NUMBA_CPU_FEATURES set here"]
    info = subprocess.run([sys.executable, "-m", "numbacnn", "info"], capture_output=True, text=True,
                          env={k: v for k, v in env.items() if k != "NUMBA_CPU_FEATURES"}, timeout=300)
    assert "vectors         512-bit (AVX-512; set NUMBA_CPU_FEATURES= for LLVM's choice)" in info.stdout.splitlines()
