"""Build parts: metrics, Feature Squeezing, perturbations as served, data, training determinism, repository writes."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import median_filter as scipy_median

from iqaguard.imaging import to_pixels
from iqaguard.models.networks import MissingWeightsError, SmallResNet, SmallStudent, imagenet_teacher
from iqaguard.models.wrappers import PixelClassifier, TeacherModule, export_torchscript, make_meta, read_meta
from iqaguard.repository import writer as repository
from iqaguard.repository.layout import versions
from iqaguard.repository.live import LIVE_CONFIG, LiveState, read_state
from iqaguard.repository.sets import ModelSet
from iqaguard.training.data import grey_to_pixels, load_folder, read_idx
from iqaguard.training.distill import distill
from iqaguard.training.metrics import auroc, roc_curve, tpr_at_fpr
from iqaguard.training.perturb import CORRUPTIONS, Perturbation, attack, distort
from iqaguard.training.squeeze import FeatureSqueezing, median_filter, reduce_bit_depth
from iqaguard.training.teacher import train_teacher

# ------------------------------------------------------------------------------------------- metrics


def test_auroc_known_values_and_agrees_with_roc_area() -> None:
    assert auroc(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == 1.0
    assert auroc(np.array([0.3, 0.4]), np.array([0.1, 0.2])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5
    assert auroc(np.array([0.1, 0.4]), np.array([0.2, 0.5])) == 0.75
    rng = np.random.default_rng(0)
    negatives, positives = rng.normal(0, 1, 500), rng.normal(1, 1, 300)
    fpr, tpr = roc_curve(negatives, positives)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.trapz(tpr, fpr) == pytest.approx(auroc(negatives, positives), abs=1e-9)


def test_tpr_at_fpr_reads_the_roc() -> None:
    negatives = np.arange(100) / 100.0  # 0.00 .. 0.99
    positives = np.array([0.5, 0.96, 0.97, 2.0])
    # At most 5% of negatives (0.95..0.99) may be above the threshold: 0.96, 0.97 and 2.0 count.
    assert tpr_at_fpr(negatives, positives, 0.05) == 0.75
    assert tpr_at_fpr(negatives, positives, 0.0) == 0.25


# --------------------------------------------------------------------------------- feature squeezing


def test_squeezers() -> None:
    x = torch.rand(2, 3, 9, 11)
    for size in (2, 3):
        expected = scipy_median(x.numpy(), size=(1, 1, size, size), mode="reflect")
        assert np.array_equal(median_filter(x, size).numpy(), expected)
    one_bit = reduce_bit_depth(x, 1)
    assert set(one_bit.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(reduce_bit_depth(torch.tensor([0.0, 0.49, 0.51, 1.0]), 1), torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_feature_squeezing_score_is_zero_for_invariant_teacher() -> None:
    constant = TeacherModule(PixelClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(27, 4)),
                                             (0.0,) * 3, (1.0,) * 3))
    with torch.no_grad():
        constant.classifier.network[1].weight.zero_()
    score = FeatureSqueezing(1, 2).score(constant, torch.rand(5, 3, 3, 3))
    assert score.shape == (5,) and torch.allclose(score, torch.zeros(5))


# ------------------------------------------------------------------------------------- perturbations


def linear_teacher(seed: int = 0, classes: int = 5) -> TeacherModule:
    torch.manual_seed(seed)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, classes))
    return TeacherModule(PixelClassifier(network, (0.5,) * 3, (0.25,) * 3)).eval().requires_grad_(False)


def test_attacks_stay_in_budget_and_raise_the_loss() -> None:
    teacher = linear_teacher()
    x = torch.randint(0, 256, (16, 3, 8, 8)).float() / 255  # served pixels are 8-bit
    targets = teacher(x)[0].argmax(1)
    eps = 4 / 255
    loss = torch.nn.functional.cross_entropy
    clean_loss = loss(teacher(x)[0], targets)

    def run(setting: Perturbation, seed: int = 0) -> np.ndarray:
        return attack(teacher, x, targets, setting, torch.Generator().manual_seed(seed), pgd_steps=10)

    one_step, many = run(Perturbation("fgsm", eps)), run(Perturbation("pgd", eps))
    for served in (one_step, many):
        assert served.shape == (16, 3, 8, 8) and served.dtype == np.float32
        assert np.allclose(served * 255, np.rint(served * 255), atol=1e-4)  # 8-bit, as a PNG would carry it
        assert np.abs(served - x.numpy()).max() <= eps + 1e-6  # rounding never leaves the budget
        assert served.min() >= 0 and served.max() <= 1
        assert loss(teacher(torch.from_numpy(served))[0], targets) > clean_loss
    assert loss(teacher(torch.from_numpy(many))[0], targets) >= loss(teacher(torch.from_numpy(one_step))[0], targets)
    assert np.array_equal(run(Perturbation("pgd", eps), seed=3), run(Perturbation("pgd", eps), seed=3))


@pytest.mark.parametrize("kind", ["cw", "deepfool"])
def test_minimal_norm_attacks_flip_the_teacher(kind: str) -> None:
    """CW-L2 and DeepFool have no budget: they move each image just past the teacher's decision boundary."""
    teacher = linear_teacher()
    x = torch.randint(0, 256, (16, 3, 8, 8)).float() / 255
    targets = teacher(x)[0].argmax(1)
    setting = Perturbation(kind, 1.0 if kind == "cw" else 0.1, seen=False)
    served = attack(teacher, x, targets, setting, torch.Generator().manual_seed(0))
    flipped = teacher(torch.from_numpy(served))[0].argmax(1) != targets
    assert flipped.float().mean() >= 0.5, f"{kind} flipped {flipped.float().mean():.0%} after 8-bit rounding"
    assert not setting.seen and setting.name.startswith("cw-l2" if kind == "cw" else "deepfool")


