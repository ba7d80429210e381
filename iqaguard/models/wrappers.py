"""Servable wrappers: normalisation inside the module, the contract's outputs, TorchScript export."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def logits_of(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The logits of a classifier's output: a teacher module returns (logits, probs), others logits alone."""
    return output[0] if isinstance(output, tuple) else output


FASHION_MEAN = (0.2860, 0.2860, 0.2860)
FASHION_STD = (0.3530, 0.3530, 0.3530)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's own preprocessing (efficientnet_lite_builder: MEAN_RGB 127, STDDEV_RGB 128 on 0..255).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


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
    """forward(pixels [N,3,H,W] in [0,1]) -> (logits [N,C], probs [N,C]) (the teacher artifact).

    `classifier` maps pixels in [0,1] to logits: a PixelClassifier or any TorchScript module that does.
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(pixels)
        return logits, torch.softmax(logits, dim=1)


def _conv_bn_pairs(parent: nn.Module) -> list[tuple[str, str]]:
    """Names of (Conv2d, BatchNorm2d) children where the norm directly follows the convolution.

    In a Sequential: neighbours. A module may name its pairs itself (a `CONV_BN` class attribute, for
    networks whose parameter names are fixed by a weights file). Elsewhere, by the naming that torchvision
    and our networks use in forward(): ``bnK(convK(x))``, ``bn(conv(x))``. The caller checks the folded
    module's outputs.
    """
    names = list(dict(parent.named_children()))
    if isinstance(parent, nn.Sequential):
        return list(itertools.pairwise(names))
    declared = getattr(type(parent), "CONV_BN", None)
    if declared is not None:
        return list(declared)
    return [(name, "bn" + name.removeprefix("conv")) for name in names if name.startswith("conv")]


@torch.no_grad()
def fold_batch_norms(module: nn.Module, probe: torch.Tensor, tolerance: float = 1e-4) -> nn.Module:
    """An inference copy of `module` with every eval-mode BatchNorm2d folded into the Conv2d before it.

    Same function, fewer operations (BatchNorm is a third of a small CPU network's time). Raises
    RuntimeError when the copy's outputs on `probe` differ from the original's by more than `tolerance`.
    """
    folded = copy.deepcopy(module).eval()
    for parent in list(folded.modules()):
        children = dict(parent.named_children())
        for conv_name, bn_name in _conv_bn_pairs(parent):
            conv, bn = children.get(conv_name), children.get(bn_name)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    outputs = [module.eval()(probe), folded(probe)]
    outputs = [out if isinstance(out, tuple) else (out,) for out in outputs]
    worst = max(float((a - b).abs().max()) for a, b in zip(*outputs, strict=True))
    if worst > tolerance:
        raise RuntimeError(f"folding batch norms changed the outputs by {worst:.3g} (> {tolerance:g})")
    return folded.requires_grad_(False)


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
