"""Feature Squeezing baseline (Xu, Evans & Qi, NDSS 2018).

Score = max over squeezers of the L1 distance between the teacher's softmax on the input and on
the squeezed input. Squeezers: colour bit-depth reduction and a k×k median filter, both ART's
preprocessors (FeatureSqueezing, SpatialSmoothing). ART has the squeezers but not the detector (the
max-L1 score and its threshold), which is Xu et al.'s rule, here; its scipy median also ran 1.5–2×
faster than a batched torch one (measured at 28² and 224²), so FS's measured compute is not inflated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from iqaguard.models.wrappers import logits_of
from iqaguard.training.metrics import auroc
from iqaguard.training.samples import Samples


def reduce_bit_depth(pixels: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantise [0,1] pixels to 2**bits levels per channel (ART's FeatureSqueezing preprocessor)."""
    from art.defences.preprocessor import FeatureSqueezing as ArtBitDepth

    squeezed, _ = ArtBitDepth(clip_values=(0.0, 1.0), bit_depth=bits)(pixels.numpy())
    return torch.from_numpy(np.ascontiguousarray(squeezed, dtype=np.float32))


def median_filter(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """k×k median filter per channel of [N,C,H,W] pixels (ART's SpatialSmoothing: scipy, reflected borders)."""
    from art.defences.preprocessor import SpatialSmoothing

    smoothed, _ = SpatialSmoothing(window_size=size, channels_first=True, clip_values=(0.0, 1.0))(pixels.numpy())
    return torch.from_numpy(np.ascontiguousarray(smoothed, dtype=np.float32))


@dataclass(frozen=True)
class Squeeze:
    """One squeezer: ("bits", depth) or ("median", window size)."""

    kind: str
    size: int

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.kind == "bits":
            return reduce_bit_depth(pixels, self.size)
        if self.kind == "median":
            return median_filter(pixels, self.size)
        raise ValueError(f"unknown squeezer {self.kind!r}")


@dataclass(frozen=True)
class FeatureSqueezing:
    """The configured detector: score = max of the bit-depth and median squeezers' L1 distances."""

    bits: int
    median: int

    @property
    def name(self) -> str:
        return f"feature squeezing (bit depth {self.bits}, median {self.median}x{self.median})"

    @property
    def squeezes(self) -> tuple[Squeeze, Squeeze]:
        return Squeeze("bits", self.bits), Squeeze("median", self.median)

    @torch.no_grad()
    def score(
        self, teacher: nn.Module, pixels: torch.Tensor, teacher_probs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-image FS score [N]; pass `teacher_probs` on `pixels` when already computed (serving has them)."""
        return squeeze_distances(teacher, pixels, self.squeezes, teacher_probs).max(dim=1).values


@torch.no_grad()
def squeeze_distances(
    teacher: nn.Module, pixels: torch.Tensor, squeezes: Sequence[Squeeze], teacher_probs: torch.Tensor | None = None
) -> torch.Tensor:
    """L1 distance [N, len(squeezes)] between the teacher's softmax on `pixels` and on each squeezed version."""
    probs = _probs(teacher, pixels) if teacher_probs is None else teacher_probs
    return torch.stack([(probs - _probs(teacher, squeeze(pixels))).abs().sum(dim=1) for squeeze in squeezes], dim=1)


def _probs(teacher: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits_of(teacher(pixels)), dim=1)


CANDIDATES = [FeatureSqueezing(bits, median) for bits in (1, 2, 3, 4, 5) for median in (2, 3)]
CANDIDATE_SQUEEZES = list(dict.fromkeys(squeeze for candidate in CANDIDATES for squeeze in candidate.squeezes))


def select_squeezer(clean_fs: np.ndarray, perturbed: Samples, perturbed_fs: np.ndarray,
                    n_settings: int) -> tuple[FeatureSqueezing, dict[str, float]]:
    """Give the baseline its best shot: the bit depth and median size with the best mean AUROC on fit images.

    `clean_fs` and `perturbed_fs` hold one distance column per entry of CANDIDATE_SQUEEZES.
    """
    column = {squeeze: i for i, squeeze in enumerate(CANDIDATE_SQUEEZES)}
    results = {}
    for candidate in CANDIDATES:
        columns = [column[squeeze] for squeeze in candidate.squeezes]
        clean_score = clean_fs[:, columns].max(1)
        score = perturbed_fs[:, columns].max(1)
        per_setting = [auroc(clean_score, score[(perturbed.setting == s) & perturbed.positive])
                       for s in range(n_settings)]
        results[candidate.name] = float(np.nanmean(per_setting))
    best = max(CANDIDATES, key=lambda c: results[c.name])
    return best, results
