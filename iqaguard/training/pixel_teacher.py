"""The general teacher path: any classifier mapping [N,3,H,W] RGB pixels in [0,1] to logits [N,C].

A pretrained set's teacher is one of these, whatever made it: a TorchScript file the user brings
(the `custom` profile) or a known network with its weights file (`imagenet`: ResNet-50, `natural`:
EfficientNet-Lite0), normalisation inside. The build probes it once for its class count and names
the classes; every later step treats all of them alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from iqaguard.models.networks import pretrained_network
from iqaguard.models.wrappers import PixelClassifier

if TYPE_CHECKING:
    from iqaguard.training.config import BuildConfig


class TeacherError(ValueError):
    """The teacher cannot be used: not TorchScript, wrong output, or labels that do not fit it."""


@dataclass
class PixelTeacher:
    """A ready teacher: `module` maps pixels [N,3,H,W] in [0,1] to logits [N,C] (normalisation inside)."""

    module: nn.Module
    weights: str  # "pretrained" | "random" (the latter only when asked for by name)
    info: dict[str, object] = field(default_factory=dict)


TeacherLoader = Callable[["BuildConfig"], PixelTeacher]


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript file on the CPU; TeacherError (with how to make one) when it is not TorchScript."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"teacher file {path} does not exist")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # torch raises RuntimeError, ValueError or zipfile errors for non-TorchScript files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TeacherError(
            f"{path.name} is not a TorchScript module ({reason[:200]}). Save yours with "
            "torch.jit.save(torch.jit.script(model), PATH) (or torch.jit.trace); a state dict or a pickled "
            "model is not enough"
        ) from None
    return module.eval()


@torch.no_grad()
def class_count(module: nn.Module, size: tuple[int, int], batch: int = 2) -> int:
    """Probe `module` with random pixels [batch,3,H,W]; return C when it answers finite logits [batch,C], C ≥ 2."""
    height, width = size
    try:
        output = module(torch.rand(batch, 3, height, width))
    except Exception as error:
        raise TeacherError(f"the teacher failed on pixels [{batch},3,{height},{width}] in [0,1]: "
                           f"{str(error).strip().splitlines()[0][:300] if str(error).strip() else error!r}") from None
    if not isinstance(output, torch.Tensor):
        raise TeacherError(f"the teacher returned {type(output).__name__}; it must return one logits tensor [N,C]")
    if output.dim() != 2 or output.shape[0] != batch or output.shape[1] < 2:
        raise TeacherError(f"the teacher returned shape {list(output.shape)} for pixels [{batch},3,{height},{width}]; "
                           f"expected logits [{batch},C] with C ≥ 2 classes")
    if not output.is_floating_point() or not bool(torch.isfinite(output).all()):
        raise TeacherError(f"the teacher returned {output.dtype} logits that are not all finite floats")
    return int(output.shape[1])


def class_names(count: int, labels_file: Path | None = None, default: Sequence[str] = ()) -> list[str]:
    """Names of `count` classes: one per non-empty line of `labels_file`, else `default` when it fits, else class_i."""
    if labels_file is not None:
        path = Path(labels_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"labels file {path} does not exist")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(names) != count:
            raise TeacherError(f"{path.name} names {len(names)} classes; the teacher has {count} (one name a line)")
        return names
    if len(default) == count:
        return list(default)
    return [f"class_{index}" for index in range(count)]


def file_sha256(path: Path) -> str:
    """sha256 of a file (the manifest identifies a user's teacher by content, not by host path)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def torchscript_teacher(config: BuildConfig) -> PixelTeacher:
    """The `custom` profile's teacher: the TorchScript file named by --teacher (TEACHER=)."""
    if config.teacher is None:
        raise ValueError("this profile needs --teacher FILE: a TorchScript module mapping [N,3,H,W] RGB in [0,1] "
                         "to logits (normalisation inside)")
    if config.weights != "auto":
        raise ValueError("--weights does not apply to a TorchScript teacher: its weights are inside the file")
    path = Path(config.teacher).expanduser()
    module = load_torchscript(path)
    return PixelTeacher(module, "pretrained", {"teacher_file": path.name, "teacher_sha256": file_sha256(path)})


def network_teacher(network: Callable[[], nn.Module], locate: Callable[[str], Path], mean: Sequence[float],
                    std: Sequence[float]) -> TeacherLoader:
    """A loader for a known network whose weights file `locate(--weights)` finds (never downloads).

    The teacher is the eager network with the weights loaded strictly and normalisation inside;
    `--weights random` (speed and plumbing tests only) leaves it randomly initialised, visibly.
    """

    def load(config: BuildConfig) -> PixelTeacher:
        net, kind, path = pretrained_network(network(), config.weights, locate)
        info = {"weights_file": Path(path).name} if path else {}
        return PixelTeacher(PixelClassifier(net, mean, std).eval(), kind, info)

    return load
