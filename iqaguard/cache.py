"""The one cache root: trained networks, downloaded data sets and assembled Triton backends live under it.

``$IQAGUARD_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/iqaguard``, else ``~/.cache/iqaguard``.
Everything under it can be deleted at any time; it is rebuilt on demand.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache root, read from the environment at each call."""
    configured = os.environ.get("IQAGUARD_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "iqaguard"


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cached thing under the root: "build", "datasets", "backends"."""
    return cache_root() / kind