@pytest.mark.parametrize("kind", ["cw", "deepfool"])
def test_minimal_norm_attacks_on_many_classes_take_one_image_per_gradient(kind: str, monkeypatch) -> None:
    """ART's CW and DeepFool compute class gradients per distinct label of a batch (their cost grows with the
    batch's size squared): beyond 10 classes every gradient the attack asks for must concern one image."""
    from art.estimators.classification import PyTorchClassifier

    batch_sizes: list[int] = []
    original = PyTorchClassifier.class_gradient

    def recording(self, x, *args, **kwargs):
        batch_sizes.append(len(x))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(PyTorchClassifier, "class_gradient", recording)
    teacher = linear_teacher(classes=20)
    x = torch.randint(0, 256, (6, 3, 8, 8)).float() / 255
    targets = teacher(x)[0].argmax(1)
    setting = Perturbation(kind, 1.0 if kind == "cw" else 0.3, seen=False)
    served = attack(teacher, x, targets, setting, torch.Generator().manual_seed(0))
    assert batch_sizes and max(batch_sizes) == 1, f"class gradients over {max(batch_sizes)} images at once"
    flipped = teacher(torch.from_numpy(served))[0].argmax(1) != targets
    assert flipped.float().mean() >= 0.5, f"{kind} flipped {flipped.float().mean():.0%} after 8-bit rounding"


def test_unseen_settings_follow_the_seen_ones_and_stay_out_of_the_fit() -> None:
    from iqaguard.training.profiles import PROFILES

    settings = PROFILES["fashion"].perturbations()
    seen = [s.seen for s in settings]
    assert seen == sorted(seen, reverse=True), "the seen settings are a prefix"
    unseen = [s for s in settings if not s.seen]
    assert {s.kind for s in unseen} == {"cw", "deepfool", *CORRUPTIONS}
    assert all(s.max_images for s in unseen)


def test_evaluation_plan_caps_seen_settings_and_lets_unseen_attacks_cover_more_photos() -> None:
    from iqaguard.training.featurize import evaluation_plan
    from iqaguard.training.profiles import PROFILES

    settings = PROFILES["natural"].perturbations()  # 40 photos per seen setting, CW and DeepFool on 80
    count, capped = evaluation_plan(settings, eval_images=40, available=120, bounded=False)
    assert count == 80 and [s.name for s in capped] == [s.name for s in settings]
    assert {s.max_images for s in capped if s.seen} == {40}
    assert {s.max_images for s in capped if s.kind in ("cw", "deepfool")} == {80}
    assert {s.max_images for s in capped if s.is_corruption} == {40}
    assert evaluation_plan(settings, eval_images=40, available=50, bounded=False)[0] == 50  # a small folder
    # --eval-images bounds every setting (small test builds stay small); a smaller cap of its own is kept.
    count, capped = evaluation_plan(settings, eval_images=8, available=120, bounded=True)
    assert count == 8 and {s.max_images for s in capped} == {8}
    fashion = PROFILES["fashion"].perturbations()
    count, capped = evaluation_plan(fashion, eval_images=500, available=4000, bounded=True)
    assert count == 500 and {s.max_images for s in capped if s.is_corruption} == {250}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruptions_change_the_image_and_differ_by_severity(name: str) -> None:
    """Not necessarily monotonic in pixel error: ImageNet-C's elastic transform is not."""
    from skimage import data

    pixels = to_pixels(Image.fromarray(data.chelsea()), (48, 48))
    outputs = []
    for severity in (1, 5):
        out = distort(pixels, Perturbation(name, severity, seen=False), np.random.default_rng(0))
        assert out.shape == pixels.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
        assert np.abs(out - pixels).mean() > 1 / 255
        outputs.append(out)
    assert not np.array_equal(*outputs)


