"""Supervised training of the Fashion-MNIST teacher (the only step of the build that uses labels)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iqaguard.training.data import as_float, batches
from iqaguard.training.loop import bf16_autocast, train_epochs


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


def evaluate_accuracy(model: nn.Module, pixels: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy of `model` (taking [0,1] pixels, returning logits first) on uint8 pixels."""
    predictions = predict(model, pixels, batch_size).argmax(1).numpy()
    return float((predictions == labels).mean())


@torch.inference_mode()
def predict(model: nn.Module, pixels: np.ndarray, batch_size: int = 1000) -> torch.Tensor:
    """Logits [N,C] of `model` on uint8 pixels (eval mode; the first output when it returns a tuple)."""
    model.eval()
    outputs = []
    for part in batches(len(pixels), batch_size):
        result = model(as_float(pixels[part]))
        outputs.append(result[0] if isinstance(result, tuple) else result)
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
