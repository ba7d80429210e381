"""A one-line progress counter for the CLI on a terminal (the client needs no progress-bar library)."""

from __future__ import annotations

import sys
from typing import TextIO

_CLEAR_LINE = "\r\x1b[K"


class Progress:
    """"done/total images" on `stream`, redrawn in place; shown only on a terminal unless told otherwise.

    Print result lines through `write()`, so the counter stays below them.
    """

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled

    def _draw(self) -> None:
        if self.enabled:
            self.stream.write(f"{_CLEAR_LINE}{self.done}/{self.total} images")
            self.stream.flush()

    def update(self) -> None:
        """Count one more image done."""
        self.done += 1
        self._draw()

    def write(self, line: str, file: TextIO | None = None) -> None:
        """Print one line (to stdout by default) above the counter."""
        if self.enabled:
            self.stream.write(_CLEAR_LINE)
        print(line, file=file or sys.stdout, flush=True)
        self._draw()

    def close(self) -> None:
        """Remove the counter line."""
        if self.enabled:
            self.stream.write(_CLEAR_LINE)
            self.stream.flush()

    def __enter__(self) -> Progress:
        self._draw()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
