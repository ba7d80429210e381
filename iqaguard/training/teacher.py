"""Supervised training of the Fashion-MNIST teacher (the only step of the build that uses labels)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iqaguard.models.networks import MissingWeightsError
from iqaguard.models.wrappers import PixelClassifier, TeacherModule, fold_batch_norms, logits_of
from iqaguard.training.cache import cache_path, source_hash
from iqaguard.training.config import BuildConfig
from iqaguard.training.data import as_float, batches
from iqaguard.training.loop import bf16_autocast, train_epochs, use_bf16
from iqaguard.training.pixel_teacher import class_count, class_names
from iqaguard.training.profiles import Profile
from iqaguard.training.splits import Data

log = logging.getLogger(__name__)


def augment(pixels: torch.Tensor, generator: torch.Generator, pad: int = 1) -> torch.Tensor:
    """Random translation by up to `pad` pixels (zero fill) and random horizontal flips, per image."""
    if pad == 0:
        flips = torch.rand(len(pixels), generator=generator) < 0.5
        return torch.where(flips.view(-1, 1, 1, 1), pixels.flip(3), pixels)
    n, _, h, w = pixels.shape
    padded = F.pad(pixels, (pad, pad, pad, pad))
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(pixels)
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            if chosen.any():
                out[chosen] = padded[chosen, :, dy : dy + h, dx : dx + w]
    out[flips] = out[flips].flip(3)
    return out


def evaluate_accuracy(model: nn.Module, pixels: np.ndarray, labels: np.ndarray, batch_size: int | None = None) -> float:
    """Top-1 accuracy of `model` (taking [0,1] pixels, returning logits first) on uint8 pixels."""
    predictions = predict(model, pixels, batch_size).argmax(1).numpy()
    return float((predictions == labels).mean())


@torch.inference_mode()
def predict(model: nn.Module, pixels: np.ndarray, batch_size: int | None = None) -> torch.Tensor:
    """Logits [N,C] of `model` on uint8 pixels, any strides (eval mode; the first output of a tuple).

    Default batch: 128 small images, or 64 large ones. Larger batches run slower per image once their
    activations outgrow the CPU's caches (the fashion teacher, 2 cores: 6,100 images/s at 128, 3,400 at 1000).
    """
    if batch_size is None:
        batch_size = 128 if pixels.shape[2] * pixels.shape[3] <= 64 * 64 else 64
    model.eval()
    outputs = []
    for part in batches(len(pixels), batch_size):
        result = model(as_float(np.ascontiguousarray(pixels[part])))
        outputs.append(logits_of(result))
    return torch.cat(outputs)


def train_teacher(
    model: nn.Module,
    pixels: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    seed: int,
    batch_size: int = 128,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.1,
    pad: int = 0,
    bf16: bool = False,
) -> list[float]:
    """Train `model` (pixels in [0,1] -> logits) with SGD + one-cycle LR and light augmentation.

    `pad` > 0 adds random translations to the flips (slower to converge: worse within a short schedule).
    `bf16` runs the forward pass under CPU bfloat16 autocast (about 1.6× faster where the CPU has
    native bf16). Returns the mean training loss per epoch. Deterministic for a given seed, thread
    count and machine.
    """
    generator = torch.Generator().manual_seed(seed)
    targets = torch.from_numpy(labels)

    def batch_loss(index: np.ndarray) -> torch.Tensor:
        inputs = augment(as_float(pixels[index]), generator, pad).contiguous(memory_format=torch.channels_last)
        with bf16_autocast(bf16):
            logits = model(inputs)
        return F.cross_entropy(logits.float(), targets[index], label_smoothing=label_smoothing)

    return train_epochs(model, len(pixels), epochs, generator, batch_loss, lr=lr, weight_decay=weight_decay,
                        pct_start=0.25, batch_size=batch_size, name="teacher")


# ------------------------------------------------------------------------------------ the build's step


@dataclass
class Teacher:
    """The build's teacher: the classifier, the module served, and what was measured on it."""

    classifier: nn.Module  # pixels in [0,1] -> logits (a PixelClassifier, or a user's TorchScript module)
    module: TeacherModule
    weights_kind: str  # "trained" | "pretrained" | "random"
    info: dict[str, object]
    accuracy: float | None  # top-1 on the test images (where they have labels)
    held_out: float | None  # top-1 on the held-out training images (the detector's fit pool)


