"""The model repository's layout: where it is, its file names, member tensor names, versions, servability.

    <repository>/<model>/config.pbtxt              checked in, independent of the model set
    <repository>/<member>/<version>/model.pt       built TorchScript (teacher, student, detector)
    <repository>/<member>/<version>/manifest.json  how that version was built (see repository.manifest)
    <repository>/robust_classifier/labels.txt      built: class names, one per line
    <repository>/iqa_preprocess/preprocess.json    built: {"height": H, "width": W}

That is the default model set. Every other set S has the same files under models suffixed _S
(teacher_S/..., robust_classifier_S/labels.txt, iqa_preprocess_S/preprocess.json), generated from the
checked-in ones; see iqaguard.repository.sets.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from iqaguard.repository.sets import CHECKED_IN_MODELS, CONFIG_FILE, model_sets

MODEL_FILE = "model.pt"
LABELS_FILE = "labels.txt"  # beside the ensemble's config.pbtxt
PREPROCESS_FILE = "preprocess.json"  # beside iqa_preprocess's config.pbtxt
MANIFEST_FILE = "manifest.json"  # beside each built member version's model.pt

# Member tensor names (LibTorch's `<name>__<index>` convention: the index is the forward() position).
PIXELS = "PIXELS__0"  # teacher and student input: [N,3,H,W] float32 RGB in [0,1]
LOGITS = "LOGITS__0"  # teacher and student output
TEACHER_PROBS = "PROBS__1"  # teacher output: softmax
DETECTOR_INPUTS = ("IQA__0", "TEACHER_LOGITS__1", "STUDENT_LOGITS__2")
DETECTOR_OUTPUTS = ("SUSPICION__0", "VERDICT__1")

REPOSITORY_ENV = "IQAGUARD_REPOSITORY"
DEFAULT_REPOSITORY_NAME = "model_repository"


class MissingArtifactError(RuntimeError):
    """A built artifact the server needs is not there."""


def default_repository() -> Path:
    """The repository to use when none is named: $IQAGUARD_REPOSITORY, else ./model_repository."""
    return Path(os.environ.get(REPOSITORY_ENV) or DEFAULT_REPOSITORY_NAME)


def copy_checked_in(source: Path, target: Path) -> Path:
    """Copy a repository's checked-in part (configs, Python-backend model.py files, ensemble version dirs);
    the default set's models only, never a generated set's."""
    for config in (source / name / CONFIG_FILE for name in CHECKED_IN_MODELS):
        if not config.is_file():
            continue
        (target / config.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(config, target / config.parent.name / CONFIG_FILE)
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


def model_file(repository: Path, member: str, version: int) -> Path:
    """<repository>/<member>/<version>/model.pt."""
    return repository / member / str(version) / MODEL_FILE


def missing_artifacts(repository: Path) -> list[str]:
    """Human-readable list of what the repository lacks to serve every set in it (empty when servable)."""
    missing = []
    for name in CHECKED_IN_MODELS:
        if not (repository / name / CONFIG_FILE).is_file():
            missing.append(f"{name}/{CONFIG_FILE} (checked into git; is this a model repository?)")
    for model_set in model_sets(repository):
        for name in model_set.generated:
            if not (repository / name / CONFIG_FILE).is_file():
                missing.append(f"{name}/{CONFIG_FILE} (generated for set {model_set.name}; rebuild the set)")
        for name in model_set.members:
            if latest_version(repository / name) is None:
                missing.append(f"{name}/<version>/{MODEL_FILE}")
        for name in model_set.ensembles:
            if not (repository / name / LABELS_FILE).is_file():
                missing.append(f"{name}/{LABELS_FILE}")
        if not (repository / model_set.preprocessor / PREPROCESS_FILE).is_file():
            missing.append(f"{model_set.preprocessor}/{PREPROCESS_FILE}")
    return list(dict.fromkeys(missing))


def read_input_size(model_dir: str | Path) -> tuple[int, int]:
    """Read the teacher's (height, width) from the built preprocess.json beside the preprocessor's config."""
    path = Path(model_dir) / PREPROCESS_FILE
    if not path.is_file():
        raise MissingArtifactError(
            f"{path} is missing: no model set is built. Build one with `make build` "
            "(or `make serve`, which builds the default set when none exists)."
        )
    params = json.loads(path.read_text())
    height, width = int(params["height"]), int(params["width"])
    if height < 1 or width < 1:
        raise MissingArtifactError(f"{path}: invalid input size {height}x{width}")
    return height, width
