"""The evaluation report: JSON (everything), Markdown (for people), ROC curves (PNG); the build's report step."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from iqaguard.models.detector import FEATURE_DIM
from iqaguard.training.compute import parameters
from iqaguard.training.evaluate import SEVERE_FLIP_RATE
from iqaguard.training.export import Exported
from iqaguard.training.methods import Method
from iqaguard.training.metrics import auroc, finite_mean, roc_curve
from iqaguard.training.profiles import Profile
from iqaguard.training.results import BuildSteps
from iqaguard.training.splits import Data

log = logging.getLogger(__name__)


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
            label = f"{Method(method).title} (AUROC {auroc(negatives, positives):.3f})"
            axis.plot(fpr, tpr, label=label, linewidth=1.6)
        axis.axvline(0.05, color="grey", linestyle=":", linewidth=1)
        axis.plot([0, 1], [0, 1], color="lightgrey", linewidth=1)
        axis.set(xlabel="false-positive rate (clean images)", ylabel="true-positive rate", title=group,
                 xlim=(0, 1), ylim=(0, 1.01))
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="lower right", fontsize=8)
        else:  # a tiny build may have no positive in a group
            axis.text(0.5, 0.5, "no positives", ha="center", va="center", color="grey")
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
    methods = [m for m in Method if m in summary]
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
            f"| {m.title} | {_pct(s['false_rejection_rate'])} | {_fmt(s['mean_auroc_attacks'])} | "
            f"{_fmt(s['mean_auroc_severe_distortions'])} | {_fmt(s['mean_auroc_all_distortions'])} | "
            f"{_fmt(s['mean_tpr_at_5fpr_attacks'])} | {_fmt(s['mean_tpr_at_5fpr_severe_distortions'])} |"
        )
    lines += ["", "Unseen — the detector was not fitted on these (CW-L2 and DeepFool from ART; ImageNet-C corruptions "
              "from corrupt-tta; 'severe' as above):", "",
              "| method | mean AUROC unseen attacks | mean AUROC unseen severe corruptions | "
              "mean AUROC all unseen corruptions | mean TPR@5%FPR unseen attacks |", "|---|---|---|---|---|"]
    for m in methods:
        s = summary[m]
        lines.append(
            f"| {m.title} | {_fmt(s['mean_auroc_unseen_attacks'])} | "
            f"{_fmt(s['mean_auroc_unseen_severe_corruptions'])} | {_fmt(s['mean_auroc_unseen_all_corruptions'])} | "
            f"{_fmt(s['mean_tpr_at_5fpr_unseen_attacks'])} |"
        )
    lines += ["", "### Per setting (AUROC / TPR@5%FPR / detected at the deployed threshold)", ""]
    titles = " | ".join(m.title for m in methods)
    header = f"| setting | flip rate | positives | {titles} | verdict right |"
    lines += [header, "|" + "---|" * (4 + len(methods))]
    for e in ev["per_setting"]:
        cells = [f"{_fmt(e[m]['auroc'])} / {_fmt(e[m]['tpr_at_5fpr'], 2)} / {_fmt(e[m]['detection_rate'], 2)}"
                 for m in methods]
        severe = "" if e["family"] == "attack" or e["severe"] else " (mild)"
        unseen = "" if e["seen"] else " (unseen)"
        lines.append(f"| {e['setting']}{severe}{unseen} | {_pct(e['flip_rate'])} | {e['positives']} | "
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


# ------------------------------------------------------------------------------------ the build's step


class Timer:
    """Per-step wall-clock and process CPU timings, printed as each step ends.

    CPU seconds well below wall seconds × threads mean the machine was busy with other work.
    """

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        log.info(f"[build] {name} ...")
        started, cpu_started = time.perf_counter(), time.process_time()
        yield
        self.timings[name] = time.perf_counter() - started
        self.cpu[name] = time.process_time() - cpu_started
        log.info(f"[build] {name}: {self.timings[name]:.1f} s (CPU {self.cpu[name]:.1f} s)")

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start

    @property
    def total_cpu(self) -> float:
        return time.process_time() - self.cpu_start


def conditions() -> str:
    """The machine's CPUs, torch threads and load: what the timings were measured under."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average at end "
            f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} (1/5/15 min; other work on the machine slows steps)")


