"""The layering is a rule the tests check: ``lint-imports`` (import-linter) with the
contracts in pyproject.toml's ``[tool.importlinter]``: no upward imports, no import
circles inside a package, the CPU and CUDA backends independent. Function-level
imports count, so a lazy import does not hide a circle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_contracts_hold():
    lint = shutil.which("lint-imports") or os.path.join(os.path.dirname(sys.executable), "lint-imports")
    assert os.path.exists(lint), "import-linter is in the test extra: pip install -e '.[test]'"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
