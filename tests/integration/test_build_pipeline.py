"""End to end: a small, fast fashion build into a temporary model repository.

The build is tiny (a few hundred images, one epoch) so its models are weak; these tests check the
plumbing and the contract, not the accuracy targets (those are in the full build's report).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.small_build import empty_repository

from iqaguard.contract import BUILT_MEMBERS, DETECTOR, STUDENT, TEACHER, VERDICTS
from iqaguard.iqa import brisque
from iqaguard.models.detector import FEATURE_DIM
from iqaguard.models.wrappers import read_meta
from iqaguard.operations.rollout import find_set, offline_rollout
from iqaguard.pipeline import main
from iqaguard.repository.layout import versions
from iqaguard.repository.live import LIVE_CONFIG, live_version
from iqaguard.repository.sets import CHECKED_IN_MODELS, ModelSet, model_sets
from iqaguard.repository.writer import is_built, sha256
from iqaguard.training.data import FASHION_LABELS
from iqaguard.training.perturb import CORRUPTIONS


@pytest.fixture(scope="module")
def built(small_fashion_build):
    return small_fashion_build


def test_writes_a_servable_version(built) -> None:
    repository = built.repository
    assert built.version == 1
    assert is_built(repository)
    for member in BUILT_MEMBERS:
        assert versions(repository / member) == [1]
        manifest = json.loads((repository / member / "1" / "manifest.json").read_text())
        assert manifest["member"] == member and manifest["profile"] == "fashion" and manifest["seed"] == 0
        assert manifest["hashes"][member] == manifest["sha256"]
        assert {"torch", "numpy", "pillow"} <= set(manifest["libraries"])
        meta = read_meta(repository / member / "1" / "model.pt")
        assert meta["profile"] == "fashion" and meta["created"]
        assert meta["weights"] == "trained"
    hashes = json.loads((repository / DETECTOR / "1" / "manifest.json").read_text())["hashes"]
    files = {"labels.txt": "robust_classifier/labels.txt", "preprocess.json": "iqa_preprocess/preprocess.json",
             TEACHER: "teacher/1/model.pt", STUDENT: "student/1/model.pt"}
    for name, path in files.items():
        assert hashes[name] == sha256(repository / path)
    labels = (repository / "robust_classifier" / "labels.txt").read_text().splitlines()
    assert labels == list(FASHION_LABELS)
    assert json.loads((repository / "iqa_preprocess" / "preprocess.json").read_text()) == {"height": 28, "width": 28}
    # Nothing else new at the repository root (Triton takes every directory there for a model, hidden
    # ones too) than the default set's named ensemble, a copy of robust_classifier for set "fashion".
    # (CHECKED_IN_MODELS, not the working repository's folders: a checkout with a built set has more)
    assert sorted(p.name for p in repository.iterdir()) == sorted([*CHECKED_IN_MODELS, "robust_classifier_fashion"])
    assert (repository / "robust_classifier_fashion" / "labels.txt").read_text() == "\n".join(FASHION_LABELS) + "\n"


def test_exported_members_agree_with_eager(built) -> None:
    pixels = torch.rand(5, 3, 28, 28)
    loaded = {m: torch.jit.load(str(built.repository / m / "1" / "model.pt")) for m in BUILT_MEMBERS}
    with torch.no_grad():
        logits, probs = loaded[TEACHER](pixels)
        eager_logits, eager_probs = built.modules[TEACHER](pixels)
        assert logits.shape == (5, 10) and torch.allclose(probs.sum(1), torch.ones(5), atol=1e-5)
        assert torch.allclose(logits, eager_logits, atol=1e-5) and torch.allclose(probs, eager_probs, atol=1e-6)
        student_logits = loaded[STUDENT](pixels)
        assert torch.allclose(student_logits, built.modules[STUDENT](pixels), atol=1e-5)
        iqa = torch.from_numpy(brisque(pixels))
        suspicion, verdicts = loaded[DETECTOR](iqa, logits, student_logits)
        eager_suspicion, eager_verdicts = built.modules[DETECTOR](iqa, logits, student_logits)
    assert suspicion.shape == (5, 1) and suspicion.dtype == torch.float32
    assert torch.allclose(suspicion, eager_suspicion, atol=1e-6) and verdicts == eager_verdicts
    assert len(verdicts) == 5 and set(verdicts) <= set(VERDICTS)
    manifest = json.loads((built.repository / DETECTOR / "1" / "manifest.json").read_text())
    assert loaded[DETECTOR].threshold == pytest.approx(manifest["threshold"])
    # Fashion's served detector is the one MLP on every feature (Profile.detector_members), as the report says.
    members = json.loads((built.report_dir / "report.json").read_text())["fit"]["detector"]["members"]
    masks = [member.feature_mask for member in loaded[DETECTOR].members.children()]
    assert members == ["single_mlp"] and [int(mask.sum()) for mask in masks] == [FEATURE_DIM]
    assert max(v for k, v in manifest["export_parity"].items() if k != "detector_verdicts_equal") < 1e-4


def test_report_covers_every_setting_and_method(built) -> None:
    report = json.loads((built.report_dir / "report.json").read_text())
    assert (built.report_dir / "report.md").read_text().startswith("# iqaguard build report")
    assert (built.report_dir / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    settings = report["evaluation"]["per_setting"]
    assert report["fit"]["single_mlp"]["quality_dropout"] == 0.0  # fashion: its IQA sees every attack
    assert report["fit"]["detector"]["members"] == ["single_mlp"]
    assert not any("modality dropout" in note for note in report["notes"])
    assert any(note.startswith("The detector is one MLP on IQA + KD features") for note in report["notes"])
    summaries = report["evaluation"]["summary"]  # one MLP: the detector and its single-MLP ablation score alike
    assert summaries["detector"]["mean_auroc_attacks"] == pytest.approx(summaries["single_mlp"]["mean_auroc_attacks"])
    seen = {s["kind"] for s in settings if s["seen"]}
    assert seen == {"fgsm", "pgd", "noise", "blur", "jpeg", "contrast", "resample"}
    assert {s["kind"] for s in settings if not s["seen"]} == {"cw", "deepfool", *CORRUPTIONS}
    assert all(len([s for s in settings if s["kind"] == kind]) == 3 for kind in ("fgsm", "pgd", "jpeg", "fog"))
    for method in ("detector", "single_mlp", "iqa_only", "kd_only", "feature_squeezing"):
        summary = report["evaluation"]["summary"][method]
        assert 0.0 <= summary["false_rejection_rate"] <= 1.0
        assert all(method in s for s in settings)
        assert {"mean_auroc_unseen_attacks", "mean_auroc_unseen_all_corruptions"} <= set(summary)
        low, high = summary["ci95_mean_auroc_attacks"]  # the bootstrap interval over evaluation images
        assert 0.0 <= low <= high <= 1.0
    markdown = (built.report_dir / "report.md").read_text()
    assert "mean AUROC unseen attacks" in markdown and "deepfool overshoot=0.02 (unseen)" in markdown
    assert {row["method"] for row in report["compute"]["rows"]} >= {"detector (IQA + KD)", "feature squeezing"}
    assert set(report["timings"]) >= {"data", "teacher", "student", "export", "total"}
    assert any(t["target"].startswith("teacher test top-1") for t in report["targets"])


def test_writes_held_out_sample_images(built) -> None:
    """Clean, severe-distortion and flipping strongest-PGD evaluation images, named in report and manifests."""
    from iqaguard.imaging import decode_image

    report = json.loads((built.report_dir / "report.json").read_text())
    folder = (built.repository / report["samples"]["path"]).resolve()  # stored relative to the repository
    assert folder == (built.report_dir / "samples").resolve()
    for member in BUILT_MEMBERS:
        manifest = json.loads((built.repository / member / "1" / "manifest.json").read_text())
        assert manifest["samples"] == report["samples"]
    assert report["samples"]["adversarial_setting"] == "pgd eps=8/255"
    files = {kind: sorted((folder / kind).glob("*.png")) for kind in ("clean", "distorted", "adversarial")}
    assert {kind: len(paths) for kind, paths in files.items()} == report["samples"]["counts"]
    assert all(0 < len(paths) <= 32 for paths in files.values()), files
    pixels = {path.name: np.asarray(decode_image(path.read_bytes())) for paths in files.values() for path in paths}
    assert all(array.shape == (28, 28, 3) for array in pixels.values())
    assert all(path.name.startswith("pgd_eps8_") for path in files["adversarial"])
    severe = report["evaluation"]["summary"]["severe_distortion_settings"]
    assert {path.name.rsplit("_", 1)[0] for path in files["distorted"]} <= {
        s.replace("=", "").replace(" ", "_") for s in severe} or not severe
    # Each adversarial file is the evaluated PGD image of the clean file with the same index: within
    # eps = 8 levels of it, different, and (the reason it was kept) answered differently by the teacher.
    teacher = torch.jit.load(str(built.repository / TEACHER / "1" / "model.pt"))
    for path in files["adversarial"]:
        adversarial = pixels[path.name].astype(int)
        clean = pixels[f"clean_{path.name.rsplit('_', 1)[1]}"].astype(int)
        assert 0 < np.abs(adversarial - clean).max() <= 8
        with torch.no_grad():
            answers = teacher(torch.from_numpy(np.stack([adversarial, clean])).permute(0, 3, 1, 2).float() / 255)[0]
        assert answers[0].argmax() != answers[1].argmax(), path.name


def test_next_build_adds_a_version_and_prunes(second_fashion_version, tmp_path: Path) -> None:
    # A second build (random teacher: no training) into a copy of the repository: with keep=1 only the
    # newest would stay, but the live version 1 is protected and stays live until a rollout.
    repository = tmp_path / "model_repository"
    shutil.copytree(second_fashion_version.repository, repository)
    result = second_fashion_version
    assert result.version == 2
    for member in BUILT_MEMBERS:
        assert versions(repository / member) == [1, 2]
    fashion = find_set(repository, "fashion")
    assert live_version(repository, fashion) == 1
    assert offline_rollout(repository, "fashion").live == 2
    assert "model_version: 2" in (repository / "robust_classifier" / LIVE_CONFIG).read_text()
    assert read_meta(repository / TEACHER / "2" / "model.pt")["weights"] == "random"
    assert read_meta(repository / STUDENT / "2" / "model.pt")["teacher_weights"] == "random"
    report = json.loads((result.repository.parent / "reports" / "report.json").read_text())
    assert any("RANDOM" in note for note in report["notes"])


def test_set_flags_reach_the_writer_before_any_slow_step(built, tmp_path: Path, capsys) -> None:
    # The build's export is the writer's write_set (a second set's files: tests/unit/test_model_sets.py);
    # here: --set-name/--as-default decide where the set goes, and a conflict stops the build at once.
    repository = tmp_path / "model_repository"
    shutil.copytree(built.repository, repository)
    assert model_sets(repository) == [ModelSet("fashion", default=True)]
    assert main(["--set-name", "fashion", "--no-as-default", "--repository", str(repository)]) == 2
    assert "'fashion' is the default set" in capsys.readouterr().err
    assert versions(repository / "teacher") == [1] and not (repository / "teacher_fashion").exists()


def test_a_bad_set_name_fails_before_any_step(tmp_path: Path, capsys) -> None:
    repository = empty_repository(tmp_path / "model_repository")
    assert main(["--set-name", "Natural", "--repository", str(repository)]) == 2
    assert "invalid model set name 'Natural'" in capsys.readouterr().err


def test_imagenet_without_weights_fails_clearly(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    code = main(["--profile", "imagenet", "--images", str(images), "--repository", str(empty_repository(
        tmp_path / "model_repository"))])
    assert code == 2
    message = capsys.readouterr().err
    assert "weights not found" in message and "--weights random" in message and "never downloads" in message
    assert not any(any((tmp_path / "model_repository" / m).glob("[0-9]*")) for m in BUILT_MEMBERS)


def test_served_path_accepts_clean_and_flags_strong_pgd(built) -> None:
    """Through the serving code (PNG bytes -> Preprocessor -> exported members): clean pass, strong PGD is flagged.

    Even this tiny build's detector must accept most clean test images (its threshold is calibrated
    for ≤ 5% rejections) and flag PGD at eps = 16/255, which BRISQUE and the student both notice.
    """
    from iqaguard.in_triton.preprocess import Preprocessor
    from iqaguard.repository.layout import read_input_size
    from iqaguard.training.data import fashion_arrays
    from iqaguard.training.perturb import Perturbation, attack, encode, to_image

    repository = built.repository
    preprocessor = Preprocessor(read_input_size(repository / "iqa_preprocess"))
    members = {m: torch.jit.load(str(repository / m / "1" / "model.pt")) for m in BUILT_MEMBERS}

    def verdicts(encoded: list[bytes]) -> tuple[list[str], torch.Tensor]:
        (result,) = preprocessor.run([encoded])
        pixels = torch.from_numpy(result.pixels)
        with torch.no_grad():
            teacher_logits, _ = members[TEACHER](pixels)
            _, said = members[DETECTOR](torch.from_numpy(result.iqa), teacher_logits, members[STUDENT](pixels))
        return said, pixels

    grey = fashion_arrays()["test_images"][-60:]
    clean_verdicts, pixels = verdicts([encode(Image.fromarray(image, mode="L")) for image in grey])
    assert clean_verdicts.count("accept") >= 0.8 * len(grey), clean_verdicts
    with torch.no_grad():
        targets = members[TEACHER](pixels)[0].argmax(1)
    strong_pgd = Perturbation("pgd", 16 / 255)
    adversarial = attack(members[TEACHER], pixels, targets, strong_pgd, torch.Generator().manual_seed(0), pgd_steps=10)
    attacked_verdicts, _ = verdicts([encode(to_image(x)) for x in adversarial])
    assert len(attacked_verdicts) - attacked_verdicts.count("accept") >= 0.8 * len(grey), attacked_verdicts


@pytest.mark.integration
def test_served_ensemble_on_built_artifacts(built, tmp_path: Path) -> None:
    """The real embedded Triton server on this build: clean test images accepted, strong PGD flagged. The
    attacked images are other images than the clean ones and are sent first, so the server's probe memory
    has no clean answer near them: their verdicts are the detector's own."""
    import tritonclient.grpc as grpcclient
    from support.server import start_server

    from iqaguard.training.data import fashion_arrays
    from iqaguard.training.perturb import Perturbation, attack, encode, to_image

    test_images = fashion_arrays()["test_images"]
    grey, clean_grey = test_images[-40:], test_images[-80:-40]
    clean = [encode(Image.fromarray(image, mode="L")) for image in clean_grey]
    teacher = torch.jit.load(str(built.repository / TEACHER / "1" / "model.pt"))
    pixels = torch.from_numpy(np.repeat(grey[:, None], 3, axis=1)).float() / 255
    clean_pixels = torch.from_numpy(np.repeat(clean_grey[:, None], 3, axis=1)).float() / 255
    with torch.no_grad():
        answers, clean_answers = teacher(pixels)[0].argmax(1), teacher(clean_pixels)[0].argmax(1)
    strong_pgd = Perturbation("pgd", 16 / 255)
    adversarial = attack(teacher, pixels, answers, strong_pgd, torch.Generator().manual_seed(0), pgd_steps=10)
    attacked = [encode(to_image(x)) for x in adversarial]

    server = start_server(built.repository, tmp_path / "triton.log")
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)

        def ask(data: bytes) -> tuple[int, str]:
            tensor = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
            result = client.infer("robust_classifier", [tensor])
            return int(result.as_numpy("PROBS")[0].argmax()), result.as_numpy("VERDICT")[0, 0].decode()

        served_attacked = [ask(data) for data in attacked]
        served_clean = [ask(data) for data in clean]
    finally:
        server.stop()
    assert [label for label, _ in served_clean] == clean_answers.tolist()  # the served teacher is the built one
    assert sum(verdict == "accept" for _, verdict in served_clean) >= 0.8 * len(clean), served_clean
    # A tiny build (1 epoch, 24 fit images, 2-step PGD): 31 of 40 flagged with ART's PGD at seed 0.
    assert sum(verdict != "accept" for _, verdict in served_attacked) >= 0.75 * len(attacked), served_attacked


