"""Relative compute of the detection methods, measured on the exported members as served."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from iqaguard.contract import DETECTOR, STUDENT, TEACHER
from iqaguard.iqa import brisque
from iqaguard.training.data import ImageSet, as_float
from iqaguard.training.methods import Method
from iqaguard.training.squeeze import median_filter, reduce_bit_depth

BATCH = 64  # the members' max_batch_size
LARGE_BATCH = 8  # for large inputs (e.g. 224×224 on ResNet-50) a smaller batch keeps the measurement short


def _time(function: Callable[[], object], repeats: int = 5) -> float:
    """Median seconds of `function()` after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@torch.inference_mode()
def measure(files: dict[str, Path], images: ImageSet, squeezer: object, teacher_flops: int, student_flops: int,
            detector_flops: int) -> dict[str, object]:
    """Per-image time and FLOPs of each method's work beyond the teacher's own forward pass."""
    teacher = torch.jit.load(str(files[TEACHER]), map_location="cpu")
    student = torch.jit.load(str(files[STUDENT]), map_location="cpu")
    detector = torch.jit.load(str(files[DETECTOR]), map_location="cpu")
    large = images.pixels.shape[2] * images.pixels.shape[3] > 64 * 64
    x = as_float(images.pixels[: LARGE_BATCH if large else BATCH])
    n = len(x)
    iqa = torch.from_numpy(brisque(x))
    teacher_logits = teacher(x)[0]
    student_logits = student(x)

    def squeeze_extra() -> None:
        teacher(reduce_bit_depth(x, squeezer.bits))
        teacher(median_filter(x, squeezer.median))

    ms = {
        "teacher": _time(lambda: teacher(x)),
        "student": _time(lambda: student(x)),
        "brisque": _time(lambda: brisque(x)),
        "detector_mlp": _time(lambda: detector(iqa, teacher_logits, student_logits)),
        "feature_squeezing": _time(squeeze_extra),
    }
    ms = {k: 1000.0 * v / n for k, v in ms.items()}
    base = ms["teacher"]

    def row(key: Method | None, method: str, flops: int, milliseconds: float) -> dict[str, object]:
        return {"key": key, "method": method, "extra_flops": flops, "flops_ratio": flops / teacher_flops,
                "ms_per_image": milliseconds, "time_ratio": milliseconds / base}

    rows = [
        row(Method.DETECTOR, "detector (IQA + KD)", student_flops + detector_flops,
            ms["brisque"] + ms["student"] + ms["detector_mlp"]),
        row(None, "detector, BRISQUE shared with QUALITY", student_flops + detector_flops,
            ms["student"] + ms["detector_mlp"]),
        row(Method.SINGLE_MLP, "single MLP (IQA + KD)", student_flops + detector_flops,
            ms["brisque"] + ms["student"] + ms["detector_mlp"]),
        row(Method.IQA_ONLY, "IQA only", detector_flops, ms["brisque"] + ms["detector_mlp"]),
        row(Method.KD_ONLY, "KD only", student_flops + detector_flops, ms["student"] + ms["detector_mlp"]),
        row(Method.FEATURE_SQUEEZING, "feature squeezing", 2 * teacher_flops, ms["feature_squeezing"]),
    ]
    return {
        "rows": rows,
        "milliseconds_per_image": ms,
        "teacher_flops": teacher_flops,
        "detector_flops": detector_flops,
        "note": (f"Measured on the exported TorchScript members, batch {n}, median of 5 runs, CPU threads "
                 f"{torch.get_num_threads()}; teacher forward {base:.4f} ms/image. FLOPs count network layers "
                 "(torch FlopCounterMode); BRISQUE is numpy and appears in time only. The ensemble computes "
                 "BRISQUE for its QUALITY output anyway, so its marginal cost to the detector is zero as served. "
                 "Every row counts all of the exported detector's MLPs (an ablation runs one: some kFLOPs less)."),
    }


def flops(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one forward pass of `module` on `inputs` (torch FlopCounterMode: network layers only)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs)
    return int(counter.get_total_flops())


def parameters(module: torch.nn.Module) -> int:
    """Number of parameters of `module`."""
    return sum(p.numel() for p in module.parameters())
