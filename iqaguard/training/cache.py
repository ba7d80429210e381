"""The cache of trained networks: keys that change whenever the weights would."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def source_hash(*modules: object) -> str:
    """Short hash of the source files of `modules` (the training code is part of a cache key)."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def cache_path(cache_dir: Path | None, kind: str, key: dict[str, object]) -> Path | None:
    """Where the network of `kind` trained under `key` is cached (None: caching is off)."""
    if cache_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{kind}-{digest}.pt"


def state_hash(module: torch.nn.Module) -> str:
    """Short hash of a module's state (names and tensor bytes)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