def _with_interval(summary: dict[str, object], group: str) -> str:
    """A mean AUROC with its 95% bootstrap interval over the evaluation images, as the targets table shows it."""
    low, high = summary[f"ci95_mean_auroc_{group}"]
    return f"{summary[f'mean_auroc_{group}']:.4f} (95% CI {low:.3f}–{high:.3f})"


def build_targets(steps: BuildSteps, compute_report: dict[str, object]) -> list[dict[str, object]]:
    """The set's targets (profile.targets) with what this build measured (all but the whole-build time)."""
    profile, teacher, student, evaluation = steps.profile, steps.teacher, steps.student, steps.evaluation
    calibration, resplits = steps.detectors.calibrations[Method.DETECTOR], steps.detectors.resplits
    goal = profile.targets
    accuracy, agree = teacher.accuracy, student.agreement
    teacher_flops, student_flops = student.teacher_flops, student.student_flops
    s = evaluation["summary"]
    det, fs = s[Method.DETECTOR], s[Method.FEATURE_SQUEEZING]
    rows: list[dict[str, object]] = []
    if accuracy is not None:
        rows.append({"target": f"teacher test top-1 ≥ {goal.teacher_top1:.0%}", "measured": f"{accuracy:.2%}",
                     "met": accuracy >= goal.teacher_top1})
    rows += [
        {"target": f"student ≤ 1/{1 / goal.student_flops_fraction:.0f} of teacher FLOPs",
         "measured": f"1/{teacher_flops / max(student_flops, 1):.1f}",
         "met": student_flops <= goal.student_flops_fraction * teacher_flops},
        *([{"target": f"student top-1 agreement ≥ {goal.student_agreement:.0%}", "measured": f"{agree:.2%}",
            "met": agree >= goal.student_agreement}] if goal.student_agreement is not None else []),
        {"target": f"false rejections on held-out clean ≤ {goal.false_rejections:.0%}",
         "measured": f"{det['false_rejection_rate']:.2%}", "met": det["false_rejection_rate"] <= goal.false_rejections},
        {"target": f"calibrated: ≤ {goal.false_rejections:.0%} false rejections with ≥ "
                   f"{calibration.confidence:.1%} confidence",
         "measured": f"expected {calibration.expected_rate:.2%}, {calibration.confidence:.1%} upper bound "
                     f"{calibration.rate_bound:.2%} ({calibration.calibration_images} calibration images)",
         "met": calibration.rate_bound <= goal.false_rejections},
        {"target": f"false rejections ≤ {goal.false_rejections:.0%} on every re-drawn calibration/evaluation split",
         "measured": ", ".join(f"{run['false_rejection_rate']:.2%}" for run in resplits),
         "met": all(run["false_rejection_rate"] <= goal.false_rejections for run in resplits)},
        {"target": f"mean AUROC over attacks ≥ {goal.auroc_attacks:.2f}",
         "measured": _with_interval(det, "attacks"), "met": det["mean_auroc_attacks"] >= goal.auroc_attacks},
        {"target": f"mean AUROC over severe distortions ≥ {goal.auroc_severe_distortions:.2f}",
         "measured": _with_interval(det, "severe_distortions"),
         "met": det["mean_auroc_severe_distortions"] >= goal.auroc_severe_distortions},
        {"target": f"mean AUROC over unseen attacks (CW-L2, DeepFool) ≥ {goal.auroc_unseen_attacks:.2f}",
         "measured": _with_interval(det, "unseen_attacks"),
         "met": det["mean_auroc_unseen_attacks"] >= goal.auroc_unseen_attacks},
        {"target": f"mean AUROC over unseen corruptions that flip the teacher ≥ {goal.auroc_unseen_corruptions:.2f}",
         "measured": _with_interval(det, "unseen_severe_corruptions"),
         "met": det["mean_auroc_unseen_severe_corruptions"] >= goal.auroc_unseen_corruptions},
    ]
    ours = finite_mean([det["mean_auroc_attacks"], det["mean_auroc_severe_distortions"]])
    theirs = finite_mean([fs["mean_auroc_attacks"], fs["mean_auroc_severe_distortions"]])
    rows.append({"target": "beat Feature Squeezing on mean AUROC (attacks & severe distortions)",
                 "measured": f"{ours:.4f} vs {theirs:.4f}", "met": bool(ours > theirs)})
    by_method = {row["key"]: row for row in compute_report["rows"]}
    ours_c, fs_c = by_method[Method.DETECTOR], by_method[Method.FEATURE_SQUEEZING]
    rows.append({"target": "at lower compute than Feature Squeezing",
                 "measured": f"FLOPs ×{ours_c['flops_ratio']:.3f} vs ×{fs_c['flops_ratio']:.3f} of the teacher; "
                             f"time ×{ours_c['time_ratio']:.2f} vs ×{fs_c['time_ratio']:.2f}",
                 "met": ours_c["flops_ratio"] < fs_c["flops_ratio"] and ours_c["time_ratio"] < fs_c["time_ratio"]})
    for row in rows:
        row["target"] = goal.label_prefix + row["target"]
    return rows


