"""A SPEED-BENCHMARK-ONLY model repository: the imagenet profile's networks with RANDOM weights.

The checked-in configs plus a teacher (torchvision ResNet-50), a student (MobileNetV3-Small) and a
detector, all randomly initialised and exported by the build pipeline's own export code
(iqaguard.models.wrappers, iqaguard.repository.writer), so they cost exactly what trained ones
cost. Their answers mean nothing: every artifact says weights=random in its meta.json and manifest.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from iqaguard.contract import DETECTOR, ENSEMBLE, STUDENT, TEACHER
from iqaguard.repository.layout import (
    CONFIG_FILE,
    MODEL_FILE,
    REPOSITORY_ENV,
    copy_checked_in,
    default_repository,
    missing_artifacts,
    model_file,
)
from iqaguard.repository.manifest import artifact_meta
from iqaguard.repository.sets import ModelSet

log = logging.getLogger(__name__)
PROFILE = "imagenet"
PURPOSE = "speed benchmark only (random weights, meaningless answers)"
DEFAULT_BENCH_REPOSITORY = Path(".cache") / "bench" / "imagenet-random" / "model_repository"  # under the working dir


def write_speed_repository(
    target: Path, size: tuple[int, int] = (224, 224), seed: int = 0, configs: Path | None = None
) -> Path:
    """Write the random-weight imagenet-profile repository to `target` (replacing what is there).

    The checked-in configs are copied from `configs` (default: the default repository, ./model_repository).
    """
    import torch

    from iqaguard.models.detector import Detector, DetectorEnsemble, group_mask
    from iqaguard.models.networks import imagenet_labels, imagenet_student, imagenet_teacher
    from iqaguard.models.wrappers import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        PixelClassifier,
        TeacherModule,
        export_torchscript,
        make_meta,
    )
    from iqaguard.repository.writer import write_set

    torch.manual_seed(seed)
    teacher_network, weights, _ = imagenet_teacher("random")
    if weights != "random":
        raise RuntimeError(f"expected random teacher weights, got {weights}")
    modules = {
        TEACHER: TeacherModule(PixelClassifier(teacher_network, IMAGENET_MEAN, IMAGENET_STD)),
        STUDENT: PixelClassifier(imagenet_student(), IMAGENET_MEAN, IMAGENET_STD),
        DETECTOR: DetectorEnsemble([Detector(), Detector(feature_mask=group_mask(False, True))]),
    }
    source = configs or default_repository()
    if not (source / ENSEMBLE / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"no checked-in configs in {source}: run from the checkout, or set ${REPOSITORY_ENV} to its "
            "model_repository"
        )
    if target.exists():
        shutil.rmtree(target)
    copy_checked_in(source, target)
    meta = make_meta(PROFILE, "random", purpose=PURPOSE, input_size=list(size))
    with tempfile.TemporaryDirectory() as scratch:
        files = {name: Path(scratch) / name / MODEL_FILE for name in modules}
        for name, module in modules.items():
            export_torchscript(module, files[name], meta)
        manifests = dict.fromkeys(files, meta)
        write_set(target, ModelSet(PROFILE, default=True), 1, files, manifests, imagenet_labels(), size)
    missing = missing_artifacts(target)
    if missing:
        raise RuntimeError(f"speed repository incomplete: {missing}")
    return target


def speed_repository(target: Path = DEFAULT_BENCH_REPOSITORY, size: tuple[int, int] = (224, 224)) -> Path:
    """The random-weight speed repository at `target`, written once and reused while it matches `size`."""
    teacher = model_file(target, TEACHER, 1)
    if not missing_artifacts(target) and teacher.is_file():
        meta = artifact_meta(teacher)
        if meta.get("weights") == "random" and meta.get("input_size") == list(size):
            return target
    log.info("writing the random-weight speed-benchmark repository to %s", target)
    return write_speed_repository(target, size)
