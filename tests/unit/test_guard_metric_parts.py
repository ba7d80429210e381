"""The guard's metrics and audit lines, with a recorder standing in for Triton's pb_utils."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

from iqaguard.imaging import INVALID_REASONS, InvalidImageError, decode_image
from iqaguard.in_triton.guard_metrics import (
    MAX_REQUEST_ID_CHARS,
    InvalidInputMetrics,
    VerdictMetrics,
    audit_line,
    live_build,
)
from iqaguard.in_triton.preprocess import RequestBudget
from iqaguard.repository.live import LiveState, write_state
from iqaguard.repository.sets import ModelSet, set_label


class FakeMetric:
    def __init__(self, labels: dict[str, str], buckets: list[float] | None) -> None:
        self.labels, self.buckets, self.value, self.observed = labels, buckets, 0.0, []

    def increment(self, value: float) -> None:
        self.value += value

    def set(self, value: float) -> None:
        self.value = value

    def observe(self, value: float) -> None:
        self.observed.append(value)


class FakeFamily:
    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
    made: ClassVar[dict[str, FakeFamily]] = {}

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.kind, self.metrics = name, kind, []
        FakeFamily.made[name] = self

    def Metric(self, labels: dict[str, str], buckets: list[float] | None = None) -> FakeMetric:  # pb_utils' name
        metric = FakeMetric(labels, buckets)
        self.metrics.append(metric)
        return metric


class FakeBackend:
    MetricFamily = FakeFamily


def _series(name: str) -> dict[tuple, FakeMetric]:
    return {tuple(sorted(m.labels.items())): m for m in FakeFamily.made[name].metrics}


def test_verdicts_are_counted_per_set_and_scores_observed() -> None:
    metrics = VerdictMetrics(FakeBackend, "natural")
    metrics.record(["accept", "adversarial", "accept", "low_quality"], [0.1, 0.9, 0.2, 0.7], [20.0, 30.0, 25.0, 90.0])
    counts = {dict(key)["verdict"]: m.value for key, m in _series("iqaguard_verdicts_total").items()}
    assert counts == {"accept": 2, "adversarial": 1, "low_quality": 1}
    assert FakeFamily.made["iqaguard_probe_flags_total"].metrics[0].value == 0
    assert all(m.labels["set"] == "natural" for m in FakeFamily.made["iqaguard_verdicts_total"].metrics)
    (suspicion,) = FakeFamily.made["iqaguard_suspicion"].metrics
    assert suspicion.observed[:4] == pytest.approx([0.1, 0.9, 0.2, 0.7]) and suspicion.buckets[-1] < 1
    assert FakeFamily.made["iqaguard_quality"].metrics[0].observed[:4] == pytest.approx([20, 30, 25, 90])
    metrics.record(["adversarial", "accept"], [0.2, 0.1], [30.0, 20.0], probes=[True, False])
    assert FakeFamily.made["iqaguard_probe_flags_total"].metrics[0].value == 1
    metrics.set_live(3, 0.04)
    assert FakeFamily.made["iqaguard_set_live_version"].metrics[0].value == 3
    assert FakeFamily.made["iqaguard_calibrated_rejection_rate"].metrics[0].value == pytest.approx(0.04)
    metrics.set_live(4, None)
    assert FakeFamily.made["iqaguard_calibrated_rejection_rate"].metrics[0].value == -1
    with pytest.raises(ValueError):
        metrics.record(["accept"], [0.1, 0.2], [1.0])  # a batch whose tensors disagree is a bug, not data


def test_every_invalid_reason_has_a_series_from_the_start() -> None:
    metrics = InvalidInputMetrics(FakeBackend, "fashion")
    series = {dict(key)["reason"]: m for key, m in _series("iqaguard_invalid_inputs_total").items()}
    assert set(series) == set(INVALID_REASONS) and all(m.value == 0 for m in series.values())
    metrics.record("empty")
    metrics.record("over_budget")
    metrics.record("something new")  # an unknown kind is still counted, never dropped
    assert (series["empty"].value, series["over_budget"].value, series["undecodable"].value) == (1, 1, 1)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty"),
        (b"%!PS-Adobe-3.0 EPSF", "unsupported_format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "undecodable"),
        (b"BM" + b"\x00" * 4, "undecodable"),
    ],
)
def test_refusals_say_why_in_a_metric_label(data: bytes, kind: str) -> None:
    with pytest.raises(InvalidImageError) as refused:
        decode_image(data)
    assert refused.value.kind == kind


def test_request_budget_refusals_are_over_budget() -> None:
    with pytest.raises(InvalidImageError) as refused:
        RequestBudget(max_items=2).check([b"a", b"b", b"c"])
    assert refused.value.kind == "over_budget"
    with pytest.raises(ValueError, match="unknown kind"):
        InvalidImageError("x", "mystery")


def test_audit_line_holds_numbers_and_a_quoted_capped_request_id() -> None:
    line = audit_line("fashion", 'id-7"\nset=other verdict=accept', 2, "adversarial", 0.91234, 12.345)
    assert "\n" not in line and line.count("set=") == 2 and line.startswith("iqaguard audit: set=fashion ")
    assert 'request_id="id-7\\"\\nset=other verdict=accept"' in line  # the forged fields stay inside the quotes
    assert line.endswith("item=2 verdict=adversarial suspicion=0.9123 quality=12.35 by=detector")
    long = audit_line("s", "x" * 10_000, 0, "low_quality", 0.5, 80.0)
    assert len(long) < MAX_REQUEST_ID_CHARS + 120
    assert json.loads(audit_line("s", "é", 0, "adversarial", 0, 0).split("request_id=")[1].split(" ")[0]) == "é"


def test_set_label_from_inside_a_model(tmp_path: Path) -> None:
    (tmp_path / "robust_classifier_fashion").mkdir()
    (tmp_path / "robust_classifier_fashion" / "config.pbtxt").write_text('model_name: "teacher"\n')
    assert set_label(tmp_path / "guard_monitor", "guard_monitor") == "fashion"
    assert set_label(tmp_path / "guard_monitor_natural", "guard_monitor_natural") == "natural"
    assert set_label(tmp_path / "iqa_preprocess_x2", "iqa_preprocess_x2") == "x2"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert set_label(empty / "guard_monitor", "guard_monitor") == "default"


def test_live_build_reads_the_live_versions_measured_rate(tmp_path: Path) -> None:
    (tmp_path / "robust_classifier_natural").mkdir()
    (tmp_path / "robust_classifier_natural" / "config.pbtxt").write_text('model_name: "teacher_natural"\n')
    natural = ModelSet("natural")
    assert live_build(tmp_path, "natural") is None  # nothing recorded yet
    write_state(tmp_path, natural, LiveState(live=2, history=[1, 2]))
    assert live_build(tmp_path, "natural") == (2, None)  # no manifest: unknown rate, not an invented one
    manifest = tmp_path / "detector_natural" / "2" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"metrics": {"detector": {"false_rejection_rate": 0.0375}}}))
    assert live_build(tmp_path, "natural") == (2, 0.0375)
    assert live_build(tmp_path, "fashion") is None
