"""The evaluation report: JSON (everything), Markdown (for people), ROC curves (PNG)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from iqaguard.training.metrics import auroc, roc_curve

METHOD_TITLES = {
    "detector": "detector (IQA + KD)",
    "iqa_only": "IQA only",
    "kd_only": "KD only",
    "feature_squeezing": "Feature Squeezing",
}


def _fmt(value: object, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f}%"


def write_json(path: Path, report: Mapping[str, object]) -> None:
    """Write the full report as JSON (NaN becomes null)."""

    def clean(value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(report), indent=2, default=str) + "\n")


def plot_roc(path: Path, curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], title: str) -> None:
    """One panel per group (e.g. attacks, severe distortions), one curve per method; log-free FPR axis."""
    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 4.8), squeeze=False)
    for axis, (group, methods) in zip(axes[0], curves.items(), strict=True):
        for method, (negatives, positives) in methods.items():
            if len(negatives) == 0 or len(positives) == 0:
                continue
            fpr, tpr = roc_curve(negatives, positives)
            label = f"{METHOD_TITLES.get(method, method)} (AUROC {auroc(negatives, positives):.3f})"
            axis.plot(fpr, tpr, label=label, linewidth=1.6)
        axis.axvline(0.05, color="grey", linestyle=":", linewidth=1)
        axis.plot([0, 1], [0, 1], color="lightgrey", linewidth=1)
        axis.set(xlabel="false-positive rate (clean images)", ylabel="true-positive rate", title=group,
                 xlim=(0, 1), ylim=(0, 1.01))
        axis.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: Mapping[str, object]) -> str:
    """Render the report for people: what was built, the targets, per-setting tables, costs, timings."""
    lines: list[str] = []
    meta = report["build"]
    ev = report["evaluation"]
    summary = ev["summary"]
    methods = [m for m in METHOD_TITLES if m in summary]
    lines += [f"# iqaguard build report — profile `{meta['profile']}`, version {meta['version']}", ""]
    lines += [f"Created {meta['created']} · seed {meta['seed']} · teacher weights: **{meta['weights']}** · "
              f"host: {meta['host']}", ""]
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for target in report["targets"]:
        lines.append(f"| {target['target']} | {target['measured']} | {'yes' if target['met'] else '**no**'} |")
    lines += [""]

    models = report["models"]
    lines += ["## Models", "", "| member | parameters | FLOPs / image | notes |", "|---|---|---|---|"]
    for name in ("teacher", "student", "detector"):
        entry = models[name]
        lines.append(f"| {name} | {entry['parameters']:,} | {entry['flops']:,} | {entry.get('notes', '')} |")
    lines += [""]

    lines += ["## Detection on held-out images", "",
              f"Negatives: {summary['clean_images']} clean evaluation images. Positives of a setting: its perturbed "
              "images whose teacher answer differs from the clean answer (and, with labels, the clean answer was "
              "right). TPR@5%FPR reads the ROC at 5% false positives on the clean evaluation images; "
              "'detected' is the rate at the threshold calibrated on separate clean images. "
              f"Severe distortion = flips ≥ {report['settings']['severe_flip_rate']:.0%} of images.", ""]
    lines += ["| method | false rejections (clean) | mean AUROC attacks | mean AUROC severe distortions | "
              "mean AUROC all distortions | mean TPR@5%FPR attacks | mean TPR@5%FPR severe distortions |",
              "|---|---|---|---|---|---|---|"]
    for m in methods:
        s = summary[m]
        lines.append(
            f"| {METHOD_TITLES[m]} | {_pct(s['false_rejection_rate'])} | {_fmt(s['mean_auroc_attacks'])} | "
            f"{_fmt(s['mean_auroc_severe_distortions'])} | {_fmt(s['mean_auroc_all_distortions'])} | "
            f"{_fmt(s['mean_tpr_at_5fpr_attacks'])} | {_fmt(s['mean_tpr_at_5fpr_severe_distortions'])} |"
        )
    lines += ["", "### Per setting (AUROC / TPR@5%FPR / detected at the deployed threshold)", ""]
    titles = " | ".join(METHOD_TITLES[m] for m in methods)
    header = f"| setting | flip rate | positives | {titles} | verdict right |"
    lines += [header, "|" + "---|" * (4 + len(methods))]
    for e in ev["per_setting"]:
        cells = [f"{_fmt(e[m]['auroc'])} / {_fmt(e[m]['tpr_at_5fpr'], 2)} / {_fmt(e[m]['detection_rate'], 2)}"
                 for m in methods]
        severe = "" if e["family"] == "attack" or e["severe"] else " (mild)"
        lines.append(f"| {e['setting']}{severe} | {_pct(e['flip_rate'])} | {e['positives']} | "
                     + " | ".join(cells) + f" | {_pct(e.get('verdict_accuracy', float('nan')))} |")
    lines += ["", "![ROC curves](roc.png)", ""]

    lines += ["## Compute of detection (per image, on top of the teacher's forward pass)", "",
              "| method | extra FLOPs (networks) | × teacher FLOPs | measured ms / image | × teacher time |",
              "|---|---|---|---|---|"]
    for row in report["compute"]["rows"]:
        lines.append(f"| {row['method']} | {row['extra_flops']:,} | {row['flops_ratio']:.3f} | "
                     f"{row['ms_per_image']:.4f} | "
                     f"{row['time_ratio']:.2f} |")
    lines += ["", report["compute"]["note"], ""]

    lines += ["## Build steps", "", "| step | wall seconds | process CPU seconds |", "|---|---|---|"]
    for step, seconds in report["timings"].items():
        lines.append(f"| {step} | {seconds:.1f} | {report.get('cpu_seconds', {}).get(step, float('nan')):.1f} |")
    lines += ["", f"Conditions: {report['conditions']}", ""]
    lines += ["## Data", ""] + [f"- {k}: {v}" for k, v in report["data"].items()] + [""]
    lines += ["## Notes", ""] + [f"- {note}" for note in report["notes"]] + [""]
    return "\n".join(lines)
