"""What a model repository must hold before it can be served, and what it holds."""

from __future__ import annotations

import json
from pathlib import Path

from iqaguard.contract import BUILT_MEMBERS, ENSEMBLE, LABELS_FILE, MODEL_FILE, PREPROCESS_FILE, PREPROCESSOR

DEFAULT_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


def latest_version(model_dir: Path) -> int | None:
    """Newest numeric version directory holding a model file, or None."""
    versions = [
        int(child.name)
        for child in model_dir.iterdir()
        if child.is_dir() and child.name.isdigit() and (child / MODEL_FILE).is_file()
    ] if model_dir.is_dir() else []
    return max(versions, default=None)


def missing_artifacts(repository: Path) -> list[str]:
    """Human-readable list of built artifacts the repository lacks (empty when servable)."""
    missing = []
    for name in (*BUILT_MEMBERS, ENSEMBLE, PREPROCESSOR):
        if not (repository / name / "config.pbtxt").is_file():
            missing.append(f"{name}/config.pbtxt (checked into git; is this a model repository?)")
    for name in BUILT_MEMBERS:
        if latest_version(repository / name) is None:
            missing.append(f"{name}/<version>/{MODEL_FILE}")
    if not (repository / ENSEMBLE / LABELS_FILE).is_file():
        missing.append(f"{ENSEMBLE}/{LABELS_FILE}")
    if not (repository / PREPROCESSOR / PREPROCESS_FILE).is_file():
        missing.append(f"{PREPROCESSOR}/{PREPROCESS_FILE}")
    return missing


def describe_members(repository: Path) -> list[str]:
    """One line per built member: its served version and, where a manifest says so, how it was made."""
    lines = []
    for name in BUILT_MEMBERS:
        version = latest_version(repository / name)
        if version is None:
            continue
        manifest = repository / name / str(version) / "manifest.json"
        detail = ""
        if manifest.is_file():
            meta = json.loads(manifest.read_text())
            detail = f" profile={meta.get('profile', '?')} weights={meta.get('weights', '?')}"
            if meta.get("weights") == "random":
                detail += "  << RANDOM WEIGHTS (requested by name; for speed/plumbing only)"
        lines.append(f"{name} v{version}{detail}")
    return lines
