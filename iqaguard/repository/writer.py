"""Write a built model set into the Triton model repository: a new version of each member, and the set's files.

`write_set` is the one way a set gets into a repository (the build, the speed-benchmark repository and
the test fixtures all use it). Nothing a running server reads is ever half written:
- each member version directory is assembled under a temporary name inside the member and renamed
  into place (Triton ignores non-numeric version directories);
- a model directory a set adds (a suffixed set's first build) is assembled whole under a hidden
  staging directory inside the checked-in ensemble's directory and renamed into the repository
  (Triton loads *every* top-level directory as a model, hidden ones too, so nothing is staged there);
- single files (labels.txt, preprocess.json, generated configs) are replaced atomically;
- the set's members are written before its ensembles, so an ensemble never names a missing model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path

from iqaguard.contract import BUILT_MEMBERS, ENSEMBLE
from iqaguard.repository.layout import (
    CONFIG_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    PREPROCESS_FILE,
    missing_artifacts,
    versions,
)
from iqaguard.repository.live import built_versions, live_version, make_live, protected_versions, read_state
from iqaguard.repository.manifest import manifest_text, sha256
from iqaguard.repository.render import ENSEMBLE_VERSION, generated_files
from iqaguard.repository.sets import (
    ModelSet,
    SetConflictError,
    check_set_name,
    model_sets,
    set_ensemble,
    set_ensembles,
)

__all__ = [
    "is_built", "name_default_set", "next_version", "prune", "remove_set", "render_generated", "set_file_texts",
    "sha256", "write_member", "write_set",
]  # fmt: skip

log = logging.getLogger(__name__)
STAGING_PREFIX = ".staging-"


def next_version(repository: Path, members: Sequence[str] = BUILT_MEMBERS) -> int:
    """One above the highest version of any of `members`, so a model set shares one version number."""
    return max((max(versions(repository / m), default=0) for m in members), default=0) + 1


def _atomic_write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "wb") as stream:
        stream.write(content)
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


@contextlib.contextmanager
def _staging(repository: Path) -> Iterator[Path]:
    """A hidden scratch directory on the repository's file system where Triton never looks for models."""
    parent = repository / ENSEMBLE
    if not (parent / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{parent}/{CONFIG_FILE} is missing: {repository} is not a model repository")
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=STAGING_PREFIX))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _place_model(
    repository: Path,
    model_set: ModelSet,
    model: str,
    files: Mapping[str, bytes],
    version: tuple[int, Path, Mapping[str, object]] | None = None,
) -> Path:
    """Give model directory `model` of `model_set` the set's `files` (and a new member `version`).

    A generated model also gets its rendered config (written last); a directory that does not exist
    yet appears whole, with its first version. Returns the model directory.
    """
    target = repository / model
    generated = generated_files(repository, model, model_set) if model in model_set.generated else {}
    contents = {**files, **{k: v for k, v in generated.items() if k != CONFIG_FILE}}
    if CONFIG_FILE in generated:
        contents[CONFIG_FILE] = generated[CONFIG_FILE]  # the config last
    if target.is_dir():
        for relative, content in contents.items():
            path = target / relative
            if not path.is_file() or path.read_bytes() != content:
                _atomic_write(path, content)
        if version is not None:
            write_member(repository, model, *version)
        return target
    if not generated:
        raise FileNotFoundError(f"{target}/{CONFIG_FILE} is missing: {repository} is not a model repository")
    with _staging(repository) as staging:
        for relative, content in contents.items():
            (staging / model / relative).parent.mkdir(parents=True, exist_ok=True)
            (staging / model / relative).write_bytes(content)
        if model_set.generated[model] == ENSEMBLE:
            (staging / model / ENSEMBLE_VERSION).mkdir(exist_ok=True)
        if version is not None:
            write_member(staging, model, *version)
        os.rename(staging / model, target)
    return target


def _remove_model(repository: Path, model: str) -> Path:
    """Take a model directory out of the repository at once (renamed away, then deleted)."""
    with _staging(repository) as staging:
        os.rename(repository / model, staging / model)
    return repository / model


def _check_target(repository: Path, model_set: ModelSet) -> None:
    """Refuse to write a set over a different set of the same name (see sets.target_set)."""
    if model_set.name is None:
        raise SetConflictError("a set is written under a name (each built set S gets robust_classifier_S)")
    known = set_ensembles(repository)
    if model_set.name in known and known[model_set.name] != model_set.default:
        where = "the default set" if known[model_set.name] else f"a separate set ({set_ensemble(model_set.name)})"
        raise SetConflictError(f"set {model_set.name!r} is already built as {where} in {repository}")


