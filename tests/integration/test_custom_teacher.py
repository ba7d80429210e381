"""The general path: a guard for any TorchScript classifier of [0,1] pixels, from a folder of unlabeled images.

A tiny TorchScript teacher made here, and crops of skimage photos: the build refuses what it cannot
use (not TorchScript, wrong output shape, too few images, labels that do not fit) before any slow
step, and builds a small servable set from what it can.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import CHECKED_IN_REPOSITORY
from torch import nn

from iqaguard.contract import BUILT_MEMBERS, DETECTOR, STUDENT, TEACHER
from iqaguard.models.wrappers import read_meta
from iqaguard.pipeline import build_model_set, main
from iqaguard.repository.layout import copy_checked_in

SIZE = 32
IMAGES = 30
# Few images: calibration needs ceil(log(1 - 0.2) / log(0.95)) = 5 for a 20%-confidence promise.
SMALL = {"student_epochs": 1, "fit_images": 4, "eval_images": 4, "pgd_steps": 2, "frr_confidence": 0.2,
         "cache_dir": None}


class TinyClassifier(nn.Module):
    """Pixels in [0,1] -> 3 logits, normalisation inside (what a user's exported classifier looks like)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv((pixels - 0.5) / 0.25))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class WrongShape(nn.Module):
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.mean(1)  # [N,H,W], not logits


def save_script(module: nn.Module, path: Path) -> Path:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny TorchScript teacher, a folder of 30 photo crops (PNG and JPEG), a fresh repository."""
    from skimage import data

    root = tmp_path_factory.mktemp("custom")
    torch.manual_seed(0)
    save_script(TinyClassifier(), root / "teacher.pt")
    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    photos = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]
    for index in range(IMAGES):
        photo = photos[index % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - 96), rng.integers(0, photo.shape[1] - 96)
        crop = Image.fromarray(photo[top : top + 96, left : left + 96])
        crop.save(folder / (f"{index:02d}.png" if index % 2 else f"{index:02d}.jpg"))
    copy_checked_in(CHECKED_IN_REPOSITORY, root / "model_repository")
    return root


def run_cli(workspace: Path, *extra: str) -> int:
    return main(["--profile", "custom", "--images", str(workspace / "images"), "--size", str(SIZE),
                 "--repository", str(workspace / "model_repository"), "--reports", str(workspace / "reports-cli"),
                 "--frr-confidence", "0.2", "--no-cache", *extra])


def nothing_written(workspace: Path) -> bool:
    return not any(any((workspace / "model_repository" / m).glob("[0-9]*")) for m in BUILT_MEMBERS)


def test_refuses_a_file_that_is_not_torchscript(workspace: Path, capsys) -> None:
    state = workspace / "state_dict.pt"
    torch.save(TinyClassifier().state_dict(), state)
    assert run_cli(workspace, "--teacher", str(state)) == 2
    message = capsys.readouterr().err
    assert "state_dict.pt is not a TorchScript module" in message and "torch.jit.save" in message
    assert nothing_written(workspace)


def test_refuses_a_teacher_without_logits(workspace: Path, capsys) -> None:
    assert run_cli(workspace, "--teacher", str(save_script(WrongShape(), workspace / "wrong.pt"))) == 2
    message = capsys.readouterr().err
    assert f"returned shape [2, {SIZE}, {SIZE}]" in message and "expected logits [2,C]" in message
    assert nothing_written(workspace)


def test_refuses_too_few_images(workspace: Path, capsys, tmp_path: Path) -> None:
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted((workspace / "images").iterdir())[:8]:
        (few / path.name).write_bytes(path.read_bytes())
    code = main(["--profile", "custom", "--teacher", str(workspace / "teacher.pt"), "--images", str(few),
                 "--repository", str(workspace / "model_repository"), "--size", str(SIZE)])
    assert code == 2
    message = capsys.readouterr().err
    assert "too few images: 8 usable" in message and "59 clean images to calibrate" in message
    assert nothing_written(workspace)


def test_refuses_labels_that_do_not_fit(workspace: Path, capsys) -> None:
    labels = workspace / "labels.txt"
    labels.write_text("cat\ndog\n")
    assert run_cli(workspace, "--teacher", str(workspace / "teacher.pt"), "--labels", str(labels)) == 2
    assert "labels.txt names 2 classes; the teacher has 3" in capsys.readouterr().err
    assert nothing_written(workspace)


def test_teacher_only_for_the_custom_profile(workspace: Path, capsys) -> None:
    code = main(["--profile", "fashion", "--teacher", str(workspace / "teacher.pt"),
                 "--repository", str(workspace / "model_repository")])
    assert code == 2 and "--teacher does not apply to the fashion profile" in capsys.readouterr().err


def test_small_build_serves_the_users_classifier(workspace: Path) -> None:
    labels = workspace / "names.txt"
    labels.write_text("alpha\nbeta\ngamma\n")
    result = build_model_set("custom", workspace / "model_repository", teacher=workspace / "teacher.pt",
                             images=workspace / "images", size=SIZE, labels=labels,
                             reports=workspace / "reports", as_default=True, **SMALL)
    repository = result.repository
    assert (repository / "robust_classifier" / "labels.txt").read_text().splitlines() == ["alpha", "beta", "gamma"]
    assert json.loads((repository / "iqa_preprocess" / "preprocess.json").read_text()) == {"height": SIZE,
                                                                                            "width": SIZE}
    manifest = json.loads((repository / TEACHER / str(result.version) / "manifest.json").read_text())
    assert manifest["profile"] == "custom" and manifest["teacher"]["teacher_file"] == "teacher.pt"
    assert manifest["teacher"]["classes"] == 3 and len(manifest["teacher"]["teacher_sha256"]) == 64
    assert read_meta(repository / TEACHER / str(result.version) / "model.pt")["weights"] == "pretrained"
    # The served teacher is the user's module, unchanged: same logits as the file it came from.
    user = torch.jit.load(str(workspace / "teacher.pt"))
    served = torch.jit.load(str(repository / TEACHER / str(result.version) / "model.pt"))
    pixels = torch.rand(4, 3, SIZE, SIZE)
    with torch.no_grad():
        logits, probs = served(pixels)
        torch.testing.assert_close(logits, user(pixels), rtol=1e-5, atol=1e-5)
        student_logits = torch.jit.load(str(repository / STUDENT / str(result.version) / "model.pt"))(pixels)
    assert probs.shape == (4, 3) and student_logits.shape == (4, 3)
    assert torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)
    report = json.loads((result.report_dir / "report.json").read_text())
    data = report["data"]
    assert data["calibration"].startswith("6 images") and data["evaluation"].startswith("6 images")
    assert data["detector fit pool"].startswith("6 images") and data["student distillation"].startswith("12 images")
    assert {row["method"] for row in report["compute"]["rows"]} >= {"detector (IQA + KD)", "feature squeezing"}
    assert (repository / DETECTOR / str(result.version) / "model.pt").is_file()
