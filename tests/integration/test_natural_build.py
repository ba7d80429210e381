"""A small natural build: EfficientNet-Lite0 with its real weights on 40 of the shared photos, served beside
the default set.

Tiny on purpose (few photos, one distillation epoch, two perturbed images per role): it checks the
natural path end to end and what its report and manifests say, not the set's targets (those are the
full build's, docs/natural.md). The repository already holds the TEST FIXTURE default set, so the
natural build becomes the set `natural` (robust_classifier_natural) and one server serves both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from skimage import data as skimage_data
from support.fixture_models import FIXTURE_CLASSES, write_fixture_repository
from support.images import encode
from support.server import start_server

from iqaguard.contract import BUILT_MEMBERS, ENSEMBLE, ENSEMBLE_OUTPUTS, STUDENT, TEACHER, VERDICTS
from iqaguard.models.wrappers import read_meta
from iqaguard.pipeline import build_model_set
from iqaguard.repository.sets import ModelSet

NATURAL = ModelSet("natural")

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
    repository = write_fixture_repository(root / "model_repository")
    return build_model_set("natural", repository, images=folder, reports=root / "reports", **SMALL)


@pytest.mark.slow  # 49 s on 2 idle cores (74 s at load 2-3), most of it in the build fixture
def test_small_natural_build(built) -> None:
    repository, version = built.repository, str(built.version)
    labels = (repository / NATURAL.ensemble / "labels.txt").read_text().splitlines()
    assert len(labels) == 1000 and labels[1] == "goldfish"
    preprocess = repository / NATURAL.model("iqa_preprocess") / "preprocess.json"
    assert json.loads(preprocess.read_text()) == {"height": 224, "width": 224}
    for member in BUILT_MEMBERS:
        assert read_meta(repository / NATURAL.model(member) / version / "model.pt")["profile"] == "natural"
    teacher_dir, student_dir = repository / NATURAL.model(TEACHER), repository / NATURAL.model(STUDENT)
    assert read_meta(teacher_dir / version / "model.pt")["weights"] == "pretrained"
    manifest = json.loads((teacher_dir / version / "manifest.json").read_text())
    assert manifest["teacher"]["weights_file"] == "efficientnet-lite0-57934424.pth"
    report = json.loads((built.report_dir / "report.json").read_text())
    data = report["data"]
    assert data["calibration"].startswith("8 images") and data["evaluation"].startswith("8 images")
    assert data["detector fit pool"].startswith("8 images")
    assert data["student distillation"].startswith("16 images × 6 views")
    # Photos: the IQA + KD MLP is fitted with IQA modality dropout; single-group MLPs have nothing to drop.
    assert report["fit"]["single_mlp"]["quality_dropout"] == 0.5
    assert report["fit"]["iqa_only"]["quality_dropout"] == report["fit"]["kd_only"]["quality_dropout"] == 0.0
    dropout_note = ("The single IQA + KD MLP (an ablation, and the detector's first member) is fitted with IQA "
                    "modality dropout 0.5")
    assert any(note.startswith(dropout_note) for note in report["notes"])
    # Photos: the detector is offered the KD-only MLP too; it joins where its validation AUROC is high enough.
    ensemble = report["fit"]["detector"]
    assert set(ensemble["validation_auroc"]) == {"kd_only"} and ensemble["members"][0] == "single_mlp"
    assert set(ensemble["members"]) <= {"single_mlp", "kd_only"}
    # The real weights: most of the held-out photos are classified right (a random teacher gets ~0).
    teacher = report["models"]["teacher"]
    assert teacher["top1"] is not None and teacher["top1"] >= 0.5, teacher
    assert report["models"]["student"]["flops"] * 8 <= teacher["flops"]
    # Served members: teacher logits as exported, students' answers of the right shape.
    pixels = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        logits, probs = torch.jit.load(str(teacher_dir / version / "model.pt"))(pixels)
        eager_logits, _ = built.modules[TEACHER](pixels)
        student = torch.jit.load(str(student_dir / version / "model.pt"))(pixels)
    torch.testing.assert_close(logits, eager_logits, rtol=1e-4, atol=1e-4)
    assert student.shape == (2, 1000) and np.allclose(probs.sum(1).numpy(), 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.integration
def test_one_server_serves_the_natural_set_beside_the_default_set(built, tmp_path: Path) -> None:
    """robust_classifier (the fixture default set) and robust_classifier_natural, both contracts, gRPC and HTTP."""
    photo = encode(skimage_data.chelsea(), "JPEG")  # a tabby cat
    server = start_server(built.repository, tmp_path / "triton.log")
    try:
        for protocol, module in (("grpc", grpcclient), ("http", httpclient)):
            client = module.InferenceServerClient(server.grpc_url if protocol == "grpc" else server.http_url)
            for ensemble, classes in ((ENSEMBLE, FIXTURE_CLASSES), (NATURAL.ensemble, None)):
                tensor = module.InferInput("IMAGE", [1, 1], "BYTES")
                tensor.set_data_from_numpy(np.array([[photo]], dtype=np.object_))
                outputs = [module.InferRequestedOutput(name) for name in ENSEMBLE_OUTPUTS]
                result = client.infer(ensemble, [tensor], outputs=outputs)
                probs = result.as_numpy("PROBS")
                assert probs.shape == (1, len(classes) if classes else 1000), (protocol, ensemble)
                assert result.as_numpy("QUALITY").shape == (1, 1) and result.as_numpy("SUSPICION").shape == (1, 1)
                assert result.as_numpy("VERDICT")[0, 0].decode() in VERDICTS
                if classes is None:  # the real EfficientNet-Lite0 on a real cat photo
                    labels = (built.repository / NATURAL.ensemble / "labels.txt").read_text().splitlines()
                    assert "cat" in labels[int(probs.argmax())], labels[int(probs.argmax())]
            client.close()
    finally:
        server.stop()
