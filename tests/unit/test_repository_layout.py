"""Where the repository is and how artifacts name places: from arguments, environment or working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from iqaguard.repository.layout import REPOSITORY_ENV, default_repository
from iqaguard.repository.manifest import portable_paths, relative_to_repository, resolve_from_repository


def test_default_repository_is_the_environment_or_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REPOSITORY_ENV, raising=False)
    assert default_repository() == Path("model_repository")  # relative: taken from the working directory
    monkeypatch.setenv(REPOSITORY_ENV, "/srv/models")
    assert default_repository() == Path("/srv/models")


def test_manifest_paths_are_relative_to_the_repository_and_resolve_back(tmp_path: Path) -> None:
    repository = tmp_path / "project" / "model_repository"
    samples = tmp_path / "project" / "reports" / "fashion" / "samples"
    stored = relative_to_repository(samples, repository)
    assert stored == "../reports/fashion/samples"
    assert resolve_from_repository(stored, repository).resolve() == samples.resolve()
    copied = tmp_path / "elsewhere" / "model_repository"  # a copied repository with its reports beside it
    assert resolve_from_repository(stored, copied).resolve() == (tmp_path / "elsewhere" / "reports/fashion/samples")
    assert resolve_from_repository("/old/absolute/samples", repository) == Path("/old/absolute/samples")


def test_config_paths_outside_the_project_are_left_out(tmp_path: Path) -> None:
    repository = tmp_path / "project" / "model_repository"
    values = {"repository": repository, "reports": tmp_path / "project" / "reports", "cache_dir": Path("/var/cache/x"),
              "seed": 3, "images": None}  # fmt: skip
    assert portable_paths(values, repository) == {
        "repository": ".", "reports": "../reports", "cache_dir": None, "seed": 3, "images": None,
    }  # fmt: skip
