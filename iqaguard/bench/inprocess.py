"""The served ensemble's pipeline run inside one Python process: the benchmark's in-process baseline.

It uses the very code and artifacts the server runs: the iqa_preprocess model's Preprocessor
(decode, validate, resize, BRISQUE) and the repository's newest teacher/student/detector
TorchScript files of one model set (default: the default set), under torch.inference_mode like the
server's TorchScript runner. Each call handles one request (one image) unbatched; concurrency comes
from calling it from several threads.
`instances` caps how many calls may run each stage at once, like Triton's instance counts (e.g.
{"iqa_preprocess": 2, "teacher": 1, ...}); stages without a cap run as many as there are callers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iqaguard.contract import DETECTOR, PREPROCESSOR, STUDENT, TEACHER
from iqaguard.imaging import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from iqaguard.in_triton.preprocess import Preprocessor
from iqaguard.repository.check import load_config
from iqaguard.repository.layout import CONFIG_FILE, MODEL_FILE, latest_version, model_file, read_input_size
from iqaguard.repository.sets import ModelSet


@dataclass(frozen=True)
class PipelineOutput:
    """The ensemble's four outputs for one image, as numpy arrays shaped like the served ones."""

    probs: np.ndarray
    quality: np.ndarray
    suspicion: np.ndarray
    verdict: np.ndarray


def _limits(config_path: Path) -> dict[str, int]:
    """The preprocessor's max_pixels/max_bytes parameters from its config.pbtxt, as the server reads them."""
    parameters = load_config(config_path).parameters
    defaults = {"max_pixels": DEFAULT_MAX_PIXELS, "max_bytes": DEFAULT_MAX_BYTES}
    return {key: int(parameters[key].string_value) if key in parameters else value for key, value in defaults.items()}


def load_member(repository: Path, name: str) -> torch.jit.ScriptModule:
    """The newest version of a TorchScript member, on CPU, in eval mode."""
    version = latest_version(repository / name)
    if version is None:
        raise FileNotFoundError(f"{repository / name} has no <version>/{MODEL_FILE}; build a model set first")
    module = torch.jit.load(str(model_file(repository, name, version)), map_location="cpu")
    return module.eval()


class InProcessPipeline:
    """preprocess + IQA + teacher + student + detector for one encoded image, in this process."""

    def __init__(
        self, repository: Path, instances: Mapping[str, int] | None = None, model_set: ModelSet | None = None
    ) -> None:
        """`instances` is keyed by stage (iqa_preprocess, teacher, ...) whatever the set's model names."""
        self.instances = dict(instances or {})
        self._gates = {name: threading.BoundedSemaphore(count) for name, count in self.instances.items()}
        names = model_set or ModelSet(None, default=True)
        self.size = read_input_size(repository / names.preprocessor)
        self.preprocessor = Preprocessor(self.size, **_limits(repository / names.preprocessor / CONFIG_FILE))
        self.teacher = load_member(repository, names.model(TEACHER))
        self.student = load_member(repository, names.model(STUDENT))
        self.detector = load_member(repository, names.model(DETECTOR))

    def _gate(self, stage: str) -> contextlib.AbstractContextManager[object]:
        """Hold one of the stage's instance slots (a no-op for an uncapped stage)."""
        return self._gates.get(stage) or contextlib.nullcontext()

    def __call__(self, image: bytes) -> PipelineOutput:
        """Classify one encoded image; raises InvalidImageError as the server would refuse it."""
        with self._gate(PREPROCESSOR):
            (result,) = self.preprocessor.run([[image]])
        if isinstance(result, Exception):
            raise result
        with torch.inference_mode():
            pixels = torch.from_numpy(result.pixels)
            with self._gate(TEACHER):
                teacher_logits, probs = self.teacher(pixels)
            with self._gate(STUDENT):
                student_logits = self.student(pixels)
            with self._gate(DETECTOR):
                suspicion, verdicts = self.detector(torch.from_numpy(result.iqa), teacher_logits, student_logits)
        return PipelineOutput(
            probs=probs.numpy(),
            quality=result.quality,
            suspicion=suspicion.numpy(),
            verdict=np.array([[verdict.encode()] for verdict in verdicts], dtype=np.object_),
        )
