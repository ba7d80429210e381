"""A few of the evaluation images, written as files: the load tests' clean/distorted/adversarial pool.

The evaluation step streams its perturbed images (only features are kept), so a `KeptPixels` rides
along and keeps the first few evaluated uint8 pixels of the settings the pool may want. After the
evaluation has said which distortions are severe, `write_samples` writes

    <reports>/samples/clean/clean_0007.png
    <reports>/samples/distorted/blur_radius1.8_0003.png      (severe distortion settings)
    <reports>/samples/adversarial/pgd_eps8_0003.png          (strongest PGD, images that flipped the teacher)

as PNG (lossless: the files decode to exactly the pixels the build evaluated; the number is the
image's index in the evaluation set, so an adversarial file and its clean original pair up).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from iqaguard.training.perturb import Perturbation

SAMPLES_DIR = "samples"
SAMPLES_PER_KIND = 32


def slug(setting: Perturbation) -> str:
    """A file-name form of the setting's name: "pgd eps=8/255" -> "pgd_eps8", "blur radius=1.8" -> "blur_radius1.8"."""
    return setting.name.removesuffix("/255").replace("=", "").replace(" ", "_")


def strongest_pgd(settings: Sequence[Perturbation]) -> int | None:
    """Index of the PGD setting with the largest budget, or None without PGD."""
    pgd = [i for i, s in enumerate(settings) if s.kind == "pgd"]
    return max(pgd, key=lambda i: settings[i].strength) if pgd else None


@dataclass
class KeptPixels:
    """Up to `limit` evaluated images (uint8 [3,H,W] and their evaluation-set index) per wanted setting.

    Attack settings keep only images whose perturbation flipped the teacher's answer.
    """

    wanted: frozenset[int]
    limit: int = SAMPLES_PER_KIND
    kept: dict[int, list[tuple[int, np.ndarray]]] = field(default_factory=dict)

    @classmethod
    def for_settings(cls, settings: Sequence[Perturbation], limit: int = SAMPLES_PER_KIND) -> KeptPixels:
        """Keep the strongest PGD setting and every seen distortion (which are severe is known only later)."""
        wanted = {i for i, s in enumerate(settings) if not s.is_attack and s.seen}
        pgd = strongest_pgd(settings)
        return cls(frozenset(wanted | ({pgd} if pgd is not None else set())), limit)

    def offer(self, setting: int, is_attack: bool, first_image: int, pixels: np.ndarray, flipped: np.ndarray) -> None:
        """Consider one evaluated batch of `setting` (images first_image, first_image+1, ...)."""
        if setting not in self.wanted:
            return
        kept = self.kept.setdefault(setting, [])
        for row in np.flatnonzero(flipped) if is_attack else range(len(pixels)):
            if len(kept) >= self.limit:
                return
            kept.append((first_image + int(row), pixels[row].copy()))


def _png(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), mode="RGB").save(path, format="PNG")


def write_samples(folder: Path, clean: np.ndarray, kept: KeptPixels, settings: Sequence[Perturbation],
                  severe: Sequence[str]) -> dict[str, object]:
    """Write the sample folder (replacing any older one) and return what it holds, for the report and manifests.

    clean: the clean evaluation images (uint8 [N,3,H,W]); severe: names of the severe distortion settings.
    Distorted images are taken in turn from each severe setting; when no distortion is severe, from
    the strongest level of each distortion kind (the report says which).
    """
    distortions = [i for i in kept.wanted if not settings[i].is_attack]
    chosen = [i for i in distortions if settings[i].name in severe]
    rule = "severe distortion settings"
    if not chosen:
        strongest: dict[str, int] = {}
        for i in distortions:  # "strongest" = the last level listed, as profiles list mild to severe
            strongest[settings[i].kind] = max(strongest.get(settings[i].kind, i), i)
        chosen, rule = sorted(strongest.values()), "no distortion was severe: strongest level of each kind"
    queues = [[(slug(settings[i]), index, pixels) for index, pixels in kept.kept.get(i, [])] for i in sorted(chosen)]
    distorted = []
    for turn in range(kept.limit):
        distorted += [queue[turn] for queue in queues if turn < len(queue)]
    pgd = strongest_pgd(settings)
    files = {
        "clean": [("clean", index, clean[index]) for index in range(min(kept.limit, len(clean)))],
        "distorted": distorted[: kept.limit],
        "adversarial": [(slug(settings[pgd]), index, pixels) for index, pixels in kept.kept.get(pgd, [])]
        if pgd is not None else [],
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    for kind, items in files.items():
        (staging / kind).mkdir()
        for name, index, pixels in items:
            _png(pixels, staging / kind / f"{name}_{index:04d}.png")
    old = folder.with_name(f".{folder.name}-old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)
    return {
        "path": str(folder.resolve()),
        "counts": {kind: len(items) for kind, items in files.items()},
        "distorted_settings": [settings[i].name for i in sorted(chosen)],
        "distorted_rule": rule,
        "adversarial_setting": settings[pgd].name if pgd is not None else None,
        "format": "PNG, the evaluated pixels exactly",
    }
