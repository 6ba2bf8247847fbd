"""Subcommands of the numbacnn command, one module each (see numbacnn.cli)."""

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where there is none to show:
    a ``None`` default means "decided at run time", which the help text says itself
    (argparse's own formatter printed "(default 3) (default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)
