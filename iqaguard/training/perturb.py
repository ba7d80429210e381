"""Perturbations of held-out images: L∞ and minimal-norm attacks on the teacher, quality distortions.

Every perturbed image is returned *as the server would see it*: encoded with Pillow (PNG, or JPEG
for the JPEG distortion), decoded by `iqaguard.imaging.decode_image` and resized by `to_pixels`.

The attacks come from the Adversarial Robustness Toolbox (ART, MIT): FGSM and PGD are the ones the
detector is fitted on; Carlini-Wagner L2 and DeepFool, and the ImageNet-C corruptions (`corrupt-tta`,
MIT), are "unseen": evaluated only, never fitted on.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter
from torch import nn

from iqaguard.imaging import decode_image, to_pixels
from iqaguard.models.wrappers import logits_of

ATTACKS = ("fgsm", "pgd", "cw", "deepfool")
DEEPFOOL_GRADS = 10  # DeepFool follows the gradients of this many likeliest classes
# Attacks whose cost per batch grows with the distinct classes it touches: one image per ART call on more
# than BATCHED_CLASSES classes (see attack()). Up to that many, a batch's class gradients are bounded.
PER_IMAGE_ATTACKS = ("cw", "deepfool")
BATCHED_CLASSES = DEEPFOOL_GRADS
DISTORTIONS = ("noise", "blur", "jpeg", "contrast", "resample")
# ImageNet-C corruptions (Hendrycks & Dietterich 2019) that are none of DISTORTIONS, by corrupt-tta's names.
CORRUPTIONS = ("impulse_noise", "defocus_blur", "motion_blur", "zoom_blur", "fog", "frost", "snow",
               "pixelate", "elastic_transform", "brightness")


@dataclass(frozen=True)
class Perturbation:
    """One perturbation setting: kind, strength, whether the detector is fitted on it, how many images get it.

    Strength: L∞ budget in [0,1] units (fgsm, pgd), the confidence margin κ (cw), the overshoot (deepfool),
    the severity 1–5 (corruptions), or the distortion's own parameter. `max_images` caps the images of
    expensive settings (None: every image of the split).
    """

    kind: str
    strength: float
    seen: bool = True
    max_images: int | None = None

    @property
    def is_attack(self) -> bool:
        return self.kind in ATTACKS

    @property
    def is_corruption(self) -> bool:
        return self.kind in CORRUPTIONS

    @property
    def name(self) -> str:
        if self.kind in ("fgsm", "pgd"):
            return f"{self.kind} eps={round(self.strength * 255, 2):g}/255"
        if self.kind == "cw":
            return f"cw-l2 kappa={self.strength:g}"
        if self.kind == "deepfool":
            return f"deepfool overshoot={self.strength:g}"
        if self.is_corruption:
            return f"{self.kind} severity={self.strength:g}"
        unit = {"noise": "sigma", "blur": "radius", "jpeg": "quality", "contrast": "factor", "resample": "factor"}
        return f"{self.kind} {unit[self.kind]}={self.strength:g}"


# ---------------------------------------------------------------------------------------------- attacks


class _Logits(nn.Module):
    """The teacher's logits alone (it returns (logits, probs)), as ART's classifier expects."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(pixels))


def art_classifier(model: nn.Module, size: tuple[int, int], classes: int) -> object:
    """`model` (pixels in [0,1] -> logits, or (logits, probs)) as an ART PyTorchClassifier on the CPU."""
    from art.estimators.classification import PyTorchClassifier  # heavy: only builds need it

    return PyTorchClassifier(
        _Logits(model).eval(), loss=nn.CrossEntropyLoss(), input_shape=(3, *size), nb_classes=classes,
        clip_values=(0.0, 1.0), device_type="cpu",
    )  # fmt: skip


