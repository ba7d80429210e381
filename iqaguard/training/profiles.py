"""Model sets ("profiles"): everything that differs between sets, one object each.

A set names its images (how they are loaded and split), its teacher and student networks, where
pretrained teacher weights come from, its input size and normalisation, its perturbation budgets,
the default size of each build step, its targets, and what its report must say about it. The build
steps read these and never branch on a set's name: adding a set means adding one object here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from iqaguard.models.networks import (
    SmallResNet,
    SmallStudent,
    imagenet_labels,
    imagenet_student,
    resnet50_network,
    resnet50_weights_file,
)
from iqaguard.models.wrappers import FASHION_MEAN, FASHION_STD, IMAGENET_MEAN, IMAGENET_STD
from iqaguard.training.data import FASHION_LABELS
from iqaguard.training.perturb import CORRUPTIONS, Perturbation
from iqaguard.training.splits import fashion_data, folder_data

if TYPE_CHECKING:
    from iqaguard.training.config import BuildConfig
    from iqaguard.training.splits import Data


@dataclass(frozen=True)
class Targets:
    """What a build of the set must reach; the report marks each as met or missed."""

    teacher_top1: float = 0.92  # on the set's labelled test images (where it has labels)
    student_flops_fraction: float = 1 / 8  # student FLOPs at most this fraction of the teacher's
    student_agreement: float = 0.95  # top-1 agreement with the teacher on held-out images
    false_rejections: float = 0.05  # on clean held-out images
    auroc_attacks: float = 0.95
    auroc_severe_distortions: float = 0.90
    auroc_unseen_attacks: float = 0.85  # CW-L2 and DeepFool: never fitted on
    auroc_unseen_corruptions: float = 0.85  # ImageNet-C corruptions that flip the teacher: never fitted on
    build_seconds: float = 600.0  # the whole build, networks trained from scratch
    label_prefix: str = ""  # e.g. "(fashion target) " where the figures were set for another set


@dataclass(frozen=True)
class Profile:
    """One model set. Counts are defaults the build's command line can lower.

    Perturbation strengths were set from the teacher's flip rates (mild to severe), never from
    any detector's results.
    """

    name: str
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    attack_eps: tuple[float, ...]  # L∞ budgets in [0,1] pixel units, multiples of 1/255
    distortions: dict[str, tuple[float, ...]]
    load_data: Callable[[BuildConfig, Profile], Data]  # loads the images and splits them into roles
    labels: Callable[[], list[str]]  # class names in the teacher's logit order
    teacher_network: Callable[[int], nn.Module]  # a fresh network for this many classes
    student_network: Callable[[int], nn.Module]
    # Pretrained teacher: resolves the build's --weights ("auto" or a file) to the network's weights file.
    # None: the teacher is trained from the set's labels (--weights may name a saved classifier state).
    pretrained_weights: Callable[[str], Path] | None
    teacher_epochs: int
    student_epochs: int
    fit_pool: int  # clean held-out images for fitting the detector (negatives)
    fit_images: int  # of those, how many are also perturbed (positives)
    calib_images: int  # clean images that calibrate the threshold
    eval_images: int  # perturbed evaluation images (a subset of the clean evaluation images)
    eval_clean: int  # clean evaluation images: the negatives of every AUROC and the false-rejection rate
    targets: Targets = field(default_factory=Targets)
    notes: tuple[str, ...] = ()  # what the report must say about this set's results
    pgd_steps: int = 10
    # Unseen (evaluated, never fitted on): CW-L2 and DeepFool on the first `unseen_attack_images`
    # evaluation images (they cost ~0.2–0.6 s of CPU per image at 28², far more at 224²), and the
    # ImageNet-C corruptions at these severities on the first `unseen_corruption_images`.
    unseen_attack_images: int = 150
    unseen_corruption_images: int = 500
    unseen_severities: tuple[int, ...] = (1, 3, 5)

    def perturbations(self) -> list[Perturbation]:
        """The seen settings first (every attack budget, every distortion severity), then the unseen ones.

        The detector is fitted on the seen prefix only (`Perturbation.seen`).
        """
        attacks = [Perturbation(kind, eps) for kind in ("fgsm", "pgd") for eps in self.attack_eps]
        distortions = [Perturbation(kind, s) for kind, levels in self.distortions.items() for s in levels]
        unseen_attacks = [Perturbation("cw", 1.0, seen=False, max_images=self.unseen_attack_images),
                          Perturbation("deepfool", 0.02, seen=False, max_images=self.unseen_attack_images)]
        corruptions = [Perturbation(name, severity, seen=False, max_images=self.unseen_corruption_images)
                       for name in CORRUPTIONS for severity in self.unseen_severities]
        return attacks + distortions + unseen_attacks + corruptions


PROFILES = {
    "fashion": Profile(
        name="fashion",
        size=(28, 28),
        mean=FASHION_MEAN,
        std=FASHION_STD,
        attack_eps=(2 / 255, 4 / 255, 8 / 255),
        distortions={
            "noise": (0.05, 0.1, 0.2),
            "blur": (0.8, 1.2, 1.8),
            "jpeg": (30, 15, 5),
            "contrast": (0.8, 0.6, 0.4),
            "resample": (1.5, 2.0, 3.0),
        },
        load_data=fashion_data,
        labels=lambda: list(FASHION_LABELS),
        teacher_network=SmallResNet,
        student_network=SmallStudent,
        pretrained_weights=None,
        teacher_epochs=8,
        student_epochs=8,
        fit_pool=4000,
        fit_images=1000,
        calib_images=2000,
        eval_images=1000,
        eval_clean=4000,
        targets=Targets(build_seconds=300.0),  # the offline default: a fresh `make serve` builds it first
        notes=("Fashion-MNIST images have flat black backgrounds: any pixel perturbation there shows in "
               "BRISQUE's MSCN statistics, which is why IQA alone catches even 2/255 attacks. Natural images "
               "(the imagenet profile) will be harder.",),
    ),
    "imagenet": Profile(
        name="imagenet",
        size=(224, 224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        attack_eps=(1 / 255, 2 / 255, 4 / 255),
        distortions={
            "noise": (0.03, 0.06, 0.12),
            "blur": (1.0, 2.0, 3.0),
            "jpeg": (30, 15, 5),
            "contrast": (0.5, 0.3, 0.15),
            "resample": (2.0, 4.0, 8.0),
        },
        load_data=folder_data,
        labels=imagenet_labels,
        teacher_network=resnet50_network,
        student_network=imagenet_student,
        pretrained_weights=resnet50_weights_file,
        teacher_epochs=0,
        student_epochs=10,
        fit_pool=2000,
        fit_images=500,
        calib_images=1000,
        eval_images=500,
        eval_clean=1000,
        unseen_attack_images=40,
        unseen_corruption_images=200,
        targets=Targets(label_prefix="(fashion target) "),  # set for fashion; shown for comparison
    ),
}
