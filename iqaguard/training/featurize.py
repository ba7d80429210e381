"""Perturb held-out images and turn every version of them into detector inputs (and FS scores).

Streams one perturbation setting at a time so only features are kept, never all perturbed pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from iqaguard.iqa import brisque
from iqaguard.training.config import BuildConfig
from iqaguard.training.data import ImageSet, as_float, batches
from iqaguard.training.heldout_samples import KeptPixels
from iqaguard.training.perturb import Perturbation, attack, distort_many
from iqaguard.training.profiles import Profile
from iqaguard.training.samples import CLEAN, Samples
from iqaguard.training.splits import Data
from iqaguard.training.squeeze import (
    CANDIDATE_SQUEEZES,
    FeatureSqueezing,
    Squeeze,
    select_squeezer,
    squeeze_distances,
)

log = logging.getLogger(__name__)



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
    keep: KeptPixels | None = None,
    pool: Executor | None = None,
) -> tuple[Samples, np.ndarray]:
    """Rows for every (image, setting): perturb (attacks target the teacher's clean answers), featurize.

    `keep`, when given, is offered every evaluated batch of perturbed pixels (for the sample images);
    `pool` (perturb.distortion_pool) shares the distortions and corruptions among worker processes.
    """
    clean_predictions = clean.teacher_logits.argmax(1)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    featurizer.teacher.requires_grad_(False)
    all_samples: list[Samples] = []
    all_squeeze: list[np.ndarray] = []
    total = sum(min(len(images), s.max_images or len(images)) for s in settings)
    progress = tqdm(total=total, desc=desc, unit="img", mininterval=1.0)
    for index, setting in enumerate(settings):
        parts = []
        n = min(len(images), setting.max_images or len(images))
        for part in batches(n, featurizer.batch_size):
            if setting.is_attack:
                targets = torch.from_numpy(clean_predictions[part])
                x = as_float(images.pixels[part])
                perturbed = attack(featurizer.teacher, x, targets, setting, generator, pgd_steps,
                                   classes=clean.teacher_logits.shape[1])
            else:
                perturbed = distort_many(as_float(images.pixels[part]).numpy(), setting, rng, pool)
            pixels = np.rint(perturbed * 255.0).astype(np.uint8)
            parts.append(featurizer(pixels))
            if keep is not None:
                flipped = parts[-1]["teacher_logits"].argmax(1) != clean_predictions[part]
                keep.offer(index, setting.is_attack, part.start, pixels, flipped)
            progress.update(part.stop - part.start)
        merged = _merge(parts)
        all_samples.append(Samples(
            image=clean.image[:n].copy(), setting=np.full(n, index), iqa=merged["iqa"],
            teacher_logits=merged["teacher_logits"], student_logits=merged["student_logits"],
            flipped=merged["teacher_logits"].argmax(1) != clean_predictions[:n], eligible=clean.eligible[:n].copy(),
        ))
        all_squeeze.append(merged.get("squeeze", np.zeros((n, 0), np.float32)))
    progress.close()
    return Samples.concat(all_samples), np.concatenate(all_squeeze)


# ----------------------------------------------------------------------------------- the build's steps


@dataclass
class FitFeatures:
    """Detector fit samples (clean and perturbed held-out training images) and the tuned FS baseline."""

    samples: Samples
    images: int  # how many fit images were perturbed
    squeezer: FeatureSqueezing
    selection: dict[str, float]  # mean AUROC of each FS candidate on the first fit images


@dataclass
class HeldOutFeatures:
    """Calibration (clean) and evaluation (clean + perturbed) samples, with Feature Squeezing scores."""

    calib: Samples
    calib_fs: np.ndarray  # FS distance columns of the calibration images
    eval: Samples
    eval_fs: np.ndarray  # FS distance columns of each evaluation sample
    images: int  # how many evaluation images were perturbed
    kept: KeptPixels  # a few evaluated perturbed images, for the build's sample folder


def fit_features(config: BuildConfig, profile: Profile, data: Data, settings: Sequence[Perturbation],
                 pgd_steps: int, teacher: nn.Module, student: nn.Module, pool: Executor | None = None) -> FitFeatures:
    """Perturb and featurize the fit images; choose the Feature Squeezing configuration on the first few.

    Only the seen settings (the prefix of `settings` with `seen`) are applied: the rest stay unseen.
    """
    seen = [s for s in settings if s.seen]
    if seen != list(settings[: len(seen)]):
        raise ValueError("seen perturbation settings must come first: fit rows index the same list as evaluation")
    settings = seen
    fit_images = min(config.fit_images or profile.fit_images, len(data.fit))
    # The first few fit images also carry every candidate squeezer's distances: FS is tuned on them.
    few = min(profile.fs_selection_images, fit_images)
    parts: list[Samples] = []
    for start, stop, clean_stop, squeezes in ((0, few, few, CANDIDATE_SQUEEZES), (few, fit_images, len(data.fit), [])):
        if clean_stop <= start:
            continue
        featurizer = Featurizer(teacher, student, squeezes)
        clean, clean_fs = featurize_clean(data.fit.subset(np.arange(start, clean_stop)), featurizer, start,
                                          f"fit clean {start}-{clean_stop}")
        parts.append(clean)
        if stop <= start:
            continue
        perturbed, perturbed_fs = featurize_perturbed(
            data.fit.subset(np.arange(start, stop)), clean.select(np.arange(len(clean)) < stop - start),
            settings, featurizer, config.seed + 2 + start, pgd_steps, f"fit perturbed {start}-{stop}", pool=pool)
        parts.append(perturbed)
        if squeezes:
            squeezer, selection = select_squeezer(clean_fs, perturbed, perturbed_fs, len(settings))
    log.info(f"[build] baseline: {squeezer.name}")
    return FitFeatures(Samples.concat(parts), fit_images, squeezer, selection)


def evaluation_plan(settings: Sequence[Perturbation], eval_images: int, available: int,
                    bounded: bool) -> tuple[int, list[Perturbation]]:
    """(how many evaluation images to perturb, the settings capped for them): the seen settings take the first
    `eval_images`; an unseen one as many as its max_images (at most `available`), or `eval_images` if `bounded`."""
    def cap(setting: Perturbation) -> int:
        own = setting.max_images or eval_images
        return min(own, eval_images) if setting.seen or bounded else own

    capped = [replace(s, max_images=cap(s)) for s in settings]
    return min(max(eval_images, *(s.max_images for s in capped)), available), capped


def held_out_features(config: BuildConfig, profile: Profile, data: Data, settings: Sequence[Perturbation],
                      pgd_steps: int, teacher: nn.Module, student: nn.Module,
                      squeezer: FeatureSqueezing, pool: Executor | None = None) -> HeldOutFeatures:
    """Featurize the clean calibration images, and the evaluation images clean and perturbed.

    The seen settings perturb the first `eval_images`; an unseen setting may cap more (Perturbation.max_images),
    unless --eval-images was given, which bounds them all.
    """
    eval_images = min(config.eval_images or profile.eval_images, len(data.eval))
    perturbed, eval_settings = evaluation_plan(settings, eval_images, len(data.eval), config.eval_images is not None)
    featurizer = Featurizer(teacher, student, squeezer.squeezes)
    offset = 10_000_000
    calib, calib_fs = featurize_clean(data.calib, featurizer, offset, "calibration clean")
    eval_clean, eval_clean_fs = featurize_clean(data.eval, featurizer, 2 * offset, "evaluation clean")
    kept = KeptPixels.for_settings(settings)
    eval_perturbed, eval_perturbed_fs = featurize_perturbed(
        data.eval.subset(np.arange(perturbed)), eval_clean.select(np.arange(len(eval_clean)) < perturbed),
        eval_settings, featurizer, config.seed + 3, pgd_steps, "evaluation perturbed", kept, pool)
    return HeldOutFeatures(calib, calib_fs, Samples.concat([eval_clean, eval_perturbed]),
                           np.concatenate([eval_clean_fs, eval_perturbed_fs]), eval_images, kept)