def write_set(
    repository: Path,
    model_set: ModelSet,
    version: int,
    members: Mapping[str, Path],
    manifests: Mapping[str, Mapping[str, object]],
    labels: Sequence[str],
    size: tuple[int, int],
    keep: int = 3,
) -> dict[str, Path]:
    """Write a built set: `members` ({teacher|student|detector: model.pt file}) as `version`, each beside its
    manifest, the set's labels.txt and preprocess.json, its generated models, its ensembles (last); then
    drop the previous default set's named ensemble when this set takes the default slots, and prune the
    set's members to the newest `keep` versions. Returns where labels.txt and preprocess.json went."""
    repository = Path(repository)
    if set(members) != set(BUILT_MEMBERS) or set(manifests) != set(BUILT_MEMBERS):
        raise ValueError(f"a set needs exactly the members {BUILT_MEMBERS}, got {sorted(members)}")
    _check_target(repository, model_set)
    texts = {name: text.encode() for name, text in set_file_texts(labels, size).items()}
    _check_same_inputs(repository, model_set, texts)
    for base in BUILT_MEMBERS:
        _place_model(repository, model_set, model_set.model(base), {},
                     (version, members[base], manifests[base]))  # fmt: skip
    preprocess = {PREPROCESS_FILE: texts[PREPROCESS_FILE]}
    preprocessor = _place_model(repository, model_set, model_set.preprocessor, preprocess)
    _place_model(repository, model_set, model_set.monitor, {})
    ensembles = [_place_model(repository, model_set, name, {LABELS_FILE: texts[LABELS_FILE]})
                 for name in model_set.ensembles]  # fmt: skip
    if model_set.default:
        for name, is_default in set_ensembles(repository).items():
            if is_default and name != model_set.name:
                log.warning("set %r replaces set %r in the default slots; removing %s", model_set.name, name,
                            set_ensemble(name))  # fmt: skip
                _remove_model(repository, set_ensemble(name))
    if read_state(repository, model_set) is None:
        make_live(repository, model_set, version)  # a set's first version goes live; later ones by rollout
    else:
        log.info("set %s: version %d built; %d stays live until `iqaguard-models rollout %s`",
                 model_set.name, version, live_version(repository, model_set), model_set.name)  # fmt: skip
    prune(repository, keep, model_set.members, protect=protected_versions(repository, model_set))
    return {"labels": ensembles[-1] / LABELS_FILE, "preprocess": preprocessor / PREPROCESS_FILE}


def _check_same_inputs(repository: Path, model_set: ModelSet, texts: Mapping[str, bytes]) -> None:
    """A set's versions share its labels and input size (one preprocessor and labels.txt serve them all),
    so a build that changes either must be a new set."""
    if model_set.name not in set_ensembles(repository) or not built_versions(repository, model_set):
        return
    current = {
        LABELS_FILE: repository / model_set.ensemble / LABELS_FILE,
        PREPROCESS_FILE: repository / model_set.preprocessor / PREPROCESS_FILE,
    }
    changed = [name for name, path in current.items() if path.is_file() and path.read_bytes() != texts[name]]
    if changed:
        raise SetConflictError(
            f"set {model_set.name!r} is built with other {' and '.join(changed)}; its versions must share labels "
            "and input size (a rollout switches only the members): build it under a new set name"
        )


def render_generated(repository: Path) -> list[str]:
    """Bring every built set's generated models up to date with the checked-in ones (configs, model.py),
    creating those a set built by an older release lacks (e.g. guard_monitor_S); return what changed.
    Ensembles go last, so a server never sees a step calling a model that is not there yet."""
    repository = Path(repository)
    changed = []
    for model_set in model_sets(repository):
        if not built_versions(repository, model_set):
            continue
        ordered = sorted(model_set.generated, key=lambda model: model_set.generated[model] == ENSEMBLE)
        for model in ordered:
            files = generated_files(repository, model, model_set)
            current = [repository / model / relative for relative in files]
            if all(path.is_file() and path.read_bytes() == files[path.relative_to(repository / model).as_posix()]
                   for path in current):  # fmt: skip
                continue
            _place_model(repository, model_set, model, {})
            changed.append(model)
    return changed


def name_default_set(repository: Path, name: str) -> Path:
    """Give an unnamed default set (built before sets had names) its robust_classifier_<name>; return it."""
    current = set_ensembles(repository)
    if any(current.values()):
        raise SetConflictError(f"the default set is named already: {sorted(n for n, d in current.items() if d)}")
    model_set = ModelSet(name, default=True)
    _check_target(repository, model_set)
    labels = (repository / ENSEMBLE / LABELS_FILE).read_bytes()  # FileNotFoundError: the default set is not built
    return _place_model(repository, model_set, model_set.ensemble, {LABELS_FILE: labels})


def remove_set(repository: Path, name: str) -> list[Path]:
    """Remove suffixed set `name` (its ensemble first, then its other models); the default set stays."""
    check_set_name(name)
    if set_ensembles(repository).get(name):
        raise SetConflictError(f"{name!r} is the default set; build another set with --as-default to replace it")
    model_set = ModelSet(name)
    present = [m for m in dict.fromkeys((model_set.ensemble, *model_set.models)) if (repository / m).is_dir()]
    if not present:
        raise KeyError(f"{repository} has no model of set {name!r}")
    return [_remove_model(repository, model) for model in present]


def prune(
    repository: Path, keep: int, members: Sequence[str] = BUILT_MEMBERS, protect: Collection[int] = ()
) -> list[Path]:
    """Delete all but the newest `keep` versions of each member, never one in `protect` (the live version
    and the one a rollback returns to); return what was removed."""
    removed = []
    for member in members:
        for version in versions(repository / member)[:-keep] if keep > 0 else []:
            if version in protect:
                continue
            path = repository / member / str(version)
            shutil.rmtree(path)
            removed.append(path)
    return removed


def is_built(repository: str | Path) -> bool:
    """True when every set in the repository is servable (see layout.missing_artifacts)."""
    return not missing_artifacts(Path(repository))