def art_attack(classifier: object, perturbation: Perturbation, pgd_steps: int, batch_size: int) -> object:
    """The ART evasion attack for one attack setting (untargeted)."""
    from art.attacks.evasion import CarliniL2Method, DeepFool, FastGradientMethod, ProjectedGradientDescentPyTorch

    kind, strength = perturbation.kind, perturbation.strength
    if kind == "fgsm":
        return FastGradientMethod(classifier, eps=strength, batch_size=batch_size)
    if kind == "pgd":  # Madry et al.: random start in the ball, steps of 2.5·eps/steps
        return ProjectedGradientDescentPyTorch(
            classifier, eps=strength, eps_step=2.5 * strength / pgd_steps, max_iter=pgd_steps,
            num_random_init=1, batch_size=batch_size, verbose=False,
        )  # fmt: skip
    if kind == "cw":
        # κ > 0 so the adversarial survives the 8-bit rounding of the served image (κ = 0 lost ~40% of them).
        return CarliniL2Method(classifier, confidence=strength, learning_rate=0.01, binary_search_steps=3,
                               max_iter=10, initial_const=1.0, batch_size=batch_size, verbose=False)
    if kind == "deepfool":  # gradients of the likeliest DEEPFOOL_GRADS classes (see attack())
        return DeepFool(classifier, max_iter=50, epsilon=strength, nb_grads=DEEPFOOL_GRADS, batch_size=batch_size,
                        verbose=False)
    raise ValueError(f"unknown attack {kind!r}")


def attack(
    model: nn.Module,
    pixels: torch.Tensor,
    targets: torch.Tensor,
    perturbation: Perturbation,
    generator: torch.Generator,
    pgd_steps: int = 10,
    classes: int | None = None,
) -> np.ndarray:
    """Run one attack on a batch (against `targets`, the teacher's clean answers); return served pixels [N,3,H,W].

    ART draws its random starts from numpy's global generator: it is seeded from `generator` first.
    """
    size = (pixels.shape[2], pixels.shape[3])
    if classes is None:
        with torch.no_grad():
            classes = int(_Logits(model)(pixels[:1]).shape[1])
    classifier = art_classifier(model, size, classes)
    np.random.seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    method = art_attack(classifier, perturbation, pgd_steps, len(pixels))
    x, y = pixels.numpy(), targets.numpy()
    if perturbation.kind in PER_IMAGE_ATTACKS and classes > BATCHED_CLASSES:
        # Both compute class gradients per distinct label in a batch, so a batch's cost grows with its size
        # squared. DeepFool: the union of every image's 10 likeliest classes at every step (16 ImageNet
        # photos: up to 160 backward passes a step; a natural build spent 12 minutes on one photo).
        # Carlini-Wagner: one backward pass per distinct label, twice a step (12 photos: 22 s each batched,
        # 6 s each alone, same flips). One image per call keeps both flat. With 10 classes or fewer the
        # union is every class anyway, so a whole batch goes at once (fashion DeepFool: 0.2 -> 0.02 s/image).
        adversarial = np.concatenate([method.generate(x=x[i : i + 1], y=y[i : i + 1]) for i in range(len(x))])
    else:
        adversarial = method.generate(x=x, y=y)
    return np.stack([served(to_image(x), size) for x in adversarial])


# ------------------------------------------------------------------------------------------ distortions


def to_image(pixels: np.ndarray) -> Image.Image:
    """[3,H,W] float in [0,1] -> 8-bit RGB PIL image (rounded)."""
    array = np.clip(np.rint(np.asarray(pixels) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)), mode="RGB")


def encode(image: Image.Image, fmt: str = "PNG", quality: int = 95) -> bytes:
    """Encode a PIL image with Pillow (PNG lossless, or JPEG at `quality`)."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=int(quality))
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


def served(image: Image.Image, size: tuple[int, int], fmt: str = "PNG", quality: int = 95) -> np.ndarray:
    """What the server computes from `image` sent as `fmt`: encode, decode_image, to_pixels."""
    return to_pixels(decode_image(encode(image, fmt, quality)), size)


def gaussian_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    """Additive white Gaussian noise of standard deviation `sigma` (in [0,1] units), per channel."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    noisy = array + rng.normal(0.0, sigma, size=array.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(noisy * 255.0), 0, 255).astype(np.uint8), mode="RGB")


