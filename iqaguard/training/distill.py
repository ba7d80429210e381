"""Knowledge distillation (Hinton et al. 2015): the student learns the teacher's softened outputs."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iqaguard.models.wrappers import PixelClassifier, fold_batch_norms
from iqaguard.training.cache import cache_path, source_hash, state_hash
from iqaguard.training.compute import flops
from iqaguard.training.config import BuildConfig
from iqaguard.training.data import as_float
from iqaguard.training.loop import bf16_autocast, train_epochs, use_bf16
from iqaguard.training.profiles import Profile
from iqaguard.training.splits import Data
from iqaguard.training.teacher import Teacher, predict

log = logging.getLogger(__name__)


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


def soft_targets(teacher: nn.Module, pixels: np.ndarray, mirror: bool = True) -> torch.Tensor:
    """The teacher's logits [2, N, C] on each of uint8 `pixels` [N,3,H,W] and on its mirror image
    ([1, N, C] without `mirror`).

    Computed once (in float32) and reused every epoch: distillation augments by flips only, so a
    stored target is exactly what the teacher says about the augmented input.
    """
    views = [predict(teacher, pixels)] + ([predict(teacher, pixels[..., ::-1])] if mirror else [])
    return torch.stack(views)


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

    The teacher's answers on every image (and its mirror image) are computed once (soft_targets);
    with `augment_inputs` each batch is flipped at random and matched to the mirrored answers
    (without it, `pixels` are already augmented views: the teacher runs once per view).
    Labels, where given, are mixed in with weight `hard_weight`; `bf16` runs the student's forward
    pass under CPU bfloat16 autocast. Returns the mean loss per epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    targets = None if labels is None else torch.from_numpy(labels)
    teacher_views = soft_targets(teacher, pixels, mirror=augment_inputs)

    def batch_loss(index: np.ndarray) -> torch.Tensor:
        inputs = as_float(pixels[index])
        flips = torch.zeros(len(index), dtype=torch.bool)
        if augment_inputs:
            flips = torch.rand(len(index), generator=generator) < 0.5
            inputs = torch.where(flips.view(-1, 1, 1, 1), inputs.flip(3), inputs)
        teacher_logits = teacher_views[flips.long(), torch.from_numpy(index)]
        with bf16_autocast(bf16):
            student_logits = student(inputs.contiguous(memory_format=torch.channels_last))
        return distillation_loss(student_logits.float(), teacher_logits, temperature,
                                 None if targets is None else targets[index], hard_weight)

    return train_epochs(student, len(pixels), epochs, generator, batch_loss, lr=lr, weight_decay=1e-4,
                        pct_start=0.2, batch_size=batch_size, name="student")


def agreement(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> float:
    """Fraction of inputs on which teacher and student pick the same top-1 class."""
    return float((teacher_logits.argmax(1) == student_logits.argmax(1)).float().mean())


# ------------------------------------------------------------------------------------ the build's step


@dataclass
class Student:
    """The build's distilled student and what was measured on it (FLOPs of both networks)."""

    module: PixelClassifier
    info: dict[str, object]
    agreement: float  # top-1 agreement with the teacher
    agreement_images: int
    teacher_flops: int
    student_flops: int


def make_student(config: BuildConfig, profile: Profile, data: Data, teacher: nn.Module,
                 teacher_key: str) -> tuple[PixelClassifier, dict[str, object]]:
    """Distil the student from the teacher on the training images (labels mixed in where they exist)."""
    torch.manual_seed(config.seed + 1)
    network = profile.student_network(len(data.labels))
    student = PixelClassifier(network, profile.mean, profile.std).to(memory_format=torch.channels_last)
    epochs = config.student_epochs or profile.student_epochs
    bf16 = use_bf16(config.precision)
    key = {"teacher": teacher_key, "epochs": epochs, "seed": config.seed, "train": data.description["train_hash"],
           "bf16": bf16, "lr": profile.student_lr, "batch": profile.student_batch, "size": list(profile.size),
           "temperature": profile.student_temperature,
           "source": source_hash(sys.modules[type(network).__module__], sys.modules[distill.__module__],
                                 sys.modules[train_epochs.__module__])}
    cached = cache_path(config.cache_dir, "student", key)
    if cached is not None and cached.is_file():
        student.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
        return student.eval(), {"epochs": epochs, "bf16": bf16, "cache": f"reused {cached.name} from the build cache"}
    # Crop views (profile.distill_views > 1) carry their own random flips; otherwise flip per batch.
    losses = distill(student, teacher, data.train.pixels, epochs, config.seed + 1, labels=data.train.labels,
                     temperature=profile.student_temperature, lr=profile.student_lr, batch_size=profile.student_batch,
                     augment_inputs=profile.distill_views <= 1, bf16=bf16)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save(student.state_dict(), cached)
    return student.eval(), {"epochs": epochs, "bf16": bf16, "distill_loss": losses}


def build_student(config: BuildConfig, profile: Profile, data: Data, teacher: Teacher) -> Student:
    """The build's student step: distil, freeze, and measure agreement and both networks' FLOPs."""
    student, info = make_student(config, profile, data, teacher.module, state_hash(teacher.classifier))
    student = fold_batch_norms(student.requires_grad_(False), as_float(data.fit.pixels[:64]))
    agreement_set = data.test if data.test is not None else data.eval
    teacher_logits = predict(teacher.module, agreement_set.pixels)
    student_logits = predict(student, agreement_set.pixels)
    agree = agreement(teacher_logits, student_logits)
    size = (1, 3, *profile.size)
    teacher_flops = flops(teacher.module.classifier, torch.rand(size))
    student_flops = flops(student, torch.rand(size))
    log.info(f"[build] student agreement {agree:.4f}; FLOPs teacher {teacher_flops:,} student {student_flops:,} "
             f"(1/{teacher_flops / max(student_flops, 1):.1f})")
    return Student(student, info, agree, len(agreement_set), teacher_flops, student_flops)
