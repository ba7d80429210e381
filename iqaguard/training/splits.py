"""The build's image sets: a profile's images loaded and split into disjoint roles."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from iqaguard.training.data import ImageSet, load_fashion, load_folder

if TYPE_CHECKING:
    from iqaguard.training.config import BuildConfig
    from iqaguard.training.profiles import Profile


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


def folder_data(config: BuildConfig, profile: Profile) -> Data:
    """A folder of unlabeled images split into calibration, evaluation, fit pool and the rest for distillation."""
    if config.images is None:
        raise ValueError(f"the {profile.name} profile needs --images DIR (a folder of natural images; "
                         "labels not needed)")
    fit_pool = config.fit_pool or profile.fit_pool
    calib = config.calib_images or profile.calib_images
    images = load_folder(Path(config.images), profile.size)
    n = len(images)
    # Disjoint: calibration, evaluation, detector fit, and the rest for distillation (a fifth each at most).
    sizes = [min(calib, n // 5), min(config.eval_clean or profile.eval_clean, n // 5), min(fit_pool, n // 5), -1]
    calib_index, eval_index, fit_index, train_index = split(n, sizes, config.seed + 4)
    if config.subset:
        train_index = train_index[: config.subset]
    data = Data(images.subset(train_index), images.subset(fit_index), images.subset(calib_index),
                images.subset(eval_index), None, profile.labels(), {})
    data.description = {
        "source": images.source,
        "student distillation": f"{len(train_index)} images",
        "detector fit pool": f"{len(fit_index)} images",
        "calibration": f"{len(calib_index)} images",
        "evaluation": f"{len(eval_index)} images",
        "train_hash": indices_hash(train_index, images.pixels),
    }
    return data
