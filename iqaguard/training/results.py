"""What a build's steps produced, as one typed value: the export and report steps take it whole."""

from __future__ import annotations

from dataclasses import dataclass

from iqaguard.training.config import BuildConfig
from iqaguard.training.detector_fit import Detectors
from iqaguard.training.distill import Student
from iqaguard.training.featurize import FitFeatures, HeldOutFeatures
from iqaguard.training.perturb import Perturbation
from iqaguard.training.profiles import Profile
from iqaguard.training.splits import Data
from iqaguard.training.teacher import Teacher


@dataclass
class BuildSteps:
    """The inputs and every step's result of one build, up to (not including) its export."""

    config: BuildConfig
    profile: Profile
    version: int  # the model-set version being written
    created: str  # ISO time the build started
    data: Data
    settings: list[Perturbation]
    pgd_steps: int
    teacher: Teacher
    student: Student
    fit: FitFeatures
    held_out: HeldOutFeatures
    detectors: Detectors
    evaluation: dict[str, object]  # evaluate()'s per-setting and summary tables
    samples: dict[str, object]  # what write_samples wrote (the manifests name the folder)
