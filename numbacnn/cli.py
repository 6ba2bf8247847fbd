"""The ``numbacnn`` command.

Each subcommand is one module in ``numbacnn/commands/`` that defines
``register(subparsers)``: it adds its parser and sets ``func`` (called with the
parsed arguments, returning an exit code). Adding a command means adding a module.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import numbacnn.commands
from numbacnn import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand found in numbacnn.commands."""
    parser = argparse.ArgumentParser(
        prog="numbacnn",
        description="Readable Numba CNN kernels: train, evaluate and explain Tiny VGG.",
    )
    parser.add_argument("--version", action="version", version=f"numbacnn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(numbacnn.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"numbacnn.commands.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``numbacnn`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
