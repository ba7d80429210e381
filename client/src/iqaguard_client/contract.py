"""The robust_classifier ensemble's wire contract: what a client sends and gets back.

The server side (iqaguard.contract) re-exports these names, so clients, server, configs and tests
share one definition; docs/design.md and the README show the same table (a test keeps them equal).
"""

from __future__ import annotations

from typing import NamedTuple

ENSEMBLE = "robust_classifier"

INPUT_IMAGE = "IMAGE"
OUTPUT_PROBS = "PROBS"
OUTPUT_QUALITY = "QUALITY"
OUTPUT_SUSPICION = "SUSPICION"
OUTPUT_VERDICT = "VERDICT"
ENSEMBLE_OUTPUTS = (OUTPUT_PROBS, OUTPUT_QUALITY, OUTPUT_SUSPICION, OUTPUT_VERDICT)

VERDICT_ACCEPT = "accept"
VERDICT_LOW_QUALITY = "low_quality"
VERDICT_ADVERSARIAL = "adversarial"
VERDICTS = (VERDICT_ACCEPT, VERDICT_LOW_QUALITY, VERDICT_ADVERSARIAL)

_CONFIG_TYPES = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32"}


class TensorSpec(NamedTuple):
    """One ensemble tensor: direction ("in"/"out"), wire datatype (BYTES, FP32) and dims per item (-1: any)."""

    direction: str
    name: str
    datatype: str
    dims: tuple[int, ...]

    @property
    def config_type(self) -> str:
        """The data_type a config.pbtxt declares for it (BYTES travels as TYPE_STRING)."""
        return _CONFIG_TYPES[self.datatype]


ENSEMBLE_TENSORS = (
    TensorSpec("in", INPUT_IMAGE, "BYTES", (1,)),
    TensorSpec("out", OUTPUT_PROBS, "FP32", (-1,)),
    TensorSpec("out", OUTPUT_QUALITY, "FP32", (1,)),
    TensorSpec("out", OUTPUT_SUSPICION, "FP32", (1,)),
    TensorSpec("out", OUTPUT_VERDICT, "BYTES", (1,)),
)
