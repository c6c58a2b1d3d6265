"""Subcommands of the `detailed-balance` CLI (one module each; see cli.py)."""
