"""The build's export step: members as TorchScript, checked against the eager modules, written as a new version."""

from __future__ import annotations

import hashlib
import logging
import platform
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision

import iqaguard
from iqaguard.contract import DETECTOR, STUDENT, TEACHER
from iqaguard.models.detector import IQA_DIM, KD_FEATURE_NAMES, Detector
from iqaguard.models.wrappers import export_torchscript, make_meta
from iqaguard.repository import writer as repository
from iqaguard.repository.layout import MODEL_FILE
from iqaguard.repository.manifest import portable_paths
from iqaguard.repository.sets import ModelSet
from iqaguard.training import compute
from iqaguard.training.data import ImageSet, as_float
from iqaguard.training.methods import Method
from iqaguard.training.results import BuildSteps
from iqaguard.training.samples import Samples

log = logging.getLogger(__name__)


@dataclass
class Exported:
    """What the export step checked, measured and wrote."""

    parity: dict[str, float]  # max |eager - TorchScript| per output
    compute: dict[str, object]  # compute.measure's report
    hashes: dict[str, str]  # sha256 of each member file and set file
    set_files: dict[str, Path]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the exported members."""
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__, "iqaguard": iqaguard.__version__}


def check_exports(files: dict[str, Path], teacher: torch.nn.Module, student: torch.nn.Module, detector: Detector,
                  samples: Samples, images: ImageSet) -> dict[str, float]:
    """Load each exported member and compare it with its eager version; raise on disagreement."""
    x = as_float(images.pixels[:64])
    rows = samples.select(np.arange(len(samples)) % max(1, len(samples) // 256) == 0)
    with torch.no_grad():
        loaded = {name: torch.jit.load(str(path), map_location="cpu") for name, path in files.items()}
        eager_t, scripted_t = teacher(x), loaded[TEACHER](x)
        inputs = rows.tensors()
        eager_d, scripted_d = detector(*inputs), loaded[DETECTOR](*inputs)
        parity = {
            "teacher_logits": float((eager_t[0] - scripted_t[0]).abs().max()),
            "teacher_probs": float((eager_t[1] - scripted_t[1]).abs().max()),
            "student_logits": float((student(x) - loaded[STUDENT](x)).abs().max()),
            "detector_suspicion": float((eager_d[0] - scripted_d[0]).abs().max()),
            "detector_verdicts_equal": float(eager_d[1] == scripted_d[1]),
        }
    worst = max(v for k, v in parity.items() if k != "detector_verdicts_equal")
    if worst > 1e-4 or not parity["detector_verdicts_equal"]:
        raise RuntimeError(f"exported TorchScript disagrees with the eager modules: {parity}")
    return parity


def export_set(steps: BuildSteps, model_set: ModelSet) -> Exported:
    """Export, check and measure the members, then write them (with manifests, labels.txt and
    preprocess.json) as `steps.version` of `model_set` in the repository and prune old versions."""
    config, profile, data, version, created = steps.config, steps.profile, steps.data, steps.version, steps.created
    teacher, student, detectors, held_out = steps.teacher, steps.student, steps.detectors, steps.held_out
    squeezer, evaluation, samples = steps.fit.squeezer, steps.evaluation, steps.samples
    repo = Path(config.repository)
    detector = detectors.members[Method.DETECTOR]
    weights_kind = teacher.weights_kind
    with tempfile.TemporaryDirectory(prefix="iqaguard-build-") as staging:
        common = {"version": version, "seed": config.seed, "teacher_weights": weights_kind}
        members = {
            TEACHER: (teacher.module, make_meta(profile.name, weights_kind, **common, input_size=list(profile.size),
                                                labels=len(data.labels))),
            STUDENT: (student.module, make_meta(profile.name, "trained", **common, input_size=list(profile.size),
                                                distilled_from=f"teacher version {version}")),
            DETECTOR: (detector, make_meta(profile.name, "trained", **common,
                                           threshold=detectors.thresholds[Method.DETECTOR],
                                           target_fpr=config.target_fpr,
                                           features=[f"iqa_{i}" for i in range(IQA_DIM)] + list(KD_FEATURE_NAMES))),
        }
        files: dict[str, Path] = {}
        for name, (module, meta) in members.items():
            files[name] = Path(staging) / name / MODEL_FILE
            export_torchscript(module, files[name], meta)
        parity = check_exports(files, teacher.module, student.module, detector, held_out.eval, data.eval)
        one_row = held_out.eval.select(np.arange(len(held_out.eval)) < 1).tensors()
        detector_flops = compute.flops(detector, *one_row)
        compute_report = compute.measure(files, data.eval, squeezer, student.teacher_flops, student.student_flops,
                                         detector_flops)

        hashes = {name: repository.sha256(path) for name, path in files.items()}
        hashes.update({name: hashlib.sha256(text.encode()).hexdigest()
                       for name, text in repository.set_file_texts(data.labels, profile.size).items()})
        manifest = {
            "profile": profile.name, "set": model_set.name, "version": version, "created": created, "seed": config.seed,
            "weights": weights_kind, "teacher": teacher.info, "student": student.info, "data": data.description,
            "input_size": list(profile.size), "labels": data.labels if len(data.labels) <= 20 else len(data.labels),
            "hashes": hashes, "libraries": library_versions(), "threshold": detectors.thresholds[Method.DETECTOR],
            "target_fpr": config.target_fpr, "calibration": detectors.calibrations[Method.DETECTOR].as_dict(),
            "export_parity": parity,
            "metrics": {"teacher_top1": teacher.accuracy, "teacher_top1_held_out_train": teacher.held_out,
                        "student_agreement": student.agreement, "teacher_flops": student.teacher_flops,
                        "student_flops": student.student_flops, **evaluation["summary"]},
            "config": portable_paths(asdict(config), repo),
            "samples": samples,
        }
        manifests = {name: {**manifest, "member": model_set.model(name), "sha256": hashes[name]} for name in files}
        set_files = repository.write_set(repo, model_set, version, files, manifests, data.labels, profile.size,
                                         config.keep)
        log.info(f"[build] wrote version {version} of set {model_set.describe()} to {repo}")
    return Exported(parity, compute_report, hashes, set_files)
