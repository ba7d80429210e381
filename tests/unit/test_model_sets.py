"""Model sets side by side: naming, writing, discovery, servability and the repository check (no server)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support import CHECKED_IN_REPOSITORY, ROOT

from iqaguard.repository.check import check_repository
from iqaguard.repository.layout import copy_checked_in, missing_artifacts, read_input_size, versions
from iqaguard.repository.live import live_version
from iqaguard.repository.render import render_config
from iqaguard.repository.sets import (
    ModelSet,
    SetConflictError,
    SetNameError,
    check_set_name,
    model_sets,
    set_for_ensemble,
    target_set,
)
from iqaguard.repository.writer import name_default_set, remove_set, write_set

MEMBERS = ("teacher", "student", "detector")


def _write(repository: Path, model_set: ModelSet, tmp_path: Path, size=(32, 32), labels=("a", "b"), version=1):
    model = tmp_path / "model.pt"
    model.write_bytes(b"not a real model: the writer only places files")
    files = dict.fromkeys(MEMBERS, model)
    manifests = {name: {"set": model_set.name} for name in MEMBERS}
    return write_set(repository, model_set, version, files, manifests, list(labels), size)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """Checked-in configs with a default set `fashion` and a second set `small` (48x48, 3 labels)."""
    repo = copy_checked_in(CHECKED_IN_REPOSITORY, tmp_path / "model_repository")
    _write(repo, target_set(repo, "fashion"), tmp_path)
    _write(repo, target_set(repo, "small"), tmp_path, size=(48, 48), labels=("x", "y", "z"))
    return repo


def messages(repository: Path) -> str:
    return "\n".join(str(problem) for problem in check_repository(repository))


@pytest.mark.parametrize("name", ["fashion", "natural", "v2", "a" * 32])
def test_valid_set_names(name: str) -> None:
    assert check_set_name(name) == name


@pytest.mark.parametrize("name", ["", "Natural", "2nd", "nat_ural", "nat-ural", "a" * 33, "x/y", "natural "])
def test_invalid_set_names_are_refused(name: str) -> None:
    with pytest.raises(SetNameError, match="lowercase letter"):
        check_set_name(name)


def test_model_names_per_set() -> None:
    default, other = ModelSet("fashion", default=True), ModelSet("natural")
    assert default.members == ("teacher", "student", "detector") and default.preprocessor == "iqa_preprocess"
    assert default.ensembles == ("robust_classifier", "robust_classifier_fashion")
    assert default.generated == {"robust_classifier_fashion": "robust_classifier"}
    assert other.members == ("teacher_natural", "student_natural", "detector_natural")
    assert other.ensembles == ("robust_classifier_natural",)
    assert set(other.generated.values()) == {
        "iqa_preprocess", "teacher", "student", "detector", "guard_monitor", "robust_classifier"
    }
    assert other.monitor == "guard_monitor_natural" and default.monitor == "guard_monitor"


def test_two_sets_are_written_discovered_and_servable(repository: Path) -> None:
    assert model_sets(repository) == [ModelSet("fashion", default=True), ModelSet("small")]
    assert missing_artifacts(repository) == [] and messages(repository) == ""
    assert read_input_size(repository / "iqa_preprocess") == (32, 32)
    assert read_input_size(repository / "iqa_preprocess_small") == (48, 48)
    assert (repository / "robust_classifier_small" / "labels.txt").read_text() == "x\ny\nz\n"
    assert (repository / "robust_classifier_fashion" / "labels.txt").read_text() == "a\nb\n"
    assert (repository / "iqa_preprocess_small" / "1" / "model.py").read_bytes() == (
        CHECKED_IN_REPOSITORY / "iqa_preprocess" / "1" / "model.py"
    ).read_bytes()
    assert (repository / "robust_classifier_small" / "1").is_dir()  # an ensemble's (empty) version
    assert json.loads((repository / "teacher_small" / "1" / "manifest.json").read_text()) == {"set": "small"}
    default = set_for_ensemble(repository, "robust_classifier")
    assert default == set_for_ensemble(repository, "robust_classifier_fashion") == ModelSet("fashion", default=True)
    assert set_for_ensemble(repository, "robust_classifier_small").model("teacher") == "teacher_small"
    with pytest.raises(KeyError, match="robust_classifier_small"):
        set_for_ensemble(repository, "robust_classifier_natural")
    assert not list(repository.glob("*/.staging-*")) and not list(repository.glob("*/.building-*"))


def test_generated_configs_differ_only_in_names() -> None:
    for base in ("iqa_preprocess", "teacher", "robust_classifier"):
        text = (CHECKED_IN_REPOSITORY / base / "config.pbtxt").read_text()
        rendered = render_config(text, f"{base}_small", ModelSet("small"))
        changed = [(a, b) for a, b in zip(text.splitlines(), rendered.splitlines(), strict=True) if a != b]
        assert changed and all(f'"{base}"' in a or "model_name" in a for a, _ in changed), changed
        assert all("_small" in b for _, b in changed)


def test_rebuilding_a_set_adds_a_version_and_keeps_the_other_set(repository: Path, tmp_path: Path) -> None:
    small = target_set(repository, "small")
    _write(repository, small, tmp_path, size=(48, 48), labels=("x", "y", "z"), version=2)
    assert versions(repository / "teacher_small") == [1, 2] and versions(repository / "teacher") == [1]
    assert live_version(repository, small) == 1, "a later build waits for a rollout"
    assert read_input_size(repository / "iqa_preprocess") == (32, 32)
    assert messages(repository) == ""


@pytest.mark.parametrize("change", [{"size": (40, 40)}, {"labels": ("x", "y")}])
def test_a_rebuild_must_keep_the_sets_labels_and_size(repository: Path, tmp_path: Path, change: dict) -> None:
    inputs = {"size": (48, 48), "labels": ("x", "y", "z"), **change}
    with pytest.raises(SetConflictError, match="new set name"):
        _write(repository, target_set(repository, "small"), tmp_path, version=2, **inputs)
    assert versions(repository / "teacher_small") == [1]
    assert read_input_size(repository / "iqa_preprocess_small") == (48, 48)


def test_which_set_is_the_default(repository: Path, tmp_path: Path) -> None:
    empty = copy_checked_in(CHECKED_IN_REPOSITORY, tmp_path / "empty")
    assert target_set(empty, "fashion") == ModelSet("fashion", default=True)
    assert target_set(empty, "natural") == ModelSet("natural")
    assert target_set(empty, "natural", as_default=True) == ModelSet("natural", default=True)
    assert target_set(repository, "fashion") == ModelSet("fashion", default=True)
    with pytest.raises(SetConflictError, match="--as-default"):
        target_set(repository, "fashion", as_default=False)
    with pytest.raises(SetConflictError, match="remove it first"):
        target_set(repository, "small", as_default=True)
    with pytest.raises(SetConflictError, match="already built"):
        _write(repository, ModelSet("small", default=True), tmp_path)


def test_a_new_default_set_replaces_the_old_ones_name(repository: Path, tmp_path: Path) -> None:
    _write(repository, target_set(repository, "natural", as_default=True), tmp_path, version=2)
    assert model_sets(repository) == [ModelSet("natural", default=True), ModelSet("small")]
    assert not (repository / "robust_classifier_fashion").exists()
    assert messages(repository) == ""


def test_removing_a_set(repository: Path) -> None:
    removed = remove_set(repository, "small")
    assert removed[0].name == "robust_classifier_small" and len(removed) == 6
    assert model_sets(repository) == [ModelSet("fashion", default=True)] and messages(repository) == ""
    with pytest.raises(SetConflictError):
        remove_set(repository, "fashion")


def test_check_catches_an_ensemble_calling_another_sets_member(repository: Path) -> None:
    config = repository / "robust_classifier_small" / "config.pbtxt"
    config.write_text(config.read_text().replace('model_name: "teacher_small"', 'model_name: "teacher"'))
    found = messages(repository)
    assert "robust_classifier_small" in found and "'teacher'" in found and "teacher_small" in found


def test_check_catches_a_member_config_drifting_from_the_checked_in_one(repository: Path) -> None:
    config = repository / "teacher_small" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 64", "max_batch_size: 32"))
    assert "teacher_small: differs from teacher/config.pbtxt rendered for set 'small'" in messages(repository)


def test_check_catches_models_outside_any_set(repository: Path, tmp_path: Path) -> None:
    orphan = repository / "detector_lost"
    orphan.mkdir()
    (orphan / "config.pbtxt").write_text((repository / "detector_small" / "config.pbtxt").read_text()
                                         .replace('"detector_small"', '"detector_lost"'))  # fmt: skip
    (repository / ".staging-leftover").mkdir()
    bad = repository / "robust_classifier_Big"
    bad.mkdir()
    (bad / "config.pbtxt").write_text('name: "robust_classifier_Big"\nplatform: "ensemble"\n')
    found = messages(repository)
    assert "detector_lost: a model of set 'lost', which has no robust_classifier_lost" in found
    assert ".staging-leftover: hidden directory" in found
    assert "robust_classifier_Big: 'Big' is not a valid set name" in found


def test_check_catches_a_missing_member_of_a_set(repository: Path) -> None:

    shutil.rmtree(repository / "student_small")
    assert "student_small: missing: set 'small' needs it" in messages(repository)
    assert "student_small/<version>/model.pt" in missing_artifacts(repository)


def test_generated_model_directories_are_git_ignored() -> None:
    paths = ["model_repository/teacher_natural/config.pbtxt", "model_repository/robust_classifier_natural/labels.txt",
             "model_repository/robust_classifier_fashion/config.pbtxt", "model_repository/teacher/config.pbtxt",
             "model_repository/robust_classifier/config.pbtxt"]  # fmt: skip
    result = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.stdout.split() == paths[:3]


def test_launcher_probes_each_set_and_builds_only_a_missing_default(repository: Path, tmp_path: Path) -> None:
    from iqaguard.launcher.serve import default_set_unbuilt, ensembles

    assert ensembles(repository) == ["robust_classifier", "robust_classifier_small"]
    assert not default_set_unbuilt(repository)
    only_other = copy_checked_in(CHECKED_IN_REPOSITORY, tmp_path / "only_other")
    _write(only_other, target_set(only_other, "natural"), tmp_path)
    assert default_set_unbuilt(only_other)  # `make serve` then builds fashion into the default slots
    assert "teacher/<version>/model.pt" in missing_artifacts(only_other)
    assert "teacher_natural/<version>/model.pt" not in missing_artifacts(only_other)


def test_an_unnamed_default_set_can_be_named(tmp_path: Path) -> None:
    legacy = copy_checked_in(CHECKED_IN_REPOSITORY, tmp_path / "legacy")
    _write(legacy, ModelSet("fashion", default=True), tmp_path)
    shutil.rmtree(legacy / "robust_classifier_fashion")  # as built before sets had names
    assert model_sets(legacy) == [ModelSet(None, default=True)] and missing_artifacts(legacy) == []
    assert "built before sets had names" in ModelSet(None, default=True).describe()
    assert target_set(legacy, "fashion") == ModelSet("fashion", default=True)
    name_default_set(legacy, "fashion")
    assert model_sets(legacy) == [ModelSet("fashion", default=True)] and messages(legacy) == ""
    assert (legacy / "robust_classifier_fashion" / "labels.txt").read_text() == "a\nb\n"
    with pytest.raises(SetConflictError, match="named already"):
        name_default_set(legacy, "other")
