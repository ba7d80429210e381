"""Model-set profiles: input size, normalisation, perturbation budgets and default sizes of each step."""

from __future__ import annotations

from dataclasses import dataclass

from iqaguard.models.wrappers import FASHION_MEAN, FASHION_STD, IMAGENET_MEAN, IMAGENET_STD
from iqaguard.training.perturb import Perturbation


@dataclass(frozen=True)
class Profile:
    """Everything that differs between model sets; counts are defaults the CLI can lower.

    Perturbation strengths were set from the teacher's flip rates (mild to severe), never from
    any detector's results.
    """

    name: str
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    attack_eps: tuple[float, ...]  # L∞ budgets in [0,1] pixel units, multiples of 1/255
    distortions: dict[str, tuple[float, ...]]
    teacher_epochs: int
    student_epochs: int
    fit_pool: int  # clean held-out images for fitting the detector (negatives)
    fit_images: int  # of those, how many are also perturbed (positives)
    calib_images: int  # clean images that calibrate the threshold
    eval_images: int  # perturbed evaluation images (a subset of the clean evaluation images)
    eval_clean: int  # clean evaluation images: the negatives of every AUROC and the false-rejection rate
    pgd_steps: int = 10

    def perturbations(self) -> list[Perturbation]:
        """Every attack at every budget, then every distortion at every severity."""
        attacks = [Perturbation(kind, eps) for kind in ("fgsm", "pgd") for eps in self.attack_eps]
        distortions = [Perturbation(kind, s) for kind, levels in self.distortions.items() for s in levels]
        return attacks + distortions


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
        teacher_epochs=8,
        student_epochs=8,
        fit_pool=4000,
        fit_images=1000,
        calib_images=2000,
        eval_images=1000,
        eval_clean=4000,
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
        teacher_epochs=0,
        student_epochs=10,
        fit_pool=2000,
        fit_images=500,
        calib_images=1000,
        eval_images=500,
        eval_clean=1000,
    ),
}
