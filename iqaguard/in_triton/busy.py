"""Tell a draining supervisor that this stub is executing: a marker file per stub while execute() runs.

The launcher (or the container entrypoint) sets $IQAGUARD_BUSY_DIR; without it nothing is written.
Triton's metrics show queued requests but not executing ones, and a drain must wait for both.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

BUSY_DIR_ENV = "IQAGUARD_BUSY_DIR"


@contextlib.contextmanager
def busy() -> Iterator[None]:
    """Mark this stub busy for the duration of the block (one execute() at a time per stub)."""
    directory = os.environ.get(BUSY_DIR_ENV)
    if not directory:
        yield
        return
    marker = os.path.join(directory, str(os.getpid()))
    try:
        with open(marker, "w"):
            pass
    except OSError:
        marker = ""
    try:
        yield
    finally:
        if marker:
            with contextlib.suppress(OSError):
                os.unlink(marker)
