"""The guard methods a build fits, calibrates and evaluates side by side: names in one enum, one interface.

The exported detector (an MLP on IQA + KD features; on photo sets the mean of it and one on KD alone), its ablations
(that single IQA + KD MLP, IQA only, KD only) and the Feature Squeezing baseline all answer the same
three questions: fit on the fit samples, score any samples, and (done alike for all, by
``calibrate_threshold``) calibrate a threshold on clean images.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

import numpy as np


class Method(StrEnum):
    """A guard method; the value is its key in report.json and the build's score tables."""

    DETECTOR = "detector"
    SINGLE_MLP = "single_mlp"
    IQA_ONLY = "iqa_only"
    KD_ONLY = "kd_only"
    FEATURE_SQUEEZING = "feature_squeezing"

    @property
    def title(self) -> str:
        """How reports name the method."""
        return _TITLES[self]


_TITLES = {
    Method.DETECTOR: "detector (IQA + KD)",
    Method.SINGLE_MLP: "single MLP (IQA + KD)",
    Method.IQA_ONLY: "IQA only",
    Method.KD_ONLY: "KD only",
    Method.FEATURE_SQUEEZING: "Feature Squeezing",
}


class Guard(Protocol):
    """What every method offers the build: fit, then score (higher = more suspicious)."""

    method: Method

    def fit(self, samples: object, attack_settings: list[int], seed: int) -> dict[str, object]:
        """Fit on the fit samples (the rows of `attack_settings` are attacks); return fitting statistics."""
        ...

    def score(self, samples: object, squeeze_columns: np.ndarray) -> np.ndarray:
        """Suspicion score [N] of each sample row (`squeeze_columns`: its Feature Squeezing distances)."""
        ...
