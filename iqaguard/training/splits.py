"""The build's image sets: a profile's images loaded and split into disjoint roles."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from iqaguard.training.data import ImageSet, crop_views, load_fashion, load_folder

if TYPE_CHECKING:
    from iqaguard.training.config import BuildConfig
    from iqaguard.training.profiles import Profile


MIN_ROLE_IMAGES = 4  # fewest images for evaluation, detector fit and distillation


def split(count: int, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Disjoint random index sets of the given sizes (the last one may be -1: the rest)."""
    order = np.random.default_rng(seed).permutation(count)
    parts, start = [], 0
    for size in sizes:
        stop = count if size < 0 else min(count, start + size)
        parts.append(np.sort(order[start:stop]))
        start = stop
    return parts


def indices_hash(index: np.ndarray, pixels: np.ndarray) -> str:
    """Short hash of a chosen index set and the first of its images (identifies a training set)."""
    digest = hashlib.sha256(np.ascontiguousarray(index).tobytes())
    digest.update(np.ascontiguousarray(pixels[index[:256]]).tobytes())
    return digest.hexdigest()[:16]


@dataclass
class Data:
    """The build's image sets: teacher/student training, detector fit pool, calibration, evaluation."""

    train: ImageSet
    fit: ImageSet
    calib: ImageSet
    eval: ImageSet
    test: ImageSet | None
    labels: list[str]
    description: dict[str, object]


def load_data(config: BuildConfig, profile: Profile) -> Data:
    """Load and split the profile's images (all through the serving decoder/resizer)."""
    return profile.load_data(config, profile)


def fashion_data(config: BuildConfig, profile: Profile) -> Data:
    """Fashion-MNIST: training images (teacher, student) and a held-out fit pool; test images calibrate and evaluate."""
    if config.images is not None:
        raise ValueError(f"--images does not apply to the {profile.name} profile: it reads Fashion-MNIST")
    train_all, test = load_fashion(profile.size)
    fit_index, train_index = split(len(train_all), [config.fit_pool or profile.fit_pool, -1], config.seed + 4)
    if config.subset:
        train_index = train_index[: config.subset]
    eval_clean = config.eval_clean or profile.eval_clean
    calib_index, eval_index = split(len(test), [config.calib_images or profile.calib_images, eval_clean],
                                    config.seed + 5)
    scored = test if config.test_images is None else test.subset(np.arange(min(config.test_images, len(test))))
    data = Data(train_all.subset(train_index), train_all.subset(fit_index), test.subset(calib_index),
                test.subset(eval_index), scored, profile.labels(), {})
    data.description = {
        "source": train_all.source.removesuffix(" (train)"),
        "teacher/student training": f"{len(train_index)} Fashion-MNIST training images",
        "detector fit pool": f"{len(fit_index)} training images held out from teacher/student training",
        "calibration": f"{len(calib_index)} test images (clean)",
        "evaluation": f"{len(eval_index)} test images (clean negatives); perturbed: see settings",
        "train_hash": indices_hash(train_index, train_all.pixels),
    }
    return data


def calibration_minimum(target_fpr: float, confidence: float) -> int:
    """Fewest clean calibration images that can promise ≤ `target_fpr` false rejections with `confidence`."""
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - target_fpr))


def folder_roles(count: int, config: BuildConfig, profile: Profile) -> list[int]:
    """Sizes of calibration, evaluation, detector fit and distillation for `count` images (a fifth each at most,
    calibration at least what its promise needs, distillation the rest); ValueError when `count` is too few."""
    calib_min = calibration_minimum(config.target_fpr, config.frr_confidence)

    def roles(n: int) -> list[int]:
        calib = max(calib_min, min(config.calib_images or profile.calib_images, n // 5))
        sizes = [calib, min(config.eval_clean or profile.eval_clean, n // 5), min(config.fit_pool or profile.fit_pool,
                                                                                   n // 5)]
        return [*sizes, n - sum(sizes)]

    if min(roles(count)) < MIN_ROLE_IMAGES:
        needed = next(n for n in range(count + 1, 100 * calib_min + 100) if min(roles(n)) >= MIN_ROLE_IMAGES)
        raise ValueError(
            f"too few images: {count} usable under {config.images}; this build needs at least {needed}: "
            f"{calib_min} clean images to calibrate ≤ {config.target_fpr:.0%} false rejections with "
            f"{config.frr_confidence:.1%} confidence (--frr-confidence lowers that), and at least "
            f"{MIN_ROLE_IMAGES} each for evaluation, detector fit and distillation")
    return roles(count)


def folder_data(config: BuildConfig, profile: Profile) -> Data:
    """A folder of images split disjointly into calibration, evaluation, detector fit and distillation.

    No labels are needed. Where the profile reads labels from file names (`image_labels`), they are kept
    only on the held-out images (`test`), to measure the teacher's top-1; the detector never sees them.
    Distillation images become `profile.distill_views` views each (the image, then random crops).
    """
    if config.images is None:
        raise ValueError(f"the {profile.name} profile needs --images DIR (a folder of images; labels not needed)")
    images = load_folder(Path(config.images), profile.size)
    n = len(images)
    sizes = folder_roles(n, config, profile)
    calib_index, eval_index, fit_index, train_index = split(n, sizes, config.seed + 4)
    if config.subset:
        train_index = train_index[: config.subset]
    held_index = np.sort(np.concatenate([fit_index, calib_index, eval_index]))
    labels = profile.image_labels(images.files) if profile.image_labels is not None else None
    test = ImageSet(images.pixels[held_index], None if labels is None else labels[held_index], images.source)
    train = images.subset(train_index)
    views = profile.distill_views
    if views > 1:
        train = ImageSet(crop_views(train.files, profile.size, views, config.seed + 6), None, images.source)
    data = Data(train, images.subset(fit_index), images.subset(calib_index), images.subset(eval_index), test,
                profile.labels(), {})
    data.description = {
        "source": images.source,
        "student distillation": f"{len(train_index)} images" + (
            f" × {views} views (the image and {views - 1} random resized crops of the original, through "
            "the serving resize)" if views > 1 else " (and their mirror images)"),
        "detector fit pool": f"{len(fit_index)} images",
        "calibration": f"{len(calib_index)} images (clean)",
        "evaluation": f"{len(eval_index)} images",
        "held out from distillation (teacher top-1, student agreement)": f"{len(held_index)} images (fit pool, "
        "calibration, evaluation)" + ("; labels from file names" if labels is not None else "; no labels"),
        "train_hash": indices_hash(np.arange(len(train)), train.pixels) + f"-{views}",
    }
    return data
