"""The load generator, the in-process baseline and the benchmark, briefly, against the fixture server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from fixture_models import FIXTURE_SIZE
from images import bad_images, encode

from client.bench_repository import artifact_meta
from client.benchmark import ratios
from client.inprocess import InProcessPipeline
from client.loadgen import LoadResult, ensemble_call, measure, teacher_call
from iqaguard.contract import ENSEMBLE, ENSEMBLE_OUTPUTS, INPUT_IMAGE
from iqaguard.imaging import InvalidImageError, bytes_to_pixels
from iqaguard.server.process import TritonServer
from iqaguard.server.repository import DEFAULT_REPOSITORY, copy_checked_in


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
    copy_checked_in(DEFAULT_REPOSITORY, tmp_path)
    assert {path.parent.name for path in tmp_path.glob("*/config.pbtxt")} == {
        "iqa_preprocess", "teacher", "student", "detector", "robust_classifier",
    }  # fmt: skip
    assert (tmp_path / "iqa_preprocess" / "1" / "model.py").is_file() and (tmp_path / ENSEMBLE / "1").is_dir()
    assert not list(tmp_path.glob("*/*/model.pt"))  # configs only, never built artifacts
    assert artifact_meta(fixture_repository / "teacher" / "1" / "model.pt")["weights"] == "random"


@pytest.mark.integration
def test_in_process_pipeline_equals_the_served_ensemble(
    triton_server: TritonServer, fixture_repository: Path, photo: np.ndarray
) -> None:
    pipeline = InProcessPipeline(fixture_repository, {"iqa_preprocess": 2, "teacher": 1})
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    for image in (encode(photo, "JPEG", quality=90), encode(photo[::3, ::2], "PNG")):
        tensor = grpcclient.InferInput(INPUT_IMAGE, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[image]], dtype=np.object_))
        served = client.infer(ENSEMBLE, [tensor])
        local = pipeline(image)
        np.testing.assert_allclose(local.probs, served.as_numpy("PROBS"), atol=1e-5)
        np.testing.assert_allclose(local.quality, served.as_numpy("QUALITY"), atol=1e-3)
        np.testing.assert_allclose(local.suspicion, served.as_numpy("SUSPICION"), atol=1e-5)
        assert local.verdict.tolist() == served.as_numpy("VERDICT").tolist()
    with pytest.raises(InvalidImageError):
        pipeline(bad_images(photo)["truncated png"])


@pytest.mark.integration
def test_load_generator_drives_the_served_ensemble_and_teacher(triton_server: TritonServer, photo: np.ndarray) -> None:
    image = encode(photo, "JPEG", quality=90)

    async def run() -> list[LoadResult]:
        async with grpcaio.InferenceServerClient(triton_server.grpc_url) as client:
            ensemble = ensemble_call(client, image)
            first = await ensemble()
            assert {output.name for output in first.get_response().outputs} == set(ENSEMBLE_OUTPUTS)
            teacher = teacher_call(client, bytes_to_pixels(image, FIXTURE_SIZE))
            return [
                await measure("ensemble", ensemble, concurrency=2, requests=6, warmup=1),
                await measure("teacher", teacher, concurrency=3, requests=6, warmup=1),
            ]

    for result in asyncio.run(run()):
        assert result.requests == 6 and result.errors == 0, result
        assert result.throughput > 0 and 0 < result.p50_ms <= result.p90_ms <= result.p99_ms <= result.max_ms


@pytest.mark.integration
def test_benchmark_command_writes_json_against_a_running_server(
    triton_server: TritonServer, fixture_repository: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "client.benchmark", "--repository", str(fixture_repository),
        "--url", triton_server.grpc_url, "--http-url", triton_server.http_url,
        "--concurrency", "1,2", "--requests", "4", "--warmup", "1", "--json", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [(row["target"], row["concurrency"]) for row in report["results"]] == [
        (target, level) for level in (1, 2) for target in ("ensemble", "teacher", "inprocess")
    ]
    assert all(row["requests"] == 4 and row["errors"] == 0 for row in report["results"])
    assert set(report["ratios"]) == {"ensemble/inprocess", "ensemble/teacher"}
    assert report["conditions"]["instances_served_and_in_process"]["iqa_preprocess"] == 2
    assert report["conditions"]["members"]["teacher"]["weights"] == "random"
    assert "ensemble/inprocess" in result.stdout and "at peak throughput" in result.stdout
