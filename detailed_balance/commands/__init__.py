"""Subcommands of the `detailed-balance` CLI (one module each; see cli.py)."""

from ._common import UserError

__all__ = ["UserError"]