@pytest.mark.parametrize("kind", ["noise", "blur", "jpeg", "contrast", "resample"])
def test_distortions_grow_with_severity(kind: str) -> None:
    from skimage import data

    from iqaguard.training.profiles import PROFILES

    photo = Image.fromarray(data.camera()).convert("RGB")
    pixels = to_pixels(photo, (32, 32))
    rng = np.random.default_rng(0)
    errors = []
    for level in PROFILES["fashion"].distortions[kind]:
        out = distort(pixels, Perturbation(kind, level), rng)
        assert out.shape == pixels.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
        errors.append(float(np.abs(out - pixels).mean()))
    assert errors[0] > 0 and errors == sorted(errors), errors


# ----------------------------------------------------------------------------------------------- data


def test_read_idx_and_grey_to_pixels(tmp_path: Path) -> None:
    images = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    header = b"\x00\x00\x08\x03" + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + images.tobytes()))
    assert np.array_equal(read_idx(path), images)
    pixels = grey_to_pixels(images, (4, 5))
    assert pixels.shape == (2, 3, 4, 5) and np.array_equal(pixels[:, 1], images)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="unsigned-byte"):
        read_idx(bad)


def test_load_folder_decodes_like_the_server(tmp_path: Path) -> None:
    from skimage import data

    Image.fromarray(data.chelsea()).save(tmp_path / "cat.jpg")
    Image.fromarray(data.camera()).save(tmp_path / "camera.png")
    (tmp_path / "notes.png").write_bytes(b"not an image")
    images = load_folder(tmp_path, (24, 32))
    assert images.pixels.shape == (2, 3, 24, 32) and images.labels is None
    assert "1 refused" in images.source


def test_as_float_equals_to_pixels() -> None:
    from iqaguard.training.data import as_float

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8))
    pixels = to_pixels(image, (6, 7))
    stored = np.rint(pixels * 255).astype(np.uint8)[None]
    assert np.array_equal(as_float(stored)[0].numpy(), pixels)


# --------------------------------------------------------------------------------------------- training


def test_training_and_distillation_are_deterministic() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (96, 3, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 96)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        teacher = PixelClassifier(SmallResNet(10), (0.5,) * 3, (0.5,) * 3)
        train_teacher(teacher, pixels, labels, epochs=1, seed=3, batch_size=32)
        student = PixelClassifier(SmallStudent(10), (0.5,) * 3, (0.5,) * 3)
        distill(student, teacher, pixels, epochs=1, seed=4, labels=labels, batch_size=32)
        states.append({**teacher.state_dict(), **{f"s.{k}": v for k, v in student.state_dict().items()}})
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_student_is_under_an_eighth_of_the_teacher() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    flops = []
    for network in (SmallResNet(10), SmallStudent(10)):
        with FlopCounterMode(display=False) as counter:
            network.eval()(torch.rand(1, 3, 28, 28))
        flops.append(counter.get_total_flops())
    assert flops[1] * 8 <= flops[0]


# ------------------------------------------------------------------------------------ weights & export


def test_imagenet_weights_never_silently_random(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="never downloads"):
        imagenet_teacher("auto")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        imagenet_teacher(str(tmp_path / "missing.pth"))
    network, kind, path = imagenet_teacher("random")
    assert kind == "random" and path is None and network.fc.out_features == 1000


