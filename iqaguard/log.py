"""Logging for the project's command-line entry points: library code logs, commands show it."""

from __future__ import annotations

import logging
import sys


def cli_logging(level: int = logging.INFO) -> None:
    """Show the library's log records as plain lines on stdout (what its messages looked like as prints)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("iqaguard")
    if not any(getattr(h, "_iqaguard_cli", False) for h in root.handlers):
        handler._iqaguard_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
