"""The benchmark's parts without a server: the closed-loop measurement, ratios, the speed repository."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support import CHECKED_IN_REPOSITORY

from iqaguard.bench.benchmark import ratios
from iqaguard.bench.expensive_load import Budget, costliest_items
from iqaguard.bench.loadgen import LoadResult, measure
from iqaguard.contract import ENSEMBLE
from iqaguard.imaging import InvalidImageError
from iqaguard.in_triton.preprocess import RequestBudget, header_pixels
from iqaguard.repository.layout import copy_checked_in
from iqaguard.repository.manifest import artifact_meta


def test_measure_counts_errors_and_honours_a_duration() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def sleeps() -> None:
        await asyncio.sleep(0.01)

    failed = asyncio.run(measure("x", fails, concurrency=2, requests=5))
    assert failed.requests == 0 and failed.errors == 5 and failed.first_error == "RuntimeError: boom"
    timed = asyncio.run(measure("y", sleeps, concurrency=3, duration_s=0.3))
    assert timed.errors == 0 and 0.3 <= timed.elapsed_s < 0.6
    assert 30 <= timed.requests <= 90 and timed.throughput == pytest.approx(timed.requests / timed.elapsed_s)
    assert 10.0 <= timed.p50_ms <= timed.p90_ms <= timed.p99_ms <= timed.max_ms
    with pytest.raises(ValueError):
        asyncio.run(measure("z", sleeps, concurrency=1))


def test_ratios_per_level_and_at_peak() -> None:
    def result(target: str, concurrency: int, throughput: float) -> LoadResult:
        return LoadResult(target, concurrency, 10, 0, 1.0, throughput, 1, 1, 1, 1, 1)

    table = ratios([
        result("ensemble", 1, 9.0), result("teacher", 1, 10.0), result("inprocess", 1, 12.0),
        result("ensemble", 4, 18.0), result("teacher", 4, 20.0), result("inprocess", 4, 15.0),
    ])  # fmt: skip
    assert table["ensemble/inprocess"] == pytest.approx({"1": 0.75, "4": 1.2, "peak": 18.0 / 15.0})
    assert table["ensemble/teacher"] == pytest.approx({"1": 0.9, "4": 0.9, "peak": 0.9})


def test_speed_repository_parts(tmp_path: Path, fixture_repository: Path) -> None:
    copy_checked_in(CHECKED_IN_REPOSITORY, tmp_path)
    assert {path.parent.name for path in tmp_path.glob("*/config.pbtxt")} == {
        "iqa_preprocess", "teacher", "student", "detector", "guard_monitor", "robust_classifier",
    }  # fmt: skip
    assert (tmp_path / "iqa_preprocess" / "1" / "model.py").is_file() and (tmp_path / ENSEMBLE / "1").is_dir()
    assert (tmp_path / "guard_monitor" / "1" / "model.py").is_file()
    assert not list(tmp_path.glob("*/*/model.pt"))  # configs only, never built artifacts
    assert artifact_meta(fixture_repository / "teacher" / "1" / "model.pt")["weights"] == "random"


def test_the_costliest_request_fills_the_budget_and_one_more_item_is_refused() -> None:
    budget = Budget(max_pixels=300_000, max_bytes=2_000_000, max_request_items=4, max_request_bytes=8_000_000,
                    max_request_pixels=1_000_000)  # fmt: skip
    items = costliest_items(budget)
    served = RequestBudget(budget.max_request_items, budget.max_request_bytes, budget.max_request_pixels)
    served.check(items)  # legal: nothing raised
    assert len(items) == 4 and 0.95 * budget.max_request_pixels <= sum(map(header_pixels, items))
    assert all(header_pixels(item) <= budget.max_pixels and len(item) <= budget.max_bytes for item in items)
    with pytest.raises(InvalidImageError, match="max_request_items"):
        served.check([*items, items[0]])
