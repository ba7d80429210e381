"""A small natural build: EfficientNet-Lite0 with its real weights on 40 of the shared photos.

Tiny on purpose (few photos, one distillation epoch, two perturbed images per role): it checks the
natural path end to end and what its report and manifests say, not the set's targets (those are the
full build's, docs/natural.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support import CHECKED_IN_REPOSITORY

from iqaguard.contract import BUILT_MEMBERS, STUDENT, TEACHER
from iqaguard.models.wrappers import read_meta
from iqaguard.pipeline import build_model_set
from iqaguard.repository.layout import copy_checked_in

PHOTOS = Path(__file__).resolve().parents[2].parent / "shared" / "natural-images"
COUNT = 40
SMALL = {"student_epochs": 1, "fit_images": 2, "eval_images": 2, "pgd_steps": 1, "frr_confidence": 0.2,
         "cache_dir": None}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    if not (PHOTOS / "wnids.txt").is_file():
        pytest.skip(f"{PHOTOS} (the shared natural photos) is not here")
    root = tmp_path_factory.mktemp("natural")
    folder = root / "photos"
    folder.mkdir()
    for path in sorted(PHOTOS.glob("*.JPEG"))[::15][:COUNT]:  # spread over the classes
        shutil.copy(path, folder / path.name)
    shutil.copy(PHOTOS / "wnids.txt", folder / "wnids.txt")
    repository = copy_checked_in(CHECKED_IN_REPOSITORY, root / "model_repository")
    return build_model_set("natural", repository, images=folder, reports=root / "reports", **SMALL)


@pytest.mark.slow  # 49 s on 2 idle cores (74 s at load 2-3), most of it in the build fixture
def test_small_natural_build(built) -> None:
    repository, version = built.repository, str(built.version)
    labels = (repository / "robust_classifier" / "labels.txt").read_text().splitlines()
    assert len(labels) == 1000 and labels[1] == "goldfish"
    assert json.loads((repository / "iqa_preprocess" / "preprocess.json").read_text()) == {"height": 224,
                                                                                            "width": 224}
    for member in BUILT_MEMBERS:
        assert read_meta(repository / member / version / "model.pt")["profile"] == "natural"
    assert read_meta(repository / TEACHER / version / "model.pt")["weights"] == "pretrained"
    manifest = json.loads((repository / TEACHER / version / "manifest.json").read_text())
    assert manifest["teacher"]["weights_file"] == "efficientnet-lite0-57934424.pth"
    report = json.loads((built.report_dir / "report.json").read_text())
    data = report["data"]
    assert data["calibration"].startswith("8 images") and data["evaluation"].startswith("8 images")
    assert data["detector fit pool"].startswith("8 images")
    assert data["student distillation"].startswith("16 images × 6 views")
    # The real weights: most of the held-out photos are classified right (a random teacher gets ~0).
    teacher = report["models"]["teacher"]
    assert teacher["top1"] is not None and teacher["top1"] >= 0.5, teacher
    assert report["models"]["student"]["flops"] * 8 <= teacher["flops"]
    # Served members: teacher logits as exported, students' answers of the right shape.
    pixels = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        logits, probs = torch.jit.load(str(repository / TEACHER / version / "model.pt"))(pixels)
        eager_logits, _ = built.modules[TEACHER](pixels)
        student = torch.jit.load(str(repository / STUDENT / version / "model.pt"))(pixels)
    torch.testing.assert_close(logits, eager_logits, rtol=1e-4, atol=1e-4)
    assert student.shape == (2, 1000) and np.allclose(probs.sum(1).numpy(), 1.0, atol=1e-5)
