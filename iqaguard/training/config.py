"""What a model build is asked to do (BuildConfig), and the checks made before any slow step."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from iqaguard.cache import cache_dir
from iqaguard.contract import DETECTOR, STUDENT, TEACHER
from iqaguard.training.data import image_files
from iqaguard.training.evaluate import MAX_FPR
from iqaguard.training.pixel_teacher import class_count, class_names
from iqaguard.training.profiles import PROFILES, Profile
from iqaguard.training.splits import folder_data, folder_roles

POSITIVE = ("fit_images", "eval_images", "eval_clean", "test_images", "calib_images", "fit_pool", "subset",
            "epochs", "student_epochs", "pgd_steps", "threads", "keep", "size")


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
    frr_confidence: float | None = None  # P(clean false-rejection rate <= target_fpr); None: the profile's
    precision: str = "auto"  # training precision: auto (bf16 where the CPU supports it), bf16, fp32
    threads: int | None = None  # torch CPU threads (None: torch's default, one per core)
    set_name: str | None = None  # the model set written (None: the profile's name); see iqaguard.repository.sets
    as_default: bool | None = None  # into the checked-in slots (robust_classifier)? None: sets.target_set decides
    teacher: Path | None = None  # a TorchScript classifier file (profiles whose teacher comes from a file)
    labels: Path | None = None  # class names, one a line, for a pretrained teacher (default: the profile's or class_i)
    size: int | None = None  # square input size the set serves (default: the profile's)


def prepare(config: BuildConfig) -> Profile:
    """Check `config` and its repository, set torch's thread count, fill in the profile's false-rejection
    confidence where `config` leaves it None, and return the profile (at config.size).

    Raises ValueError, FileNotFoundError or MissingWeightsError before any slow step: unknown profile,
    options that do not apply to it, a missing repository, too few images, missing weights, a teacher
    that is not TorchScript or does not answer logits [N,C].
    """
    if config.profile not in PROFILES:
        raise ValueError(f"unknown profile {config.profile!r}; choose from {sorted(PROFILES)}")
    profile = PROFILES[config.profile]
    if config.frr_confidence is None:  # every later step reads the resolved value from the config
        config.frr_confidence = profile.frr_confidence
    if config.threads:
        # On a busy machine one thread can beat two: OpenMP workers stall waiting for a core.
        torch.set_num_threads(config.threads)
    for name in POSITIVE:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if config.size is not None:
        profile = replace(profile, size=(config.size, config.size))
    if config.teacher is not None and not profile.teacher_file:
        raise ValueError(f"--teacher does not apply to the {profile.name} profile (use --profile custom)")
    if config.labels is not None and profile.pretrained_teacher is None:
        raise ValueError(f"--labels does not apply to the {profile.name} profile: it names its own classes")
    repo = Path(config.repository)
    for member in (TEACHER, STUDENT, DETECTOR):
        if not (repo / member / "config.pbtxt").is_file():
            raise FileNotFoundError(f"{repo / member / 'config.pbtxt'} is missing: not the project's model repository")
    if profile.pretrained_teacher is not None:
        # Missing weights, a file that is not TorchScript, wrong output: fail before any slow step.
        teacher = profile.pretrained_teacher(config)
        class_names(class_count(teacher.module, profile.size), config.labels, profile.labels())
    if profile.load_data is folder_data and config.images is not None:
        if not Path(config.images).is_dir():
            raise FileNotFoundError(f"image folder {config.images} does not exist")
        folder_roles(len(image_files(Path(config.images))), config, profile)  # too few images: fail now
    return profile
