"""The numbacnn command: info, help."""

import subprocess
import sys

from numbacnn.cli import main


def test_info_prints_versions_threads_and_devices(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for field in ("numbacnn", "numba", "threading layer", "threads", "cpu: yes", "cuda:"):
        assert field in out


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_console_script_module_runs():
    result = subprocess.run([sys.executable, "-m", "numbacnn.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "numbacnn" in result.stdout


# --------------------------------------------------------------------------- #
# the error framework: one line, exit codes, --debug
# --------------------------------------------------------------------------- #

import os  # noqa: E402

import pytest  # noqa: E402

from numbacnn.errors import (  # noqa: E402
    CheckpointError,
    DatasetError,
    DatasetNotFoundError,
    OutputError,
    ResourceError,
    UsageError,
    error_line,
    exit_code,
)


def run_cli(*args, env=None, cwd=None):
    """``python -m numbacnn ARGS`` in a subprocess; returns CompletedProcess (text)."""
    full_env = {k: v for k, v in os.environ.items() if k != "NUMBACNN_DEBUG"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "numbacnn", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=300)


def test_error_classes_are_the_builtin_ones_a_user_would_catch():
    assert issubclass(DatasetError, ValueError) and issubclass(CheckpointError, ValueError)
    assert issubclass(UsageError, ValueError) and issubclass(DatasetNotFoundError, FileNotFoundError)
    assert issubclass(OutputError, OSError) and issubclass(ResourceError, MemoryError)
    error = OutputError("cannot write", "runs/x", "choose another --out")
    assert str(error) == "cannot write, runs/x (choose another --out)"
    multi = DatasetError("first line\n  second   line", "f.gz")
    assert str(multi) == "first line second line, f.gz"


def test_error_line_for_builtin_exceptions():
    import errno

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/checkpoint.npz")
    assert error_line("train", full) == ("numbacnn train: error: no space left on device, out/checkpoint.npz "
                                         "(free some disk space or choose another --out, then run again)")
    assert exit_code(full) == 1
    assert exit_code(ValueError("x")) == 2 and exit_code(KeyboardInterrupt()) == 130
    assert "\n" not in error_line("train", ValueError("a\nb" + "c" * 5000))
    assert "--debug" in error_line("train", KeyError("model"))


def test_usage_error_is_one_line_naming_the_option():
    result = run_cli("train", "--seed", "x")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "numbacnn train: error: argument --seed: invalid int value: 'x' (see numbacnn train --help)"]


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_debug_shows_the_traceback(tmp_path, where):
    missing = tmp_path / "none.npz"
    plain = run_cli("evaluate", missing)
    assert plain.returncode == 2 and len(plain.stderr.splitlines()) == 1
    assert plain.stderr.startswith("numbacnn evaluate: error: ") and str(missing) in plain.stderr
    args = {"before": ("--debug", "evaluate", missing), "after": ("evaluate", missing, "--debug"),
            "env": ("evaluate", missing)}[where]
    debug = run_cli(*args, env={"NUMBACNN_DEBUG": "1"} if where == "env" else None)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "FileNotFoundError" in debug.stderr
