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