def gaussian_blur(image: Image.Image, radius: float) -> Image.Image:
    """Pillow's Gaussian blur with standard deviation `radius` pixels."""
    return image.filter(ImageFilter.GaussianBlur(radius))


def contrast_loss(image: Image.Image, factor: float) -> Image.Image:
    """Blend towards the mean grey level: factor 1 keeps the image, 0 makes it uniform (Pillow ImageEnhance)."""
    return ImageEnhance.Contrast(image).enhance(factor)


def resample(image: Image.Image, factor: float) -> Image.Image:
    """Down-sample by `factor` then back up, both with `to_pixels`' bilinear resize."""
    width, height = image.size
    small = (max(1, round(height / factor)), max(1, round(width / factor)))
    down = to_image(to_pixels(image, small))
    return to_image(to_pixels(down, (height, width)))


def corrupt(image: Image.Image, name: str, severity: int, rng: np.random.Generator) -> Image.Image:
    """One ImageNet-C corruption by corrupt-tta at severity 1–5 (it draws from numpy's global generator)."""
    from corrupt_tta import corrupt as imagenet_c  # heavy: only builds need it

    np.random.seed(int(rng.integers(2**31 - 1)))
    corrupted = imagenet_c(np.asarray(image), severity=severity, corruption_name=name)
    return Image.fromarray(np.clip(np.rint(corrupted), 0, 255).astype(np.uint8), mode="RGB")


def distort(pixels: np.ndarray, perturbation: Perturbation, rng: np.random.Generator) -> np.ndarray:
    """Apply one quality distortion or corruption to [3,H,W] served pixels and return the served result."""
    size = (pixels.shape[1], pixels.shape[2])
    image = to_image(pixels)
    kind, strength = perturbation.kind, perturbation.strength
    if perturbation.is_corruption:
        return served(corrupt(image, kind, int(strength), rng), size)
    if kind == "jpeg":
        return served(image, size, "JPEG", quality=int(strength))
    operations: dict[str, Callable[[Image.Image], Image.Image]] = {
        "noise": lambda im: gaussian_noise(im, strength, rng),
        "blur": lambda im: gaussian_blur(im, strength),
        "contrast": lambda im: contrast_loss(im, strength),
        "resample": lambda im: resample(im, strength),
    }
    if kind not in operations:
        raise ValueError(f"unknown distortion {kind!r}")
    return served(operations[kind](image), size)


def _distort_seeded(work: tuple[np.ndarray, Perturbation, int]) -> np.ndarray:
    pixels, perturbation, seed = work
    return distort(pixels, perturbation, np.random.default_rng(seed))


def distort_many(
    pixels: np.ndarray, perturbation: Perturbation, rng: np.random.Generator, pool: Executor | None = None
) -> np.ndarray:
    """`distort` each of [N,3,H,W] served pixels, each image with its own generator seeded from `rng`.

    The result is the same whether `pool` (e.g. `distortion_pool()`) shares the work or not.
    """
    seeds = rng.integers(2**63 - 1, size=len(pixels))
    work = zip(pixels, [perturbation] * len(pixels), seeds.tolist(), strict=True)
    results = pool.map(_distort_seeded, work, chunksize=16) if pool is not None else map(_distort_seeded, work)
    return np.stack(list(results))


def distortion_pool() -> ProcessPoolExecutor | None:
    """Worker processes (one per usable core; None on one core) for `distort_many`.

    Pillow and the corruption package run on one core each: on 2 cores a pool halves that step.
    Spawned, not forked: the parent's OpenMP threads do not survive a fork.
    """
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers < 2:
        return None
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
