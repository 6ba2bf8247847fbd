"""The ``numbacnn`` command.

Each subcommand is one module in ``numbacnn/commands/`` that defines
``register(subparsers)``: it adds its parser and sets ``func`` (called with the
parsed arguments, returning an exit code). Adding a command means adding a module.

Errors: a command raises (``numbacnn.errors.NumbacnnError``, ``ValueError``,
``OSError``, ...) and :func:`main` is the one place that turns the exception into
one stderr line ``numbacnn <command>: error: <what>, <where> (<what to do>)`` and
an exit status (2: input refused, 1: failed while working, 130: Ctrl-C; see
:mod:`numbacnn.errors`). ``--debug`` (before or after the command) or
``NUMBACNN_DEBUG=1`` re-raises instead, with the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from typing import NoReturn

import numbacnn.commands
from numbacnn import __version__
from numbacnn.errors import error_line, exit_code, one_line

DEBUG_ENV = "NUMBACNN_DEBUG"


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: message (see prog --help)``)
    instead of the usage block followed by the message; the exit status stays 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _walk_parsers(parser: argparse.ArgumentParser):
    """``parser`` and every subparser below it, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from _walk_parsers(sub)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand found in numbacnn.commands."""
    parser = OneLineArgumentParser(
        prog="numbacnn",
        description="Readable Numba CNN kernels: train, evaluate and explain Tiny VGG.",
    )
    parser.add_argument("--version", action="version", version=f"numbacnn {__version__}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help=f"show the Python traceback of an error (also: {DEBUG_ENV}=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(numbacnn.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"numbacnn.commands.{module_info.name}")
        module.register(subparsers)
    for sub in list(_walk_parsers(parser))[1:]:
        # the deepest parser's default wins, so error lines name "explain report", not "explain"
        sub.set_defaults(_prog=sub.prog[len("numbacnn "):])
        if not any("--debug" in a.option_strings for a in sub._actions):
            # SUPPRESS: a subparser default would otherwise reset a --debug given before the command
            sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the Python traceback of an error")
    return parser


def _debug_requested(args: argparse.Namespace | None) -> bool:
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        return True
    return bool(args is not None and getattr(args, "debug", False))


def _refuse_bad_environment() -> None:
    """A bad setting of a variable numbacnn or Numba reads (found at import by
    :mod:`numbacnn._environment`), refused before any work, naming the variable."""
    from numbacnn._environment import ENVIRONMENT_PROBLEMS
    from numbacnn.errors import UsageError

    for variable, (_, what, todo) in ENVIRONMENT_PROBLEMS.items():
        raise UsageError(what, f"environment variable {variable}", todo)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``numbacnn`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        _refuse_bad_environment()
        return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:
        if _debug_requested(args):
            raise
        print(error_line(getattr(args, "_prog", args.command), exc), file=sys.stderr, flush=True)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
