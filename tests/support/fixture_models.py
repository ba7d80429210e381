"""TEST FIXTURES ONLY: tiny untrained TorchScript members so plumbing tests need no build.

Every module written here carries meta.json {"weights": "random", "profile": "test-fixture"};
nothing outside the tests uses them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from iqaguard.contract import IQA_DIM
from iqaguard.repository.layout import copy_checked_in
from iqaguard.repository.sets import ModelSet
from iqaguard.repository.writer import next_version, write_set
from support import CHECKED_IN_REPOSITORY

FIXTURE_META = {"profile": "test-fixture", "weights": "random"}
FIXTURE_CLASSES = [f"fixture_class_{index}" for index in range(10)]
FIXTURE_SIZE = (32, 32)
FIXTURE_SET = "fixture"  # the fixture repository's default set (robust_classifier, robust_classifier_fixture)


class FixtureClassifier(nn.Module):
    """Normalise inside, one conv, global pooling, linear head; returns (logits, probs) or logits."""

    def __init__(self, width: int, with_probs: bool, classes: int = len(FIXTURE_CLASSES)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Linear(width, classes)
        self.with_probs = with_probs

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(pixels - self.mean)).mean(dim=(2, 3))
        return self.head(features)


class FixtureTeacher(FixtureClassifier):
    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(pixels)
        return logits, torch.softmax(logits, dim=1)


class FixtureStudent(FixtureClassifier):
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.logits(pixels)


class FixtureDetector(nn.Module):
    """Suspicion from the IQA score and teacher/student disagreement; verdict by a fixed threshold."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(
        self, iqa: torch.Tensor, teacher_logits: torch.Tensor, student_logits: torch.Tensor
    ) -> tuple[torch.Tensor, list[str]]:
        disagreement = (teacher_logits.softmax(1) - student_logits.softmax(1)).abs().sum(1, keepdim=True)
        features = torch.cat([iqa[:, -1:] / 100.0, disagreement, teacher_logits.max(1, keepdim=True)[0]], 1)
        suspicion = torch.sigmoid(self.linear(features))
        verdicts: list[str] = []
        for index in range(suspicion.shape[0]):
            if suspicion[index, 0] < 0.5:
                verdicts.append("accept")
            elif iqa[index, -1] > 50.0:
                verdicts.append("low_quality")
            else:
                verdicts.append("adversarial")
        return suspicion, verdicts


def fixture_modules(seed: int = 0, classes: int = len(FIXTURE_CLASSES)) -> dict[str, torch.jit.ScriptModule]:
    """Scripted, untrained members keyed by model name (deterministic for a seed)."""
    torch.manual_seed(seed)
    return {
        "teacher": torch.jit.script(FixtureTeacher(16, True, classes).eval()),
        "student": torch.jit.script(FixtureStudent(4, False, classes).eval()),
        "detector": torch.jit.script(FixtureDetector().eval()),
    }


def write_fixture_set(
    repository: Path,
    model_set: ModelSet,
    size: tuple[int, int] = FIXTURE_SIZE,
    labels: Sequence[str] = FIXTURE_CLASSES,
    seed: int = 0,
) -> Path:
    """Write fixture members as a set, the way a build writes one (iqaguard.repository.writer.write_set)."""
    extra = {"meta.json": json.dumps(FIXTURE_META)}
    with tempfile.TemporaryDirectory(prefix="fixture-set-") as scratch:
        files = {}
        for name, module in fixture_modules(seed, len(labels)).items():
            files[name] = Path(scratch) / f"{name}.pt"
            torch.jit.save(module, str(files[name]), _extra_files=extra)
        version = next_version(repository, model_set.members)
        write_set(repository, model_set, version, files, dict.fromkeys(files, FIXTURE_META), labels, size)
    assert IQA_DIM == 37
    return repository


def write_fixture_repository(target: Path, seed: int = 0) -> Path:
    """Copy the checked-in configs to `target` and write fixture members there as the default set."""
    copy_checked_in(CHECKED_IN_REPOSITORY, target)
    return write_fixture_set(target, ModelSet(FIXTURE_SET, default=True), seed=seed)
