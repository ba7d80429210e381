"""A white-box attacker who knows the guard: PGD through the exported teacher, student and detector.

The loss is the teacher's margin (logit of the clean answer over the best other) plus the detector's
SUSPICION, weighted: the attacker wants another answer *and* no flag. Gradients flow through the three
TorchScript members as served. BRISQUE (the detector's IQA input) is not differentiable here: it is
recomputed exactly from the current image at every step and treated as a constant in the backward pass
(BPDA with a zero gradient), so the attacker sees its effect but cannot steer it directly — a weaker
attacker than one with a differentiable BRISQUE, stated as such in the report.

Every step is checked on the image as the server would receive it (rounded to 8 bits); the first
evading image is kept. torchattacks and ART attack a classifier's loss, not this joint
teacher-plus-detector objective with a non-differentiable input, hence this small loop of our own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iqaguard.contract import VERDICT_ACCEPT
from iqaguard.iqa import brisque
from iqaguard.redteam.square import SUSPICION_WEIGHT
from iqaguard.repository.layout import MODEL_FILE
from iqaguard.repository.sets import ModelSet


@dataclass
class GuardMembers:
    """The exported members of one built version of a set, loaded for gradients."""

    teacher: torch.jit.ScriptModule
    student: torch.jit.ScriptModule
    detector: torch.jit.ScriptModule

    @classmethod
    def load(cls, repository: Path, model_set: ModelSet, version: int) -> GuardMembers:
        teacher, student, detector = (
            torch.jit.load(str(Path(repository) / name / str(version) / MODEL_FILE)).eval()
            for name in model_set.members
        )
        return cls(teacher, student, detector)

    def answer(self, pixels: torch.Tensor, iqa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(teacher logits, SUSPICION [N], verdicts) for float pixels [N,3,H,W] in [0,1] and their IQA."""
        logits, _ = self.teacher(pixels)
        suspicion, verdicts = self.detector(iqa, logits, self.student(pixels))
        return logits, suspicion.reshape(-1), list(verdicts)


@dataclass
class WhiteBoxOutcome:
    """One attacked image: whether it evaded, after how many steps (0: the random start), and the evading
    8-bit image (else the last one)."""

    evaded: bool
    steps: int
    image: np.ndarray  # uint8 [H,W,3]


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    own = logits.gather(1, labels[:, None])[:, 0]
    others = logits.masked_fill(torch.nn.functional.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return own - others.max(1).values


def guard_pgd(
    members: GuardMembers,
    images: np.ndarray,
    labels: list[int],
    eps_levels: int,
    steps: int,
    rng: np.random.Generator,
    suspicion_weight: float = SUSPICION_WEIGHT,
) -> list[WhiteBoxOutcome]:
    """L∞ PGD (random start, step eps/4) on margin + weight·SUSPICION for uint8 images [N,H,W,3]."""
    clean = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    target = torch.tensor(labels, dtype=torch.int64)
    eps, step_size = eps_levels / 255.0, eps_levels / 255.0 / 4
    delta = torch.from_numpy(rng.uniform(-eps, eps, size=clean.shape).astype(np.float32))
    outcomes: list[WhiteBoxOutcome | None] = [None] * len(images)
    for step in range(steps + 1):  # step 0 checks the random start; the last check follows the last update
        served = torch.round((clean + delta).clamp(0, 1) * 255) / 255
        with torch.no_grad():
            logits, _, verdicts = members.answer(served, torch.from_numpy(brisque(served.numpy())))
        for index in range(len(images)):
            if outcomes[index] is None and int(logits[index].argmax()) != labels[index] and (
                verdicts[index] == VERDICT_ACCEPT
            ):
                outcomes[index] = WhiteBoxOutcome(True, step, _uint8(served[index]))
        if step == steps or all(outcome is not None for outcome in outcomes):
            break
        pixels = (clean + delta).clamp(0, 1).requires_grad_(True)
        iqa = torch.from_numpy(brisque(pixels.detach().numpy()))  # BPDA: recomputed, no gradient
        logits, suspicion, _ = members.answer(pixels, iqa)
        loss = (_margin(logits, target).clamp(min=-1.0) + suspicion_weight * suspicion).sum()
        (gradient,) = torch.autograd.grad(loss, pixels)
        delta = (delta - step_size * gradient.sign()).clamp(-eps, eps)
    last = torch.round((clean + delta).clamp(0, 1) * 255) / 255
    return [o if o is not None else WhiteBoxOutcome(False, steps, _uint8(last[i])) for i, o in enumerate(outcomes)]


def _uint8(pixels: torch.Tensor) -> np.ndarray:
    return np.rint(pixels.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
