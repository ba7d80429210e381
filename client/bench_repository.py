"""A SPEED-BENCHMARK-ONLY model repository: the imagenet profile's networks with RANDOM weights.

The checked-in configs plus a teacher (torchvision ResNet-50), a student (MobileNetV3-Small) and a
detector, all randomly initialised and exported by the build pipeline's own export code
(iqaguard.models.wrappers, iqaguard.training.repository), so they cost exactly what trained ones
cost. Their answers mean nothing: every artifact says weights=random in its meta.json and manifest.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

from iqaguard.contract import DETECTOR, MODEL_FILE, STUDENT, TEACHER
from iqaguard.server.repository import DEFAULT_REPOSITORY, copy_checked_in, missing_artifacts

PROFILE = "imagenet"
PURPOSE = "speed benchmark only (random weights, meaningless answers)"
DEFAULT_BENCH_REPOSITORY = DEFAULT_REPOSITORY.parent / ".cache" / "bench" / "imagenet-random" / "model_repository"


def artifact_meta(model_file: Path) -> dict[str, object]:
    """The meta.json a TorchScript artifact carries (read from the archive, without loading the model)."""
    with zipfile.ZipFile(model_file) as archive:
        names = [name for name in archive.namelist() if name.endswith("/extra/meta.json")]
        return json.loads(archive.read(names[0])) if names else {}


def write_speed_repository(target: Path, size: tuple[int, int] = (224, 224), seed: int = 0) -> Path:
    """Write the random-weight imagenet-profile repository to `target` (replacing what is there)."""
    import torch

    from iqaguard.models.detector import Detector
    from iqaguard.models.networks import imagenet_labels, imagenet_student, imagenet_teacher
    from iqaguard.models.wrappers import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        PixelClassifier,
        TeacherModule,
        export_torchscript,
        make_meta,
    )
    from iqaguard.training.repository import write_member, write_set_files

    torch.manual_seed(seed)
    teacher_network, weights, _ = imagenet_teacher("random")
    if weights != "random":
        raise RuntimeError(f"expected random teacher weights, got {weights}")
    modules = {
        TEACHER: TeacherModule(PixelClassifier(teacher_network, IMAGENET_MEAN, IMAGENET_STD)),
        STUDENT: PixelClassifier(imagenet_student(), IMAGENET_MEAN, IMAGENET_STD),
        DETECTOR: Detector(),
    }
    if target.exists():
        shutil.rmtree(target)
    copy_checked_in(DEFAULT_REPOSITORY, target)
    with tempfile.TemporaryDirectory() as scratch:
        for name, module in modules.items():
            meta = make_meta(PROFILE, "random", purpose=PURPOSE, input_size=list(size))
            exported = Path(scratch) / name / MODEL_FILE
            export_torchscript(module, exported, meta)
            write_member(target, name, 1, exported, meta)
    write_set_files(target, imagenet_labels(), size)
    missing = missing_artifacts(target)
    if missing:
        raise RuntimeError(f"speed repository incomplete: {missing}")
    return target


def speed_repository(target: Path = DEFAULT_BENCH_REPOSITORY, size: tuple[int, int] = (224, 224)) -> Path:
    """The random-weight speed repository at `target`, written once and reused while it matches `size`."""
    teacher = target / TEACHER / "1" / MODEL_FILE
    if not missing_artifacts(target) and teacher.is_file():
        meta = artifact_meta(teacher)
        if meta.get("weights") == "random" and meta.get("input_size") == list(size):
            return target
    print(f"writing the random-weight speed-benchmark repository to {target}", flush=True)
    return write_speed_repository(target, size)
