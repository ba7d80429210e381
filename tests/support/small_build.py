"""A small, fast real build of the fashion set (weak models; for plumbing, serving and rollout tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from iqaguard.pipeline import build_model_set
from iqaguard.repository.layout import copy_checked_in
from iqaguard.training.data import FASHION_DIR
from support import CHECKED_IN_REPOSITORY

SMALL = {
    "subset": 800, "epochs": 1, "student_epochs": 1, "fit_pool": 150, "fit_images": 24, "calib_images": 200,
    "eval_images": 24, "eval_clean": 80, "test_images": 500, "pgd_steps": 2, "cache_dir": None,
    # 200 calibration images at fashion's 0.999 would put the cut at the largest clean score
    "frr_confidence": 0.95,
}  # fmt: skip


def empty_repository(target: Path) -> Path:
    """The checked-in part of the model repository only (configs, Python-backend code), as a fresh clone has it."""
    return copy_checked_in(CHECKED_IN_REPOSITORY, target)


def small_build(root: Path):
    """Version 1 of the fashion set, trained briefly, in <root>/model_repository (report in <root>/reports)."""
    if not FASHION_DIR.is_dir():
        pytest.fail(f"{FASHION_DIR} missing: run `make setup` (installs the Debian package dataset-fashion-mnist)")
    repository = empty_repository(root / "model_repository")
    return build_model_set("fashion", repository, reports=root / "reports", **SMALL)


def second_version(first_repository: Path, root: Path):
    """A copy of a built repository with a second fashion build (random teacher: no training) as version 2,
    which stays not live (a later build waits for a rollout)."""
    repository = root / "model_repository"
    shutil.copytree(first_repository, repository)
    return build_model_set("fashion", repository, weights="random", reports=root / "reports", keep=1,
                           **{k: v for k, v in SMALL.items() if k != "epochs"})  # fmt: skip
