"""The LIVE-trained BRISQUE quality model: feature scaling + RBF epsilon-SVR, vectorised."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from iqaguard.contract import IQA_FEATURES

MODEL_FILE = Path(__file__).with_name("brisque_live.npz")
N_FEATURES = IQA_FEATURES


@dataclass(frozen=True)
class QualityModel:
    """score(f) = sum_i dual_coef_i * exp(-gamma * |scale(f) - sv_i|^2) - rho (as LIBSVM predicts)."""

    support_vectors: np.ndarray  # [S, 36], in scaled feature space
    dual_coef: np.ndarray  # [S]
    rho: float
    gamma: float
    feature_min: np.ndarray  # [36]
    feature_max: np.ndarray  # [36]

    def scale(self, features: np.ndarray) -> np.ndarray:
        """Map raw features linearly so the training range [min, max] becomes [-1, 1]."""
        return -1.0 + 2.0 * (features - self.feature_min) / (self.feature_max - self.feature_min)

    def score(self, features: np.ndarray) -> np.ndarray:
        """BRISQUE scores (float64 [N]) of raw feature rows ``features`` [N, 36]."""
        z = self.scale(np.asarray(features, np.float64))
        sv = self.support_vectors
        # Products are broadcast per row (one BLAS call per row, same shapes whatever the batch),
        # so a row's score does not depend on the rows beside it.
        cross = np.matmul(z[:, None, :], sv.T)[:, 0]
        sq_dist = (z * z).sum(axis=1)[:, None] + (sv * sv).sum(axis=1)[None, :] - 2.0 * cross
        np.maximum(sq_dist, 0.0, out=sq_dist)
        return np.matmul(np.exp(-self.gamma * sq_dist)[:, None, :], self.dual_coef[:, None])[:, 0, 0] - self.rho


@cache
def load_model() -> QualityModel:
    """The packaged model (``brisque_live.npz``; provenance in NOTICE, rebuilt by convert_model)."""
    with np.load(MODEL_FILE, allow_pickle=False) as data:
        model = QualityModel(
            support_vectors=data["support_vectors"],
            dual_coef=data["dual_coef"],
            rho=float(data["rho"]),
            gamma=float(data["gamma"]),
            feature_min=data["feature_min"],
            feature_max=data["feature_max"],
        )
    if model.support_vectors.shape[1] != N_FEATURES:
        raise ValueError(f"{MODEL_FILE} does not describe a {N_FEATURES}-feature model")
    return model
