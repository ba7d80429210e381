"""Knowledge distillation (Hinton et al. 2015): the student learns the teacher's softened outputs."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iqaguard.training.data import as_float
from iqaguard.training.loop import bf16_autocast, train_epochs
from iqaguard.training.teacher import augment


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    labels: torch.Tensor | None = None,
    hard_weight: float = 0.0,
) -> torch.Tensor:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), mixed with cross-entropy on labels by `hard_weight` when given."""
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (temperature**2)
    if labels is None or hard_weight == 0.0:
        return soft
    return (1.0 - hard_weight) * soft + hard_weight * F.cross_entropy(student_logits, labels)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    pixels: np.ndarray,
    epochs: int,
    seed: int,
    labels: np.ndarray | None = None,
    temperature: float = 4.0,
    hard_weight: float = 0.1,
    batch_size: int = 128,
    lr: float = 0.05,
    augment_inputs: bool = True,
    bf16: bool = False,
) -> list[float]:
    """Train `student` (pixels -> logits) to match `teacher` (pixels -> logits) on uint8 `pixels`.

    The teacher sees the same (augmented) batch as the student, so no soft target is ever stale.
    Labels, where given, are mixed in with weight `hard_weight`; `bf16` runs both forward passes
    under CPU bfloat16 autocast. Returns the mean loss per epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    targets = None if labels is None else torch.from_numpy(labels)
    teacher.eval()

    def batch_loss(index: np.ndarray) -> torch.Tensor:
        inputs = as_float(pixels[index])
        if augment_inputs:
            inputs = augment(inputs, generator)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        with bf16_autocast(bf16):
            with torch.inference_mode():
                result = teacher(inputs)
                teacher_logits = (result[0] if isinstance(result, tuple) else result).float().clone()
            student_logits = student(inputs)
        return distillation_loss(student_logits.float(), teacher_logits, temperature,
                                 None if targets is None else targets[index], hard_weight)

    return train_epochs(student, len(pixels), epochs, generator, batch_loss, lr=lr, weight_decay=1e-4,
                        pct_start=0.2, batch_size=batch_size, name="student")


def agreement(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> float:
    """Fraction of inputs on which teacher and student pick the same top-1 class."""
    return float((teacher_logits.argmax(1) == student_logits.argmax(1)).float().mean())
