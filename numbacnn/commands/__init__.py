"""Subcommands of the numbacnn command, one module each (see numbacnn.cli)."""