def make_teacher(config: BuildConfig, profile: Profile, data: Data) -> tuple[nn.Module, str, dict[str, object]]:
    """Load (pretrained sets), train (the others) or randomly initialise (only with --weights random) the teacher.

    A pretrained teacher (the general path: any classifier of [0,1] pixels) names the set's classes:
    `data.labels` becomes its class count's names (--labels, the profile's names, or class_i).
    """
    torch.manual_seed(config.seed)
    if profile.pretrained_teacher is not None:
        teacher = profile.pretrained_teacher(config)
        count = class_count(teacher.module, profile.size)
        data.labels = class_names(count, config.labels, profile.labels())
        return teacher.module.eval(), teacher.weights, {**teacher.info, "classes": count}
    network = profile.teacher_network(len(data.labels))
    classifier = PixelClassifier(network, profile.mean, profile.std)
    if config.weights == "random":
        return classifier.eval(), "random", {}
    if config.weights != "auto":
        path = Path(config.weights).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"weights file {path} does not exist")
        classifier.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return classifier.eval(), "pretrained", {"weights_file": str(path)}
    epochs = config.epochs or profile.teacher_epochs
    bf16 = use_bf16(config.precision)
    key = {"profile": profile.name, "epochs": epochs, "seed": config.seed, "train": data.description["train_hash"],
           "bf16": bf16,
           "torch": torch.__version__, "source": source_hash(sys.modules[type(network).__module__],
                                                               sys.modules[train_teacher.__module__],
                                                               sys.modules[train_epochs.__module__])}
    cached = cache_path(config.cache_dir, "teacher", key)
    classifier = classifier.to(memory_format=torch.channels_last)
    if cached is not None and cached.is_file():
        classifier.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
        reused = f"reused {cached.name} from the build cache"
        return classifier.eval(), "trained", {"epochs": epochs, "bf16": bf16, "cache": reused}
    losses = train_teacher(classifier, data.train.pixels, data.train.labels, epochs, config.seed, bf16=bf16)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save(classifier.state_dict(), cached)
    return classifier.eval(), "trained", {"epochs": epochs, "bf16": bf16, "train_loss": losses}


def build_teacher(config: BuildConfig, profile: Profile, data: Data) -> Teacher:
    """The build's teacher step: make the teacher, freeze it, and measure its top-1 accuracy."""
    classifier, weights_kind, info = make_teacher(config, profile, data)
    for parameter in classifier.parameters():  # (a ScriptModule has no requires_grad_)
        parameter.requires_grad_(False)
    # What is attacked, featurized and exported: the same function with batch norms folded (faster).
    # A TorchScript teacher is served as it came.
    served = classifier
    if not isinstance(classifier, torch.jit.ScriptModule):
        served = fold_batch_norms(classifier, as_float(data.fit.pixels[:64]))
    module = TeacherModule(served).eval()
    labelled = data.test is not None and data.test.labels is not None
    accuracy = evaluate_accuracy(module, data.test.pixels, data.test.labels) if labelled else None
    # Held-out training images (the detector's fit pool): a validation figure never used for any choice.
    held_out = evaluate_accuracy(module, data.fit.pixels, data.fit.labels) if data.fit.labels is not None else None
    log.info(f"[build] teacher weights: {weights_kind}; test top-1: {'n/a' if accuracy is None else f'{accuracy:.4f}'}"
             f"; held-out train top-1: {'n/a' if held_out is None else f'{held_out:.4f}'}")
    return Teacher(classifier, module, weights_kind, info, accuracy, held_out)