def build_time_target(profile: Profile, seconds: float, cached: bool) -> dict[str, object]:
    """The whole-build time target (not a full-build time when trained networks came from the cache)."""
    budget = profile.targets.build_seconds
    return {"target": f"{profile.targets.label_prefix}whole build ≤ {budget:.0f} s",
            "measured": f"{seconds:.0f} s" + (" (trained networks reused from the cache: "
                                              "not a full-build time)" if cached else ""),
            "met": seconds <= budget}


def build_notes(steps: BuildSteps) -> list[str]:
    """What a reader of the report must know about how it was measured and what it does not cover."""
    config, profile, teacher, fit, held_out = steps.config, steps.profile, steps.teacher, steps.fit, steps.held_out
    ensemble = steps.detectors.fit_stats[Method.DETECTOR]
    notes: list[str] = []
    if teacher.weights_kind == "random":
        notes.append("teacher weights are RANDOM (asked for with --weights random): plumbing/speed only")
    notes += [
        f"Feature Squeezing configuration chosen on {min(profile.fs_selection_images, fit.images)} fit images "
        "(never evaluation images): "
        f"{fit.squeezer.name}; candidates: " + ", ".join(f"{k}: {v:.3f}" for k, v in fit.selection.items()),
        "Attacks are white-box on the teacher (untargeted, against its clean answer), per RGB channel, and every "
        "perturbed image is PNG/JPEG-encoded and decoded through iqaguard.imaging, as the server would see it.",
        f"Threshold: split-conformal on {len(held_out.calib)} clean calibration images for ≤ "
        f"{config.target_fpr:.0%} false rejections with {config.frr_confidence:.1%} confidence (an upper "
        "confidence bound, not the average); the evaluation clean rate is measured on other images.",
        "The detector is fitted on FGSM and PGD (ART) and the five quality distortions only. CW-L2 and DeepFool "
        f"(ART; first {profile.unseen_attack_images} evaluation images) and ImageNet-C corruptions (corrupt-tta; "
        f"first {profile.unseen_corruption_images}) are evaluated, never fitted on. Adaptive attacks that also "
        "target BRISQUE and the student are not evaluated.",
        detector_note(profile, ensemble),
    ]
    if profile.quality_dropout > 0:
        notes.append(
            f"The single IQA + KD MLP (an ablation, and the detector's first member) is fitted with IQA modality "
            f"dropout {profile.quality_dropout:g}: each training row's IQA features are replaced by their mean with "
            "that probability, so it cannot rest on IQA alone (the IQA-only and KD-only MLPs are fitted without). "
            "The rate was chosen from two tried "
            "(0.3, 0.5) while looking at a build's evaluation figures, so its unseen figures are slightly optimistic.")
    notes += profile.notes
    return notes


def detector_note(profile: Profile, ensemble: Mapping[str, object]) -> str:
    """What the exported detector is: one MLP, or the mean of the MLPs the profile names and the build admitted."""
    if len(profile.detector_members) == 1:
        return "The detector is one MLP on IQA + KD features (the 'single MLP' row is the same model)."
    return ("The detector averages the suspicion logits of its MLPs: the one on IQA + KD features (the 'single MLP' "
            f"ablation), and the others ({', '.join(m.value for m in profile.detector_members[1:])}) where they "
            f"separate the fit's validation images at AUROC ≥ {ensemble['min_member_auroc']} (this build: "
            f"{', '.join(ensemble['members'])}). The ensemble was adopted after earlier reports showed the KD-only "
            "ablation beating the single MLP on unseen attacks, so its unseen figures may be slightly optimistic.")


