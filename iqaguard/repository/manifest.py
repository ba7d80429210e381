"""Member manifests (how a built version was made) and the metadata inside TorchScript artifacts.

Paths in a manifest are relative to the repository root (e.g. the build's held-out samples as
"../reports/fashion/samples"), so a repository copied elsewhere carries no build host's paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

from iqaguard.repository.layout import MANIFEST_FILE, latest_version, model_file
from iqaguard.repository.sets import model_sets


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_text(manifest: Mapping[str, object]) -> str:
    """A manifest as written beside model.pt: sorted, indented JSON."""
    return json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"


def read_manifest(version_dir: Path) -> dict[str, object]:
    """The manifest of one member version; raises OSError/ValueError when it is missing or unreadable."""
    return json.loads((version_dir / MANIFEST_FILE).read_text())


def relative_to_repository(path: Path, repository: Path) -> str:
    """`path` as a POSIX path relative to the repository root (what manifests store)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(repository).resolve())).as_posix()


def portable_paths(values: Mapping[str, object], repository: Path) -> dict[str, object]:
    """`values` with each Path made relative to the repository root when it lies beside the repository
    (in the same project folder), and dropped (None) when it is some other host's location."""
    project = Path(repository).resolve().parent
    out: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, Path):
            inside = value.resolve().is_relative_to(project)
            out[key] = relative_to_repository(value, repository) if inside else None
        else:
            out[key] = value
    return out


def resolve_from_repository(stored: str, repository: Path) -> Path:
    """A path a manifest stores, made usable: relative ones are taken from the repository root."""
    return Path(repository) / stored


def artifact_meta(path: Path) -> dict[str, object]:
    """The meta.json a TorchScript artifact carries (read from the archive, without loading the model)."""
    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name.endswith("/extra/meta.json")]
        return json.loads(archive.read(names[0])) if names else {}


def describe_sets(repository: Path) -> list[str]:
    """Per set, a line with its ensembles, then one per built member: its served version and, where a
    manifest says so, how it was made."""
    lines = []
    for model_set in model_sets(repository):
        lines.append(f"set {model_set.describe()}")
        for name in model_set.members:
            version = latest_version(repository / name)
            if version is None:
                continue
            version_dir = model_file(repository, name, version).parent
            detail = ""
            if (version_dir / MANIFEST_FILE).is_file():
                meta = read_manifest(version_dir)
                detail = f" profile={meta.get('profile', '?')} weights={meta.get('weights', '?')}"
                if meta.get("weights") == "random":
                    detail += "  << RANDOM WEIGHTS (requested by name; for speed/plumbing only)"
            lines.append(f"  {name} v{version}{detail}")
    return lines