# Stated tolerance for the torch members: oneDNN/BLAS pick convolution and matrix-product kernels by batch
# size, so an image's logits move by float rounding with the batch it shares; through the detector that moved
# SUSPICION by up to 3.9e-5 (Xeon, AVX-512, batches of 1-96). IQA, computed in numpy, is exact.
SUSPICION_BATCH_TOLERANCE = 1e-4


def test_verdicts_do_not_depend_on_batch_composition(built) -> None:
    """The build's evaluation sample images, served in shuffled dynamic batches of every size.

    IQA is bit-identical; SUSPICION stays within SUSPICION_BATCH_TOLERANCE; verdicts are identical for
    every image (none may sit so close to the threshold that the tolerance could flip it).
    """
    from iqaguard.in_triton.preprocess import Preprocessor
    from iqaguard.repository.layout import read_input_size

    report = json.loads((built.report_dir / "report.json").read_text())
    files = sorted((built.repository / report["samples"]["path"]).glob("*/*.png"))  # relative to the repository
    encoded = [path.read_bytes() for path in files]
    assert len(encoded) >= 40
    preprocessor = Preprocessor(read_input_size(built.repository / "iqa_preprocess"))
    members = {m: torch.jit.load(str(built.repository / m / "1" / "model.pt")) for m in BUILT_MEMBERS}
    threshold = members[DETECTOR].threshold

    def serve(batch: list[int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        results = preprocessor.run([[encoded[i]] for i in batch])  # one request per image, as Triton batches
        pixels = torch.from_numpy(np.concatenate([r.pixels for r in results]))
        iqa = np.concatenate([r.iqa for r in results])
        with torch.no_grad():
            suspicion, verdicts = members[DETECTOR](
                torch.from_numpy(iqa), members[TEACHER](pixels)[0], members[STUDENT](pixels))
        return iqa, suspicion[:, 0].numpy(), verdicts

    alone = [serve([i]) for i in range(len(encoded))]
    iqa_alone = np.concatenate([a[0] for a in alone])
    suspicion_alone = np.concatenate([a[1] for a in alone])
    verdicts_alone = [a[2][0] for a in alone]
    assert not np.any(np.abs(suspicion_alone - threshold) <= SUSPICION_BATCH_TOLERANCE)
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch_size in (2, 7, 16, 32, len(encoded)):
        order = rng.permutation(len(encoded))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size].tolist()
            iqa, suspicion, verdicts = serve(batch)
            np.testing.assert_array_equal(iqa, iqa_alone[batch])
            worst = max(worst, float(np.abs(suspicion - suspicion_alone[batch]).max()))
            assert verdicts == [verdicts_alone[i] for i in batch]
    assert worst <= SUSPICION_BATCH_TOLERANCE, worst
