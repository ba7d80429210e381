"""Perturb held-out images and turn every version of them into detector inputs (and FS scores).

Streams one perturbation setting at a time so only features are kept, never all perturbed pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from iqaguard.iqa import brisque
from iqaguard.training.data import ImageSet, as_float, batches
from iqaguard.training.perturb import Perturbation, attack, distort
from iqaguard.training.samples import CLEAN, Samples
from iqaguard.training.squeeze import Squeeze, squeeze_distances


@dataclass
class Featurizer:
    """The frozen networks and the squeezers whose L1 distances are wanted alongside the detector inputs."""

    teacher: nn.Module
    student: nn.Module
    squeezes: Sequence[Squeeze] = ()
    batch_size: int = 256

    @torch.no_grad()
    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """IQA [N,37], teacher/student logits [N,C] and one FS distance column per squeezer for uint8 pixels."""
        x = as_float(pixels)
        teacher_logits, teacher_probs = self.teacher(x)
        out = {
            "iqa": brisque(x),
            "teacher_logits": teacher_logits.numpy(),
            "student_logits": self.student(x).numpy(),
        }
        if self.squeezes:
            out["squeeze"] = squeeze_distances(self.teacher, x, self.squeezes, teacher_probs).numpy()
        return out


def _merge(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def featurize_clean(images: ImageSet, featurizer: Featurizer, offset: int, desc: str) -> tuple[Samples, np.ndarray]:
    """Clean rows for `images` (image ids start at `offset`) and their FS distance columns."""
    parts = [featurizer(images.pixels[part]) for part in tqdm(
        list(batches(len(images), featurizer.batch_size)), desc=desc, unit="batch", mininterval=1.0)]
    merged = _merge(parts)
    n = len(images)
    predictions = merged["teacher_logits"].argmax(1)
    eligible = np.ones(n, bool) if images.labels is None else predictions == images.labels
    samples = Samples(
        image=np.arange(offset, offset + n), setting=np.full(n, CLEAN), iqa=merged["iqa"],
        teacher_logits=merged["teacher_logits"], student_logits=merged["student_logits"],
        flipped=np.zeros(n, bool), eligible=eligible,
    )
    return samples, merged.get("squeeze", np.zeros((n, 0), np.float32))


def featurize_perturbed(
    images: ImageSet,
    clean: Samples,
    settings: Sequence[Perturbation],
    featurizer: Featurizer,
    seed: int,
    pgd_steps: int,
    desc: str,
) -> tuple[Samples, np.ndarray]:
    """Rows for every (image, setting): perturb (attacks target the teacher's clean answers), featurize."""
    clean_predictions = clean.teacher_logits.argmax(1)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    featurizer.teacher.requires_grad_(False)
    all_samples: list[Samples] = []
    all_squeeze: list[np.ndarray] = []
    progress = tqdm(total=len(settings) * len(images), desc=desc, unit="img", mininterval=1.0)
    for index, setting in enumerate(settings):
        parts = []
        for part in batches(len(images), featurizer.batch_size):
            if setting.is_attack:
                targets = torch.from_numpy(clean_predictions[part])
                x = as_float(images.pixels[part])
                perturbed = attack(featurizer.teacher, x, targets, setting, generator, pgd_steps)
            else:
                perturbed = np.stack([distort(p, setting, rng) for p in as_float(images.pixels[part]).numpy()])
            parts.append(featurizer(np.rint(perturbed * 255.0).astype(np.uint8)))
            progress.update(part.stop - part.start)
        merged = _merge(parts)
        n = len(images)
        all_samples.append(Samples(
            image=clean.image.copy(), setting=np.full(n, index), iqa=merged["iqa"],
            teacher_logits=merged["teacher_logits"], student_logits=merged["student_logits"],
            flipped=merged["teacher_logits"].argmax(1) != clean_predictions, eligible=clean.eligible.copy(),
        ))
        all_squeeze.append(merged.get("squeeze", np.zeros((n, 0), np.float32)))
    progress.close()
    return Samples.concat(all_samples), np.concatenate(all_squeeze)
