"""Servable wrappers: normalisation inside the module, the contract's outputs, TorchScript export."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

FASHION_MEAN = (0.2860, 0.2860, 0.2860)
FASHION_STD = (0.3530, 0.3530, 0.3530)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """Per-channel (x - mean) / std for [N,3,H,W] pixels in [0,1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


class PixelClassifier(nn.Module):
    """forward(pixels [N,3,H,W] in [0,1]) -> logits [N,C]: normalisation then the network (the student artifact)."""

    def __init__(self, network: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.network = network

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalize(pixels))


class TeacherModule(nn.Module):
    """forward(pixels [N,3,H,W] in [0,1]) -> (logits [N,C], probs [N,C]) (the teacher artifact)."""

    def __init__(self, classifier: PixelClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(pixels)
        return logits, torch.softmax(logits, dim=1)


def make_meta(profile: str, weights: str, **extra: object) -> dict[str, object]:
    """The meta.json every exported artifact carries: profile, weights kind, creation time, extras."""
    if weights not in ("trained", "pretrained", "random"):
        raise ValueError(f"weights must be trained|pretrained|random, got {weights!r}")
    return {"profile": profile, "weights": weights, "created": datetime.now(UTC).isoformat(), **extra}


def export_torchscript(module: nn.Module, path: str | Path, meta: dict[str, object]) -> torch.jit.ScriptModule:
    """Script `module` (eval mode, CPU) and save it with `meta` as the extra file meta.json."""
    # Not frozen: frozen modules bake parameters in as constants, which `map_location` onto a GPU
    # and attribute inspection (the detector's threshold) handle less well.
    scripted = torch.jit.script(module.eval().cpu())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path), _extra_files={"meta.json": json.dumps(meta, sort_keys=True)})
    return scripted


def read_meta(path: str | Path) -> dict[str, object]:
    """Read the meta.json extra file of a saved TorchScript artifact."""
    extra = {"meta.json": ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra["meta.json"])
