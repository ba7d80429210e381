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
from scipy.stats import beta, binom
from tqdm import tqdm

from iqaguard.models.detector import IQA_DIM, Detector, DetectorEnsemble, group_mask
from iqaguard.training.featurize import FitFeatures, HeldOutFeatures
from iqaguard.training.methods import Guard, Method
from iqaguard.training.metrics import auroc
from iqaguard.training.perturb import Perturbation
from iqaguard.training.samples import Samples
from iqaguard.training.squeeze import FeatureSqueezing

log = logging.getLogger(__name__)

# The MLP methods and their feature groups; the exported detector (Method.DETECTOR) averages those its profile
# names (Profile.detector_members).
FEATURE_GROUPS = {
    Method.SINGLE_MLP: group_mask(True, True).bool().numpy(),
    Method.IQA_ONLY: group_mask(True, False).bool().numpy(),
    Method.KD_ONLY: group_mask(False, True).bool().numpy(),
}
# A member after the first joins the exported detector only if it separates the fit's validation images (clean
# vs perturbed-and-wrong, seen perturbations) at least this well: a weak student's KD signals would otherwise
# pull a good first member down (a 1-epoch test build: its KD-only MLP scored 0.04 on attacks; averaged in, it
# cut strong-PGD detection from 80% to 62%). Full builds' KD-only MLPs scored 0.71–0.89 (natural; its validation
# split holds ~8 perturbed photos) and 0.98 (fashion) over 7 fit seeds: the bar sits clear of chance, below those.
MIN_MEMBER_AUROC = 0.65


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
    quality_dropout: float = 0.0,
) -> tuple[Detector, dict[str, float]]:
    """Fit a Detector on the clean rows (negatives) and positive rows of `samples`.

    Perturbed rows that did not make the teacher wrong are left out of the suspicion loss (neither
    clearly safe nor wrong). The reason head learns adversarial vs low quality on positives only.
    Early stopping on a validation split *by image* (images never in the test set). Returns the
    detector (threshold still unset) and fitting statistics.

    `quality_dropout`: where the group has both IQA and KD features, each training row's IQA features
    are replaced by their mean with this probability (modality dropout), so the detector cannot rest on
    IQA alone: FGSM and PGD leave noise BRISQUE sees, minimal attacks such as CW-L2 and DeepFool on
    natural photos do not (natural set, 3 detector seeds: unseen-attack AUROC 0.752 -> 0.791 at 0.5,
    seen attacks and corruptions no worse). Profile.quality_dropout sets it per model set.
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

    mask = FEATURE_GROUPS[group]
    dropout = quality_dropout if mask[:IQA_DIM].any() and mask[IQA_DIM:].any() else 0.0
    generator = torch.Generator().manual_seed(seed)

    def loss_of(index: torch.Tensor, train_rows: bool = True) -> torch.Tensor:
        inputs = raw[index]
        if train_rows and dropout > 0.0:
            dropped = torch.rand(len(index), generator=generator) < dropout
            inputs = inputs.clone()
            inputs[dropped, :IQA_DIM] = detector.mean[:IQA_DIM]
        susp_logit, reason_logit = detector.heads(inputs)
        loss_s = F.binary_cross_entropy_with_logits(susp_logit[:, 0], suspicion_t[index], weight=w_susp[index])
        loss_r = F.binary_cross_entropy_with_logits(reason_logit[:, 0], reason_t[index], weight=w_reason[index])
        return loss_s + 0.5 * loss_r

    optimizer = torch.optim.AdamW(detector.parameters(), lr=lr, weight_decay=1e-4)
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
            val_loss = float(loss_of(val_index, train_rows=False))
        if val_loss < best:
            best, best_state, best_epoch = val_loss, copy.deepcopy(detector.state_dict()), epoch + 1
    detector.load_state_dict(best_state)
    detector.eval()
    with torch.no_grad():
        val_suspicion = detector.heads(raw[val_index])[0][:, 0].numpy()
    val_positive = suspicion_t[val_index].numpy() > 0.5
    stats = {"rows": len(data), "negatives": int(data.clean.sum()), "positives": int(data.positive.sum()),
             "validation_loss": best, "best_epoch": best_epoch, "epochs": epochs, "quality_dropout": dropout,
             # clean vs positive rows of the validation images (seen perturbations, never trained on)
             "validation_auroc": auroc(val_suspicion[~val_positive], val_suspicion[val_positive])}
    return detector, stats


@dataclass(frozen=True)
class Calibration:
    """A threshold and what it promises on clean inputs exchangeable with the calibration images."""

    threshold: float
    calibration_images: int
    max_rate: float  # the promised false-rejection rate ...
    confidence: float  # ... holds with at least this probability over the draw of calibration images
    expected_rate: float  # mean false-rejection rate over that draw
    rate_bound: float  # the rate that is exceeded with probability at most 1 - confidence (<= max_rate)

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def _exceed_probability(n: int, k: int, rate: float) -> float:
    """P(false-rejection rate > `rate`) when the k-th smallest of n clean calibration scores is the cut.

    Scores strictly above the k-th smallest are rejected; the accepted mass U_(k) of a new clean score's
    distribution is Beta(k, n + 1 - k), so P(1 - U_(k) > rate) = P(Binomial(n, 1 - rate) >= k).
    """
    return float(binom.sf(k - 1, n, 1.0 - rate))


def calibrate_threshold(clean_scores: np.ndarray, max_rate: float, confidence: float = 0.95) -> Calibration:
    """Threshold t ("reject iff score >= t") with P(false-rejection rate <= `max_rate`) >= `confidence`.

    Split-conformal with a PAC guarantee: the cut is the k-th smallest of n clean calibration scores
    for the largest k whose Beta-distributed false-rejection rate exceeds `max_rate` with probability
    at most 1 - `confidence`. The plain conformal cut (expected rate = max_rate) misses its own target
    about half the time; this one trades a slightly lower expected rate for the guarantee.
    """
    if not 0.0 < max_rate < 1.0 or not 0.0 < confidence < 1.0:
        raise ValueError(f"max_rate and confidence must lie in (0, 1), got {max_rate} and {confidence}")
    scores = np.sort(np.asarray(clean_scores, dtype=np.float64))
    n = len(scores)
    # The exceed probability falls as k grows; take the smallest k that meets the confidence.
    k = next((k for k in range(math.floor(n * (1.0 - max_rate)), n + 1)
              if _exceed_probability(n, k, max_rate) <= 1.0 - confidence), None)
    if k is None:
        raise ValueError(f"{n} clean calibration images cannot promise ≤ {max_rate:.1%} false rejections "
                         f"with {confidence:.1%} confidence")
    rate_bound = float(beta.ppf(confidence, n + 1 - k, k))
    return Calibration(threshold=float(np.nextafter(np.float32(scores[k - 1]), np.float32(np.inf))),
                       calibration_images=n, max_rate=max_rate, confidence=confidence,
                       expected_rate=(n + 1 - k) / (n + 1), rate_bound=rate_bound)


def resplit_check(calib_scores: np.ndarray, eval_clean_scores: np.ndarray, max_rate: float, confidence: float,
                  seeds: int = 5) -> list[dict[str, float]]:
    """Re-draw the calibration/evaluation split of the clean images `seeds` times; recalibrate on each
    calibration part and measure false rejections on its evaluation part (the promise, checked).
    """
    pooled = np.concatenate([calib_scores, eval_clean_scores])
    runs = []
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(pooled))
        calib, held = pooled[order[: len(calib_scores)]], pooled[order[len(calib_scores) :]]
        calibration = calibrate_threshold(calib, max_rate, confidence)
        runs.append({"seed": seed, "threshold": calibration.threshold, "rate_bound": calibration.rate_bound,
                     "false_rejection_rate": float((held >= calibration.threshold).mean())})
    return runs


@torch.no_grad()
def detector_scores(
    detector: Detector | DetectorEnsemble, samples: Samples, batch_size: int = 4096
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
class MlpGuard:
    """A detector MLP on one feature group (IQA + KD, IQA only, KD only): an ablation, or an ensemble member."""

    method: Method
    quality_dropout: float = 0.0
    detector: Detector | None = None
    stats: dict[str, object] | None = None

    def fit(self, samples: Samples, attack_settings: list[int], seed: int) -> dict[str, object]:
        self.detector, self.stats = fit_detector(samples, attack_settings, self.method, seed, desc=self.method,
                                                 quality_dropout=self.quality_dropout)
        return self.stats

    def score(self, samples: Samples, squeeze_columns: np.ndarray) -> np.ndarray:
        return detector_scores(self.detector, samples)[0]


@dataclass
class EnsembleGuard:
    """The exported detector: a DetectorEnsemble of already fitted MLP guards (Profile.detector_members).

    The first part always joins; each other one when its validation AUROC reaches MIN_MEMBER_AUROC.
    """

    parts: list[MlpGuard]
    method: Method = Method.DETECTOR
    detector: DetectorEnsemble | None = None

    def fit(self, samples: Samples, attack_settings: list[int], seed: int) -> dict[str, object]:
        first, *others = self.parts
        scores = {part.method.value: part.stats["validation_auroc"] for part in others}
        joined = [first, *(part for part in others if scores[part.method.value] >= MIN_MEMBER_AUROC)]  # NaN: no
        # Copies: the parts' own thresholds (set when each is calibrated as an ablation) stay out of the export.
        self.detector = DetectorEnsemble([copy.deepcopy(part.detector) for part in joined]).eval()
        left_out = {name: score for name, score in scores.items() if not score >= MIN_MEMBER_AUROC}
        if left_out:
            log.warning(f"[build] detector: left out of the ensemble (validation AUROC below {MIN_MEMBER_AUROC}): "
                        + ", ".join(f"{name} {score:.3f}" for name, score in left_out.items()))
        return {"members": [part.method.value for part in joined], "validation_auroc": scores,
                "min_member_auroc": MIN_MEMBER_AUROC}

    def score(self, samples: Samples, squeeze_columns: np.ndarray) -> np.ndarray:
        return detector_scores(self.detector, samples)[0]


@dataclass
class SqueezingGuard:
    """Feature Squeezing (Xu et al. 2018): the largest L1 change of the teacher's softmax under its squeezers.

    Its configuration is chosen where the candidates' distances are computed (featurize.fit_features);
    fitting reports that choice. Scores come from the samples' squeeze distance columns.
    """

    squeezer: FeatureSqueezing
    selection: dict[str, float]
    method: Method = Method.FEATURE_SQUEEZING

    def fit(self, samples: Samples, attack_settings: list[int], seed: int) -> dict[str, object]:
        return {"configuration": self.squeezer.name, "candidates_mean_auroc": self.selection}

    def score(self, samples: Samples, squeeze_columns: np.ndarray) -> np.ndarray:
        return squeeze_columns.max(1)


@dataclass
class Detectors:
    """Every guard method fitted and calibrated, and its scores on the evaluation samples (keys: Method)."""

    members: dict[Method, Detector | DetectorEnsemble]  # the MLP methods; Method.DETECTOR is the one exported
    fit_stats: dict[Method, object]
    thresholds: dict[Method, float]
    calibrations: dict[Method, Calibration]  # how each threshold was set
    resplits: list[dict[str, float]]  # the exported detector's false rejections on re-drawn clean splits
    scores: dict[Method, np.ndarray]  # on the evaluation samples
    reason: np.ndarray | None  # the exported detector's P(adversarial) on the evaluation samples


def fit_and_calibrate(fit: FitFeatures, held_out: HeldOutFeatures, settings: Sequence[Perturbation], seed: int,
                      target_fpr: float, confidence: float, quality_dropout: float = 0.0,
                      detector_members: Sequence[Method] = (Method.SINGLE_MLP,)) -> Detectors:
    """Fit every method (Guard), set each threshold by calibrate_threshold, score the evaluation samples.

    `quality_dropout` goes to the MLP methods' fit_detector (it only acts on the one with both feature groups).
    The exported detector averages the fitted MLPs `detector_members` names (EnsembleGuard admits them).
    """
    unknown = [m for m in detector_members if m not in FEATURE_GROUPS]
    if not detector_members or unknown:
        raise ValueError(f"detector members must be MLP methods {[m.value for m in FEATURE_GROUPS]}, "
                         f"got {[str(m) for m in detector_members]}")
    attack_settings = [i for i, s in enumerate(settings) if s.is_attack]
    result = Detectors({}, {}, {}, {}, [], {}, None)
    mlps = {method: MlpGuard(method, quality_dropout) for method in FEATURE_GROUPS}
    guards: list[Guard] = [*mlps.values(), EnsembleGuard([mlps[method] for method in detector_members]),
                           SqueezingGuard(fit.squeezer, fit.selection)]
    for guard in guards:
        result.fit_stats[guard.method] = guard.fit(fit.samples, attack_settings, seed)
        calib_scores = guard.score(held_out.calib, held_out.calib_fs)
        calibration = calibrate_threshold(calib_scores, target_fpr, confidence)
        result.calibrations[guard.method], result.thresholds[guard.method] = calibration, calibration.threshold
        result.scores[guard.method] = guard.score(held_out.eval, held_out.eval_fs)
        if isinstance(guard, MlpGuard | EnsembleGuard):
            guard.detector.threshold = calibration.threshold
            result.members[guard.method] = guard.detector
        if guard.method is Method.DETECTOR:
            result.reason = detector_scores(guard.detector, held_out.eval)[1]
            result.resplits = resplit_check(calib_scores, result.scores[guard.method][held_out.eval.clean],
                                            target_fpr, confidence)
    chosen = result.calibrations[Method.DETECTOR]
    rates = ", ".join(f"{run['false_rejection_rate']:.2%}" for run in result.resplits)
    log.info(f"[build] detector threshold {chosen.threshold:.6f}: calibrated on {chosen.calibration_images} clean "
             f"images for ≤ {target_fpr:.0%} false rejections with {confidence:.1%} confidence (expected "
             f"{chosen.expected_rate:.2%}, {confidence:.1%} bound {chosen.rate_bound:.2%}); re-drawn splits: {rates}")
    return result
