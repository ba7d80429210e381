"""The ensemble's contract (see docs/design.md): names shared by configs, server, clients and tests.

The wire part (ensemble name, tensors, verdicts) is defined once in the client distribution,
iqaguard_client.contract, and re-exported here; the server side adds its model names and IQA sizes.
File names and member tensor names are the repository layout's (iqaguard.repository.layout).
"""

from __future__ import annotations

from iqaguard_client.contract import (
    ENSEMBLE,
    ENSEMBLE_OUTPUTS,
    ENSEMBLE_TENSORS,
    INPUT_IMAGE,
    OUTPUT_PROBS,
    OUTPUT_QUALITY,
    OUTPUT_SUSPICION,
    OUTPUT_VERDICT,
    VERDICT_ACCEPT,
    VERDICT_ADVERSARIAL,
    VERDICT_LOW_QUALITY,
    VERDICTS,
    TensorSpec,
)

__all__ = [
    "BUILT_MEMBERS", "DETECTOR", "ENSEMBLE", "ENSEMBLE_OUTPUTS", "ENSEMBLE_TENSORS", "INPUT_IMAGE", "IQA_DIM",
    "IQA_FEATURES", "MONITOR", "OUTPUT_PROBS", "OUTPUT_QUALITY", "OUTPUT_SUSPICION", "OUTPUT_VERDICT", "PREPROCESSOR",
    "STUDENT", "TEACHER", "VERDICTS", "VERDICT_ACCEPT", "VERDICT_ADVERSARIAL", "VERDICT_LOW_QUALITY", "TensorSpec",
]  # fmt: skip

PREPROCESSOR = "iqa_preprocess"
TEACHER = "teacher"
STUDENT = "student"
DETECTOR = "detector"
BUILT_MEMBERS = (TEACHER, STUDENT, DETECTOR)
MONITOR = "guard_monitor"  # the ensemble's last step: guard metrics and the audit log, VERDICT passed through

IQA_FEATURES = 36
IQA_DIM = IQA_FEATURES + 1  # the 36 BRISQUE features, then the score
