"""The ensemble's tensor contract (see DESIGN.md): names shared by configs, server, clients and tests."""

from __future__ import annotations

ENSEMBLE = "robust_classifier"
PREPROCESSOR = "iqa_preprocess"
TEACHER = "teacher"
STUDENT = "student"
DETECTOR = "detector"
BUILT_MEMBERS = (TEACHER, STUDENT, DETECTOR)

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

IQA_FEATURES = 36
IQA_DIM = IQA_FEATURES + 1  # the 36 BRISQUE features, then the score

LABELS_FILE = "labels.txt"  # beside the ensemble's config.pbtxt
PREPROCESS_FILE = "preprocess.json"  # beside iqa_preprocess's config.pbtxt: {"height": H, "width": W}
MODEL_FILE = "model.pt"
