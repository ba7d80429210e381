"""The detector's raw material: per-image IQA vectors and teacher/student logits, clean and perturbed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CLEAN = -1  # the `setting` of an unperturbed image


@dataclass
class Samples:
    """Rows of (image, setting): IQA [N,37], teacher/student logits [N,C], and what happened to the teacher.

    setting: CLEAN or an index into the build's perturbation list. flipped: the teacher's answer differs
    from its answer on the clean original. eligible: the clean answer was right (always True without
    labels), so a flip made the teacher wrong.
    """

    image: np.ndarray
    setting: np.ndarray
    iqa: np.ndarray
    teacher_logits: np.ndarray
    student_logits: np.ndarray
    flipped: np.ndarray
    eligible: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    @property
    def clean(self) -> np.ndarray:
        """Mask of unperturbed rows."""
        return self.setting == CLEAN

    @property
    def positive(self) -> np.ndarray:
        """Mask of perturbed rows that made the teacher wrong: the detector's positives."""
        return (self.setting != CLEAN) & self.flipped & self.eligible

    def select(self, mask: np.ndarray) -> Samples:
        """The rows where `mask` is true."""
        return Samples(**{name: getattr(self, name)[mask] for name in self.__dataclass_fields__})

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(iqa, teacher_logits, student_logits) as float32 tensors, the detector's three inputs."""
        return (torch.from_numpy(self.iqa).float(), torch.from_numpy(self.teacher_logits).float(),
                torch.from_numpy(self.student_logits).float())

    @staticmethod
    def concat(parts: list[Samples]) -> Samples:
        """Stack several sample sets row-wise."""
        fields = Samples.__dataclass_fields__
        return Samples(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in fields})
