"""Perturbations of held-out images: white-box L∞ attacks on the teacher and quality distortions.

Every perturbed image is returned *as the server would see it*: encoded with Pillow (PNG, or JPEG
for the JPEG distortion), decoded by `iqaguard.imaging.decode_image` and resized by `to_pixels`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageFilter
from torch import nn

from iqaguard.imaging import decode_image, to_pixels

ATTACKS = ("fgsm", "pgd")
DISTORTIONS = ("noise", "blur", "jpeg", "contrast", "resample")


@dataclass(frozen=True)
class Perturbation:
    """One perturbation setting: kind (an attack or a distortion), its strength, and a readable name."""

    kind: str
    strength: float

    @property
    def is_attack(self) -> bool:
        return self.kind in ATTACKS

    @property
    def name(self) -> str:
        if self.is_attack:
            return f"{self.kind} eps={round(self.strength * 255, 2):g}/255"
        unit = {"noise": "sigma", "blur": "radius", "jpeg": "quality", "contrast": "factor", "resample": "factor"}
        return f"{self.kind} {unit[self.kind]}={self.strength:g}"


# ---------------------------------------------------------------------------------------------- attacks


def _logits(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    result = model(pixels)
    return result[0] if isinstance(result, tuple) else result


def fgsm(model: nn.Module, pixels: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one signed-gradient step of size eps, clipped to [0,1]."""
    x = pixels.clone().requires_grad_(True)
    loss = F.cross_entropy(_logits(model, x), targets)
    (grad,) = torch.autograd.grad(loss, x)
    return (pixels + eps * grad.sign()).clamp_(0.0, 1.0).detach()


def pgd(
    model: nn.Module,
    pixels: torch.Tensor,
    targets: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected Gradient Descent, L∞ (Madry et al. 2018): random start in the eps-ball, `steps` signed steps.

    Untargeted: maximises the cross-entropy of `targets` (the teacher's clean answers), projecting onto
    the eps-ball around `pixels` and onto [0,1] after every step.
    """
    alpha = 2.5 * eps / steps if step_size is None else step_size
    noise = torch.rand(pixels.shape, generator=generator) * 2.0 - 1.0
    x = (pixels + eps * noise).clamp(0.0, 1.0)
    for _ in range(steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(_logits(model, x), targets)
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x = x + alpha * grad.sign()
            x = torch.minimum(torch.maximum(x, pixels - eps), pixels + eps).clamp_(0.0, 1.0)
    return x.detach()


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


def distort(pixels: np.ndarray, perturbation: Perturbation, rng: np.random.Generator) -> np.ndarray:
    """Apply one quality distortion to [3,H,W] served pixels and return the served result."""
    size = (pixels.shape[1], pixels.shape[2])
    image = to_image(pixels)
    kind, strength = perturbation.kind, perturbation.strength
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


def attack(
    model: nn.Module,
    pixels: torch.Tensor,
    targets: torch.Tensor,
    perturbation: Perturbation,
    generator: torch.Generator,
    pgd_steps: int = 10,
) -> np.ndarray:
    """Run one attack on a batch and return the served (PNG round-tripped) adversarial pixels [N,3,H,W]."""
    if perturbation.kind == "fgsm":
        adversarial = fgsm(model, pixels, targets, perturbation.strength)
    elif perturbation.kind == "pgd":
        adversarial = pgd(model, pixels, targets, perturbation.strength, steps=pgd_steps, generator=generator)
    else:
        raise ValueError(f"unknown attack {perturbation.kind!r}")
    size = (pixels.shape[2], pixels.shape[3])
    return np.stack([served(to_image(x), size) for x in adversarial.numpy()])
