"""Write a built model set into the Triton model repository as a new version of each member.

Each member version directory is assembled under a temporary name and renamed into place, so a
server never sees half a version. Only the member directories' numbered versions and the two
build files (labels.txt, preprocess.json) are written; nothing new appears at the repository root.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from iqaguard.contract import BUILT_MEMBERS, ENSEMBLE, PREPROCESSOR
from iqaguard.repository.layout import (
    CONFIG_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    PREPROCESS_FILE,
    missing_artifacts,
    versions,
)
from iqaguard.repository.manifest import manifest_text, sha256

__all__ = ["is_built", "next_version", "prune", "set_file_texts", "sha256", "write_member", "write_set_files"]


def next_version(repository: Path, members: Sequence[str] = BUILT_MEMBERS) -> int:
    """One above the highest version of any built member, so a model set shares one version number."""
    return max((max(versions(repository / m), default=0) for m in members), default=0) + 1


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


def write_member(repository: Path, member: str, version: int, model_file: Path, manifest: Mapping[str, object]) -> Path:
    """Place `model_file` as <repository>/<member>/<version>/model.pt beside its manifest; return the dir."""
    member_dir = repository / member
    if not (member_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{member_dir}/{CONFIG_FILE} is missing: {repository} is not a model repository")
    target = member_dir / str(version)
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    staging = Path(tempfile.mkdtemp(dir=member_dir, prefix=f".building-{version}-"))
    try:
        shutil.copyfile(model_file, staging / MODEL_FILE)
        (staging / MANIFEST_FILE).write_text(manifest_text(manifest))
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def set_file_texts(labels: Sequence[str], size: tuple[int, int]) -> dict[str, str]:
    """The contents of labels.txt and preprocess.json for a model set."""
    return {
        LABELS_FILE: "".join(f"{label}\n" for label in labels),
        PREPROCESS_FILE: json.dumps({"height": size[0], "width": size[1]}) + "\n",
    }


def write_set_files(repository: Path, labels: Sequence[str], size: tuple[int, int]) -> dict[str, Path]:
    """labels.txt beside the ensemble's config and preprocess.json beside the preprocessor's."""
    texts = set_file_texts(labels, size)
    labels_path = repository / ENSEMBLE / LABELS_FILE
    preprocess_path = repository / PREPROCESSOR / PREPROCESS_FILE
    _atomic_write_text(labels_path, texts[LABELS_FILE])
    _atomic_write_text(preprocess_path, texts[PREPROCESS_FILE])
    return {"labels": labels_path, "preprocess": preprocess_path}


def prune(repository: Path, keep: int, members: Sequence[str] = BUILT_MEMBERS) -> list[Path]:
    """Delete all but the newest `keep` versions of each member; return what was removed."""
    removed = []
    for member in members:
        for version in versions(repository / member)[:-keep] if keep > 0 else []:
            path = repository / member / str(version)
            shutil.rmtree(path)
            removed.append(path)
    return removed


def is_built(repository: str | Path) -> bool:
    """True when the repository is servable: configs, a model.pt version of every member, both set files."""
    return not missing_artifacts(Path(repository))
