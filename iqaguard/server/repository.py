"""What a model repository must hold before it can be served, and what it holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from iqaguard.contract import BUILT_MEMBERS, ENSEMBLE, LABELS_FILE, MODEL_FILE, PREPROCESS_FILE, PREPROCESSOR

DEFAULT_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


def copy_checked_in(source: Path, target: Path) -> Path:
    """Copy a repository's checked-in part (configs, Python-backend model.py files, ensemble version dirs)."""
    for config in source.glob("*/config.pbtxt"):
        (target / config.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(config, target / config.parent.name / "config.pbtxt")
        for code in config.parent.glob("[0-9]*/model.py"):
            (target / config.parent.name / code.parent.name).mkdir(exist_ok=True)
            shutil.copy2(code, target / config.parent.name / code.parent.name / "model.py")
        if 'platform: "ensemble"' in config.read_text():
            (target / config.parent.name / "1").mkdir(exist_ok=True)
    return target


def versions(model_dir: Path) -> list[int]:
    """The numbered version directories of one model, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def latest_version(model_dir: Path) -> int | None:
    """Newest numbered version directory holding a model file, or None."""
    built = [version for version in versions(model_dir) if (model_dir / str(version) / MODEL_FILE).is_file()]
    return max(built, default=None)


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
