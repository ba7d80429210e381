"""Fit the detector's MLP on held-out samples and calibrate its threshold on held-out clean images."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from iqaguard.models.detector import FEATURE_DIM, IQA_DIM, Detector
from iqaguard.training.featurize import HeldOutFeatures
from iqaguard.training.perturb import Perturbation
from iqaguard.training.samples import Samples

log = logging.getLogger(__name__)

FEATURE_GROUPS = {
    "detector": np.ones(FEATURE_DIM, dtype=bool),
    "iqa_only": np.arange(FEATURE_DIM) < IQA_DIM,
    "kd_only": np.arange(FEATURE_DIM) >= IQA_DIM,
}


def _targets(samples: Samples, attack_settings: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: suspicion target, reason target (1 = adversarial), and which rows train the reason head."""
    positive = samples.positive
    suspicion = torch.from_numpy(positive.astype(np.float32))
    is_attack = np.isin(samples.setting, attack_settings)
    reason = torch.from_numpy(is_attack.astype(np.float32))
    return suspicion, reason, torch.from_numpy(positive)


def _balanced_weights(labels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Per-row weights giving both classes among `rows` equal total weight (0 outside `rows`)."""
    weights = torch.zeros_like(labels)
    for value in (0.0, 1.0):
        chosen = rows & (labels == value)
        if chosen.any():
            weights[chosen] = 0.5 * float(rows.sum()) / float(chosen.sum())
    return weights


def fit_detector(
    samples: Samples,
    attack_settings: list[int],
    group: str,
    seed: int,
    hidden: int = 32,
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 3e-3,
    validation_fraction: float = 0.2,
    desc: str = "detector",
) -> tuple[Detector, dict[str, float]]:
    """Fit a Detector on the clean rows (negatives) and positive rows of `samples`.

    Perturbed rows that did not make the teacher wrong are left out of the suspicion loss (neither
    clearly safe nor wrong). The reason head learns adversarial vs low quality on positives only.
    Early stopping on a validation split *by image* (images never in the test set). Returns the
    detector (threshold still unset) and fitting statistics.
    """
    rows = samples.clean | samples.positive
    data = samples.select(rows)
    torch.manual_seed(seed)
    detector = Detector(hidden=hidden, feature_mask=torch.from_numpy(FEATURE_GROUPS[group]))
    with torch.no_grad():
        raw = detector.features(*data.tensors())
    rng = np.random.default_rng(seed)
    images = np.unique(data.image)
    held = set(rng.choice(images, size=max(1, int(len(images) * validation_fraction)), replace=False).tolist())
    is_val = torch.from_numpy(np.array([image in held for image in data.image]))
    train = ~is_val
    with torch.no_grad():
        mean = raw[train].mean(0)
        std = raw[train].std(0)
        detector.mean.copy_(mean)
        detector.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
    suspicion_t, reason_t, reason_rows = _targets(data, np.asarray(attack_settings))
    w_susp = _balanced_weights(suspicion_t, torch.ones_like(reason_rows))
    w_reason = _balanced_weights(reason_t, reason_rows)

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        susp_logit, reason_logit = detector.heads(raw[index])
        loss_s = F.binary_cross_entropy_with_logits(susp_logit[:, 0], suspicion_t[index], weight=w_susp[index])
        loss_r = F.binary_cross_entropy_with_logits(reason_logit[:, 0], reason_t[index], weight=w_reason[index])
        return loss_s + 0.5 * loss_r

    optimizer = torch.optim.AdamW(detector.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    train_index = torch.nonzero(train)[:, 0]
    val_index = torch.nonzero(is_val)[:, 0]
    best, best_state, best_epoch = math.inf, copy.deepcopy(detector.state_dict()), 0
    for epoch in tqdm(range(epochs), desc=f"fit {desc}", unit="epoch", mininterval=1.0):
        detector.train()
        order = train_index[torch.randperm(len(train_index), generator=generator)]
        for start in range(0, len(order), batch_size):
            loss = loss_of(order[start : start + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        detector.eval()
        with torch.no_grad():
            val_loss = float(loss_of(val_index))
        if val_loss < best:
            best, best_state, best_epoch = val_loss, copy.deepcopy(detector.state_dict()), epoch + 1
    detector.load_state_dict(best_state)
    detector.eval()
    stats = {"rows": len(data), "negatives": int(data.clean.sum()), "positives": int(data.positive.sum()),
             "validation_loss": best, "best_epoch": best_epoch, "epochs": epochs}
    return detector, stats


def conformal_threshold(clean_scores: np.ndarray, target_fpr: float) -> float:
    """Threshold t such that "reject iff score >= t" rejects at most `target_fpr` of exchangeable clean inputs.

    Split-conformal: with n calibration scores, take the k-th smallest, k = ceil((n+1)(1-alpha)),
    and reject only scores strictly above it. Needs n >= 1/alpha - 1 calibration scores.
    """
    scores = np.sort(np.asarray(clean_scores, dtype=np.float64))
    n = len(scores)
    k = math.ceil((n + 1) * (1.0 - target_fpr))
    if k > n:
        raise ValueError(f"{n} clean calibration images cannot calibrate a {target_fpr:.1%} false-rejection rate")
    return float(np.nextafter(np.float32(scores[k - 1]), np.float32(np.inf)))


@torch.no_grad()
def detector_scores(
    detector: torch.nn.Module, samples: Samples, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """(suspicion [N], P(adversarial) [N]) of `detector` on every row of `samples`."""
    iqa, teacher, student = samples.tensors()
    suspicion, reason = [], []
    for start in range(0, len(samples), batch_size):
        part = slice(start, start + batch_size)
        s, r = detector.scores(iqa[part], teacher[part], student[part])
        suspicion.append(s[:, 0])
        reason.append(r[:, 0])
    return torch.cat(suspicion).numpy(), torch.cat(reason).numpy()


# ------------------------------------------------------------------------------------ the build's step


@dataclass
class Detectors:
    """The detector and its ablations (one per feature group), calibrated, and every method's evaluation scores."""

    members: dict[str, Detector]  # by feature group; "detector" is the one exported
    fit_stats: dict[str, object]
    thresholds: dict[str, float]  # per feature group, and "feature_squeezing"
    scores: dict[str, np.ndarray]  # on the evaluation samples, same keys as thresholds
    reason: np.ndarray | None  # the exported detector's P(adversarial) on the evaluation samples


def fit_and_calibrate(fit: Samples, held_out: HeldOutFeatures, settings: Sequence[Perturbation], seed: int,
                      target_fpr: float) -> Detectors:
    """Fit a detector per feature group, set each threshold (and FS's) by split-conformal calibration."""
    attack_settings = [i for i, s in enumerate(settings) if s.is_attack]
    result = Detectors({}, {}, {}, {}, None)
    for group in FEATURE_GROUPS:
        detector, stats = fit_detector(fit, attack_settings, group, seed, desc=group)
        calib_scores, _ = detector_scores(detector, held_out.calib)
        detector.threshold = conformal_threshold(calib_scores, target_fpr)
        result.members[group], result.fit_stats[group], result.thresholds[group] = detector, stats, detector.threshold
        result.scores[group], group_reason = detector_scores(detector, held_out.eval)
        if group == "detector":
            result.reason = group_reason
    result.thresholds["feature_squeezing"] = conformal_threshold(held_out.calib_fs.max(1), target_fpr)
    result.scores["feature_squeezing"] = held_out.eval_fs
    log.info(f"[build] detector threshold {result.thresholds['detector']:.6f} (calibrated on {len(held_out.calib)} "
             f"clean images for ≤ {target_fpr:.0%} false rejections)")
    return result
