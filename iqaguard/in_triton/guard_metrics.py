"""The guard's Prometheus metrics and audit lines, kept apart from Triton so they can be tested alone.

Triton's Python backend publishes custom metrics on the server's metrics port through
`pb_utils.MetricFamily`; the families here take that module as an argument (`backend`), so a test can
hand in a recorder instead. Families, one series per set (label `set`):

- iqaguard_verdicts_total{set,verdict}        answered images by verdict (accept, low_quality, adversarial)
- iqaguard_invalid_inputs_total{set,reason}   refused requests by reason (iqaguard.imaging.INVALID_REASONS)
- iqaguard_suspicion{set}, iqaguard_quality{set}   histograms of SUSPICION and QUALITY
- iqaguard_calibrated_rejection_rate{set}     the clean false-rejection rate the live build measured
- iqaguard_set_live_version{set}              the set's live version (gone when the set is unloaded)
- iqaguard_probe_flags_total{set}             images flagged for disagreeing with near-identical recent ones
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iqaguard.contract import DETECTOR, VERDICTS
from iqaguard.imaging import INVALID_REASONS
from iqaguard.repository.layout import MANIFEST_FILE
from iqaguard.repository.live import read_state
from iqaguard.repository.sets import model_sets

SUSPICION_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
QUALITY_BUCKETS = (5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0)
MAX_REQUEST_ID_CHARS = 128


class VerdictMetrics:
    """Verdict counts, SUSPICION and QUALITY histograms and the live build's facts for one set."""

    def __init__(self, backend: Any, set_name: str) -> None:
        family = backend.MetricFamily
        labels = {"set": set_name}
        self._verdicts_family = family("iqaguard_verdicts_total", "Answered images by guard verdict", family.COUNTER)
        self._verdicts = {v: self._verdicts_family.Metric(labels={**labels, "verdict": v}) for v in VERDICTS}
        self._suspicion_family = family("iqaguard_suspicion", "Detector SUSPICION of answered images", family.HISTOGRAM)
        self._suspicion = self._suspicion_family.Metric(labels=labels, buckets=list(SUSPICION_BUCKETS))
        self._quality_family = family("iqaguard_quality", "BRISQUE QUALITY of answered images", family.HISTOGRAM)
        self._quality = self._quality_family.Metric(labels=labels, buckets=list(QUALITY_BUCKETS))
        self._rate_family = family(
            "iqaguard_calibrated_rejection_rate", "Clean false-rejection rate of the live build", family.GAUGE
        )
        self._rate = self._rate_family.Metric(labels=labels)
        self._version_family = family("iqaguard_set_live_version", "Live version of the model set", family.GAUGE)
        self._version = self._version_family.Metric(labels=labels)
        described = "Images flagged for disagreeing with near-identical ones"
        self._probes_family = family("iqaguard_probe_flags_total", described, family.COUNTER)
        self._probes = self._probes_family.Metric(labels=labels)

    def record(
        self, verdicts: Sequence[str], suspicion: Sequence[float], quality: Sequence[float],
        probes: Sequence[bool] | None = None,
    ) -> None:
        """Count each image's verdict (and probe flag) and record its SUSPICION and QUALITY."""
        if probes is not None:
            self._probes.increment(float(sum(bool(p) for p in probes)))
        for verdict, score, brisque in zip(verdicts, suspicion, quality, strict=True):
            counter = self._verdicts.get(verdict)
            if counter is not None:
                counter.increment(1)
            self._suspicion.observe(float(score))
            self._quality.observe(float(brisque))

    def set_live(self, version: int, rejection_rate: float | None) -> None:
        """Publish the live version and the clean rejection rate its build measured (-1 when unknown)."""
        self._version.set(float(version))
        self._rate.set(-1.0 if rejection_rate is None else float(rejection_rate))


class InvalidInputMetrics:
    """Refused requests by reason for one set; every reason's series exists from the start (at 0)."""

    def __init__(self, backend: Any, set_name: str) -> None:
        family = backend.MetricFamily
        self._family = family("iqaguard_invalid_inputs_total", "Requests refused as invalid input, by reason",
                              family.COUNTER)  # fmt: skip
        self._counters = {r: self._family.Metric(labels={"set": set_name, "reason": r}) for r in INVALID_REASONS}

    def record(self, kind: str) -> None:
        self._counters[kind if kind in self._counters else "undecodable"].increment(1)


def audit_line(
    set_name: str, request_id: str, item: int, verdict: str, suspicion: float, quality: float, by: str = "detector"
) -> str:
    """One flagged image as a log line: numbers and names only, never image content; `by` says what
    flagged it (detector, probe). The client's request id is quoted and capped, so it cannot forge or
    split log lines."""
    quoted = json.dumps(request_id[:MAX_REQUEST_ID_CHARS], ensure_ascii=True)
    return (
        f"iqaguard audit: set={set_name} request_id={quoted} item={item} verdict={verdict} "
        f"suspicion={suspicion:.4f} quality={quality:.2f} by={by}"
    )


def live_build(repository: Path, set_name: str) -> tuple[int, float | None] | None:
    """(live version, its measured clean false-rejection rate) of set `set_name`, or None when not recorded."""
    for model_set in model_sets(Path(repository)):
        if set_name not in (model_set.name, "default" if model_set.name is None else None):
            continue
        state = read_state(repository, model_set)
        if state is None:
            return None
        manifest = Path(repository) / model_set.model(DETECTOR) / str(state.live) / MANIFEST_FILE
        try:
            rate = json.loads(manifest.read_text())["metrics"]["detector"]["false_rejection_rate"]
        except (OSError, ValueError, KeyError, TypeError):
            rate = None
        return state.live, rate
    return None
