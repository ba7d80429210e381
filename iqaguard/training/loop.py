"""The epoch loop shared by teacher training and distillation: SGD + one-cycle LR over shuffled batches."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from iqaguard.training.data import batches


def use_bf16(precision: str) -> bool:
    """Whether training runs under bfloat16 autocast: 'auto' asks oneDNN whether this CPU does bf16."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if precision == "auto":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return precision == "bf16"


def bf16_autocast(enabled: bool) -> torch.autocast:
    """CPU bfloat16 autocast for a forward pass (a no-op context when not `enabled`)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def train_epochs(
    model: nn.Module,
    count: int,
    epochs: int,
    generator: torch.Generator,
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    *,
    lr: float,
    weight_decay: float,
    pct_start: float,
    batch_size: int,
    name: str,
) -> list[float]:
    """Train `model` for `epochs` passes over `count` examples with Nesterov SGD and a one-cycle LR.

    Each epoch visits the examples in a fresh order drawn from `generator`; `batch_loss(index)` returns
    the mean loss over one batch of example indices (it may draw from `generator` too). Shows progress
    as "<name> epoch i/n", returns the mean loss per epoch and leaves `model` in eval mode.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps = epochs * ((count + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=pct_start)
    losses: list[float] = []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(count, generator=generator).numpy()
        total, seen = 0.0, 0
        progress = tqdm(list(batches(count, batch_size)), desc=f"{name} epoch {epoch + 1}/{epochs}",
                        unit="batch", mininterval=1.0)
        for part in progress:
            index = order[part]
            loss = batch_loss(index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
            seen += len(index)
            progress.set_postfix(loss=f"{total / seen:.3f}", refresh=False)
        losses.append(total / seen)
    model.eval()
    return losses