def test_export_carries_meta_and_refuses_unknown_weight_kinds(tmp_path: Path) -> None:
    module = PixelClassifier(SmallStudent(10), (0.5,) * 3, (0.5,) * 3).eval()
    path = tmp_path / "model.pt"
    export_torchscript(module, path, make_meta("fashion", "random", purpose="test"))
    meta = read_meta(path)
    assert meta["weights"] == "random" and meta["profile"] == "fashion" and meta["purpose"] == "test"
    x = torch.rand(2, 3, 28, 28)
    assert torch.allclose(torch.jit.load(str(path))(x), module(x), atol=1e-6)
    with pytest.raises(ValueError):
        make_meta("fashion", "whatever")


# ------------------------------------------------------------------------------------------ repository


CHECKED_IN = Path(__file__).resolve().parents[2] / "model_repository"


def fake_repository(root: Path) -> Path:
    """The checked-in configs alone (no model.py, no built versions)."""
    for member in ("teacher", "student", "detector", "guard_monitor", "robust_classifier", "iqa_preprocess"):
        (root / member).mkdir(parents=True)
        (root / member / "config.pbtxt").write_text((CHECKED_IN / member / "config.pbtxt").read_text())
    return root


def test_versions_are_shared_written_whole_and_pruned(tmp_path: Path) -> None:
    repo = fake_repository(tmp_path / "repo")
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    assert repository.next_version(repo) == 1
    (repo / "student" / "4").mkdir()  # a stray newer version of one member moves the whole set on
    assert repository.next_version(repo) == 5
    for version in (5, 6):
        for member in ("teacher", "student", "detector"):
            repository.write_member(repo, member, version, model, {"version": version})
    with pytest.raises(FileExistsError):
        repository.write_member(repo, "teacher", 6, model, {})
    assert not repository.is_built(repo)  # set files missing
    members = dict.fromkeys(("teacher", "student", "detector"), model)
    manifests = {name: {"version": 7} for name in members}
    repository.write_set(repo, ModelSet("fashion", default=True), 7, members, manifests, ["a", "b"], (28, 32), keep=2)
    assert repository.is_built(repo)
    assert (repo / "robust_classifier" / "labels.txt").read_text() == "a\nb\n"
    assert (repo / "robust_classifier_fashion" / "labels.txt").read_text() == "a\nb\n"
    assert json.loads((repo / "iqa_preprocess" / "preprocess.json").read_text()) == {"height": 28, "width": 32}
    assert versions(repo / "teacher") == [6, 7] and versions(repo / "student") == [6, 7]
    assert read_state(repo, ModelSet("fashion", default=True)) == LiveState(live=7, history=[7])  # first build: live
    assert 'model_version: 7' in (repo / "robust_classifier" / LIVE_CONFIG).read_text()
    removed = repository.prune(repo, keep=1)
    assert len(removed) == 3 and versions(repo / "detector") == [7]
    assert json.loads((repo / "detector" / "7" / "manifest.json").read_text()) == {"version": 7}
    assert not list(repo.glob("*/.building-*")) and not list(repo.glob("*/.staging-*"))
    with pytest.raises(FileNotFoundError, match=r"config\.pbtxt"):
        repository.write_member(tmp_path / "elsewhere", "teacher", 1, model, {})


def test_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert repository.sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_served_png_round_trip_is_lossless() -> None:
    from iqaguard.training.perturb import served, to_image

    pixels = np.rint(np.random.default_rng(0).random((3, 5, 6)) * 255).astype(np.float32) / 255
    assert np.array_equal(served(to_image(pixels), (5, 6)), pixels)
    buffer = io.BytesIO()
    to_image(pixels).save(buffer, format="PNG")
    assert buffer.getvalue()


def test_distortions_shared_among_workers_equal_those_made_in_one_process() -> None:
    """Each image draws from its own generator, so a worker pool changes nothing in the build's data."""
    from iqaguard.training.perturb import distort_many, distortion_pool

    pixels = np.random.default_rng(0).random((12, 3, 16, 16), dtype=np.float32)
    settings = [Perturbation("noise", 0.1), Perturbation("jpeg", 15), Perturbation("snow", 3, seen=False)]
    alone = [distort_many(pixels, s, np.random.default_rng(5)) for s in settings]
    pool = distortion_pool()
    if pool is None:
        pytest.skip("one usable core: no pool to compare with")
    with pool:
        shared = [distort_many(pixels, s, np.random.default_rng(5), pool) for s in settings]
    for a, b in zip(alone, shared, strict=True):
        assert a.shape == (12, 3, 16, 16) and np.array_equal(a, b)
    assert not np.array_equal(alone[0][0], alone[0][1]), "each image has its own noise"
