"""What a model build is asked to do (BuildConfig), and the checks made before any slow step."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from iqaguard.cache import cache_dir
from iqaguard.contract import DETECTOR, STUDENT, TEACHER
from iqaguard.training.evaluate import MAX_FPR
from iqaguard.training.profiles import PROFILES, Profile

POSITIVE = ("fit_images", "eval_images", "eval_clean", "test_images", "calib_images", "fit_pool", "subset",
            "epochs", "student_epochs", "pgd_steps", "threads", "keep")


@dataclass
class BuildConfig:
    """What to build; None means the profile's default."""

    profile: str = "fashion"
    repository: Path = Path("model_repository")
    weights: str = "auto"
    images: Path | None = None
    seed: int = 0
    reports: Path | None = None
    subset: int | None = None
    epochs: int | None = None
    student_epochs: int | None = None
    fit_pool: int | None = None
    fit_images: int | None = None
    calib_images: int | None = None
    eval_images: int | None = None
    eval_clean: int | None = None
    test_images: int | None = None  # fashion: cap on the test images for teacher accuracy/agreement (all 10k)
    pgd_steps: int | None = None
    keep: int = 3
    cache_dir: Path | None = field(default_factory=lambda: cache_dir("build"))  # None: no cache
    target_fpr: float = MAX_FPR
    frr_confidence: float = 0.95  # P(clean false-rejection rate <= target_fpr), see calibrate_threshold
    precision: str = "auto"  # training precision: auto (bf16 where the CPU supports it), bf16, fp32
    threads: int | None = None  # torch CPU threads (None: torch's default, one per core)
    set_name: str | None = None  # the model set written (None: the profile's name); see iqaguard.repository.sets
    as_default: bool | None = None  # into the checked-in slots (robust_classifier)? None: sets.target_set decides


def prepare(config: BuildConfig) -> Profile:
    """Check `config` and its repository, set torch's thread count, and return the profile.

    Raises ValueError, FileNotFoundError or MissingWeightsError before any slow step.
    """
    if config.profile not in PROFILES:
        raise ValueError(f"unknown profile {config.profile!r}; choose from {sorted(PROFILES)}")
    profile = PROFILES[config.profile]
    if config.threads:
        # On a busy machine one thread can beat two: OpenMP workers stall waiting for a core.
        torch.set_num_threads(config.threads)
    for name in POSITIVE:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    repo = Path(config.repository)
    for member in (TEACHER, STUDENT, DETECTOR):
        if not (repo / member / "config.pbtxt").is_file():
            raise FileNotFoundError(f"{repo / member / 'config.pbtxt'} is missing: not the project's model repository")
    if profile.pretrained_weights is not None and config.weights != "random":
        profile.pretrained_weights(config.weights)  # fails before any slow step when weights are missing
    return profile