def teacher_notes(accuracy: float | None, held_out_top1: float | None, data: Data) -> str:
    """Where the teacher's top-1 figures were measured (empty when no labels measured any)."""
    parts = []
    if accuracy is not None:
        parts.append(f"top-1 {accuracy:.4f} on {len(data.test)} labelled test images")
    if held_out_top1 is not None:
        parts.append(f"{held_out_top1:.4f} on {len(data.fit)} held-out training images")
    return ", ".join(parts)


def build_report(steps: BuildSteps, exported: Exported, targets: list[dict[str, object]],
                 timer: Timer) -> dict[str, object]:
    """The build's report (report.json's content) from every step's results."""
    config, profile, version, created, data = steps.config, steps.profile, steps.version, steps.created, steps.data
    settings, pgd_steps, teacher, student = steps.settings, steps.pgd_steps, steps.teacher, steps.student
    fit, held_out, detectors, evaluation = steps.fit, steps.held_out, steps.detectors, steps.evaluation
    accuracy, held_out_top1, agree = teacher.accuracy, teacher.held_out, student.agreement
    teacher_flops, student_flops = student.teacher_flops, student.student_flops
    detector = detectors.members[Method.DETECTOR]
    members = detectors.fit_stats[Method.DETECTOR]["members"]
    mlps = "MLPs, suspicion logits averaged," if len(members) > 1 else "one MLP"
    return {
        "build": {"profile": profile.name, "version": version, "created": created, "seed": config.seed,
                  "weights": teacher.weights_kind, "host": platform.node() or "unknown",
                  "repository": str(config.repository)},
        "targets": targets,
        "models": {
            "teacher": {"parameters": parameters(teacher.module), "flops": teacher_flops, "top1": accuracy,
                        "top1_held_out_train": held_out_top1,
                        "notes": teacher_notes(accuracy, held_out_top1, data)},
            "student": {"parameters": parameters(student.module), "flops": student_flops, "agreement": agree,
                        "notes": f"agreement {agree:.4f} on {student.agreement_images} held-out images; "
                                 f"1/{teacher_flops / max(student_flops, 1):.1f} of the teacher's FLOPs"},
            "detector": {"parameters": parameters(detector), "flops": exported.compute["detector_flops"],
                         "notes": f"{mlps} on {FEATURE_DIM} features ({' + '.join(members)}); "
                                  f"threshold {detectors.thresholds[Method.DETECTOR]:.6f}"},
        },
        "settings": {"perturbations": [s.name for s in settings], "pgd_steps": pgd_steps,
                     "fit_images": fit.images, "eval_images": held_out.images, "severe_flip_rate": SEVERE_FLIP_RATE},
        "evaluation": evaluation,
        "calibration": {name: c.as_dict() for name, c in detectors.calibrations.items()},
        "calibration_resplits": detectors.resplits,
        "fit": detectors.fit_stats,
        "feature_squeezing_selection": fit.selection,
        "compute": exported.compute,
        "timings": timer.timings,
        "cpu_seconds": timer.cpu,
        "conditions": conditions(),
        "data": data.description,
        "export_parity": exported.parity,
        "notes": build_notes(steps),
        "manifest_hashes": exported.hashes,
        "set_files": {k: str(v) for k, v in exported.set_files.items()},
    }


def write_report(report_dir: Path, report: dict[str, object],
                 curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]) -> None:
    """Write report.json, report.md and roc.png to `report_dir`; print the timings and targets."""
    report_dir.mkdir(parents=True, exist_ok=True)
    build = report["build"]
    write_json(report_dir / "report.json", report)
    (report_dir / "report.md").write_text(markdown(report))
    plot_roc(report_dir / "roc.png", curves, f"{build['profile']} v{build['version']}: clean vs perturbed-and-wrong")
    log.info(f"[build] report: {report_dir / 'report.md'}")
    for name, seconds in report["timings"].items():
        log.info(f"[build] time {name:<48} {seconds:7.1f} s  (CPU {report['cpu_seconds'].get(name, 0.0):7.1f} s)")
    for target in report["targets"]:
        log.info(f"[build] target {target['target']}: {target['measured']} -> {'met' if target['met'] else 'MISSED'}")
