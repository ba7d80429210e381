"""Held-out evaluation: per perturbation setting, how well each method separates clean from broken inputs.

Negatives are the clean evaluation images; positives of a setting are its perturbed images that made
the teacher wrong. A distortion setting counts as "severe" when it flips at least SEVERE_FLIP_RATE of
the (eligible) images — a property of the perturbation and the teacher, not of any detector. Settings
the detector was not fitted on (CW-L2, DeepFool, ImageNet-C corruptions) are summarised apart as unseen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from iqaguard.training.bootstrap import REPLICATES, image_weights, mean_auroc_intervals
from iqaguard.training.methods import Method
from iqaguard.training.metrics import auroc, finite_mean, rate_at_threshold, tpr_at_fpr
from iqaguard.training.perturb import Perturbation
from iqaguard.training.samples import Samples

SEVERE_FLIP_RATE = 0.2
MAX_FPR = 0.05


def evaluate(
    samples: Samples,
    settings: Sequence[Perturbation],
    scores: dict[str, np.ndarray],
    thresholds: dict[str, float],
    reason: np.ndarray | None = None,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> dict[str, object]:
    """Metrics of every method (`scores[name]` aligned with `samples` rows) on the evaluation rows.

    `reason` (the detector's P(adversarial)) adds how often flagged positives get the right verdict.
    Every mean AUROC comes with a 95% bootstrap interval over the evaluation images (`ci95_mean_auroc_*`,
    `replicates` draws from `seed`).
    """
    clean = samples.clean
    per_setting: list[dict[str, object]] = []
    for index, setting in enumerate(settings):
        rows = samples.setting == index
        eligible = rows & samples.eligible
        positive = rows & samples.positive
        entry: dict[str, object] = {
            "setting": setting.name, "kind": setting.kind, "strength": setting.strength,
            "family": "attack" if setting.is_attack else "distortion", "seen": setting.seen,
            "images": int(rows.sum()), "eligible": int(eligible.sum()), "positives": int(positive.sum()),
            "flip_rate": float(positive.sum() / max(eligible.sum(), 1)),
        }
        entry["severe"] = bool(setting.is_attack or entry["flip_rate"] >= SEVERE_FLIP_RATE)
        for name, score in scores.items():
            entry[name] = {
                "auroc": auroc(score[clean], score[positive]),
                "tpr_at_5fpr": tpr_at_fpr(score[clean], score[positive], MAX_FPR),
                "detection_rate": rate_at_threshold(score[positive], thresholds[name]),
            }
        if reason is not None:
            flagged = positive & (scores[Method.DETECTOR] >= thresholds[Method.DETECTOR])
            said_adversarial = reason[flagged] >= 0.5
            correct = said_adversarial if setting.is_attack else ~said_adversarial
            entry["verdict_accuracy"] = float(correct.mean()) if flagged.any() else float("nan")
        per_setting.append(entry)

    summary: dict[str, object] = {}
    seen = [e for e in per_setting if e["seen"]]
    unseen = [e for e in per_setting if not e["seen"]]
    groups = {
        "attacks": [e for e in seen if e["family"] == "attack"],
        "severe_distortions": [e for e in seen if e["family"] == "distortion" and e["severe"]],
        "all_distortions": [e for e in seen if e["family"] == "distortion"],
        "unseen_attacks": [e for e in unseen if e["family"] == "attack"],
        "unseen_severe_corruptions": [e for e in unseen if e["family"] == "distortion" and e["severe"]],
        "unseen_all_corruptions": [e for e in unseen if e["family"] == "distortion"],
    }
    weights = image_weights(samples.image, samples.image[clean], replicates, seed)
    index_of = {setting.name: index for index, setting in enumerate(settings)}
    masks = {group: [samples.positive & (samples.setting == index_of[e["setting"]]) for e in entries]
             for group, entries in groups.items()}
    for name in scores:
        intervals = mean_auroc_intervals(scores[name], clean, masks, weights)
        summary[name] = {
            "false_rejection_rate": rate_at_threshold(scores[name][clean], thresholds[name]),
            "threshold": thresholds[name],
            **{f"mean_auroc_{group}": finite_mean([e[name]["auroc"] for e in entries])
               for group, entries in groups.items()},
            **{f"ci95_mean_auroc_{group}": intervals[group] for group in groups},
            **{f"mean_tpr_at_5fpr_{group}": finite_mean([e[name]["tpr_at_5fpr"] for e in entries])
               for group, entries in groups.items()},
        }
    summary["severe_distortion_settings"] = [e["setting"] for e in groups["severe_distortions"]]
    summary["unseen_severe_corruption_settings"] = [e["setting"] for e in groups["unseen_severe_corruptions"]]
    summary["clean_images"] = int(clean.sum())
    return {"per_setting": per_setting, "summary": summary}


def roc_groups(samples: Samples, settings: Sequence[Perturbation], scores: dict[str, np.ndarray],
               evaluation: dict[str, object]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Pooled ROC inputs: seen attacks, seen severe distortions, and the unseen attacks and severe corruptions."""
    severe = {e["setting"] for e in evaluation["per_setting"] if e["severe"]}
    groups = {
        "attacks (FGSM, PGD)": [i for i, s in enumerate(settings) if s.is_attack and s.seen],
        "severe distortions": [i for i, s in enumerate(settings) if not s.is_attack and s.seen and s.name in severe],
        "unseen attacks (CW-L2, DeepFool)": [i for i, s in enumerate(settings) if s.is_attack and not s.seen],
        "unseen severe corruptions (ImageNet-C)": [
            i for i, s in enumerate(settings) if not s.is_attack and not s.seen and s.name in severe],
    }
    groups = {title: indices for title, indices in groups.items() if indices}
    out = {}
    for title, indices in groups.items():
        positive = samples.positive & np.isin(samples.setting, indices)
        out[title] = {name: (score[samples.clean], score[positive]) for name, score in scores.items()}
    return out
