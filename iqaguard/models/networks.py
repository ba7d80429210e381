"""The networks: a small ResNet teacher for Fashion-MNIST, the distilled students, ImageNet loaders.

All networks here work on *normalised* inputs; `iqaguard.models.wrappers` puts the normalisation
inside the exported modules so callers feed plain [0,1] pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and an identity (or 1×1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet for small images: a 3×3 stem, stages of BasicBlocks, global pooling."""

    def __init__(
        self, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64), blocks: tuple[int, ...] = (1, 1, 1)
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers: list[nn.Module] = []
        in_channels = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(in_channels, width, stride))
                in_channels = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


class SmallStudent(nn.Module):
    """A tiny CNN student: strided 3×3 convolutions, max pooling, and a linear head on a 7×7 map.

    Keeping the spatial map in the head (instead of global pooling) buys accuracy for almost no
    FLOPs on 28×28 inputs; an adaptive pool makes it accept any input size.
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (12, 28, 36), grid: int = 7) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            nn.Conv2d(3, w1, 3, 2, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(),
            nn.Conv2d(w1, w2, 3, 1, 1, bias=False), nn.BatchNorm2d(w2), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w2, w3, 3, 1, 1, bias=False), nn.BatchNorm2d(w3), nn.ReLU(),
        )
        self.grid = grid
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.fc = nn.Linear(w3 * grid * grid, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        if features.shape[-1] != self.grid or features.shape[-2] != self.grid:
            # An identity at 28×28 inputs, but not free: its backward was ~10% of a training step.
            features = self.pool(features)
        return self.fc(torch.flatten(features, 1))


def imagenet_student(num_classes: int = 1000) -> nn.Module:
    """The ImageNet-profile student: torchvision's MobileNetV3-Small, randomly initialised (then distilled)."""
    return tv_models.mobilenet_v3_small(weights=None, num_classes=num_classes)


class MissingWeightsError(RuntimeError):
    """Pretrained weights were asked for but are not available offline."""


def resnet50_weights_file(weights: str) -> Path:
    """Locate ImageNet ResNet-50 weights: a local file path, or 'auto' for torchvision's cache.

    Never downloads. 'auto' looks in `$TORCH_HOME/hub/checkpoints/` (torchvision's cache) for the
    V2 then the V1 weights file and raises MissingWeightsError with instructions when neither is there.
    """
    if weights != "auto":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"weights file {path} does not exist")
        return path
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = [tv_models.ResNet50_Weights.IMAGENET1K_V2, tv_models.ResNet50_Weights.IMAGENET1K_V1]
    for candidate in candidates:
        path = checkpoints / os.path.basename(candidate.url)
        if path.is_file():
            return path
    names = ", ".join(os.path.basename(c.url) for c in candidates)
    raise MissingWeightsError(
        f"ImageNet ResNet-50 weights not found in torchvision's cache {checkpoints} (looked for {names}) "
        "and this build never downloads. Put the file there (e.g. on a machine with network: "
        "`python -c 'import torchvision; torchvision.models.resnet50(weights=\"IMAGENET1K_V2\")'`), "
        "pass --weights /path/to/resnet50.pth, or pass --weights random for plumbing/speed tests only."
    )


def resnet50_network(num_classes: int = 1000) -> nn.Module:
    """torchvision's ResNet-50, randomly initialised (the imagenet set's teacher before its weights load)."""
    return tv_models.resnet50(weights=None, num_classes=num_classes)


def pretrained_network(
    network: nn.Module, weights: str, locate: Callable[[str], Path]
) -> tuple[nn.Module, str, str | None]:
    """`network` with the weights file `locate(weights)` loaded strictly; 'random' (only when asked
    by name) leaves it as initialised. Returns (network in eval mode, "pretrained"|"random", file or None).
    """
    if weights == "random":
        return network.eval(), "random", None
    path = locate(weights)
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return network.eval(), "pretrained", str(path)


def imagenet_teacher(weights: str) -> tuple[nn.Module, str, str | None]:
    """The ImageNet ResNet-50 teacher; `weights` is 'auto' (torchvision cache), a file path, or 'random'."""
    return pretrained_network(resnet50_network(), weights, resnet50_weights_file)


def imagenet_labels() -> list[str]:
    """ImageNet-1k class names in logit order (shipped inside torchvision, no download)."""
    return list(tv_models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
