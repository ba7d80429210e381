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
from support.fixture_models import FIXTURE_SIZE
from support.images import bad_images, encode

from iqaguard.bench.inprocess import InProcessPipeline
from iqaguard.bench.loadgen import LoadResult, ensemble_call, measure, teacher_call
from iqaguard.contract import ENSEMBLE, ENSEMBLE_OUTPUTS, INPUT_IMAGE
from iqaguard.imaging import InvalidImageError, bytes_to_pixels
from iqaguard.launcher.process import TritonServer


@pytest.mark.integration
def test_in_process_pipeline_equals_the_served_ensemble(
    triton_server: TritonServer, fixture_repository: Path, photo: np.ndarray
) -> None:
    """The in-process pipeline is the stateless part of the ensemble. The served verdict also depends on the
    probe memory (what the shared server answered before), so the images are this test's own: two distinct
    scenes (the photo upside down, a seeded synthetic image) that no other test sends."""
    pipeline = InProcessPipeline(fixture_repository, {"iqa_preprocess": 2, "teacher": 1})
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    blocks = np.random.default_rng(20261203).uniform(30, 225, size=(6, 6, 3))
    synthetic = np.rint(blocks.repeat(16, axis=0).repeat(16, axis=1)).astype(np.uint8)
    for image in (encode(np.ascontiguousarray(photo[::-1, ::-1]), "JPEG", quality=90), encode(synthetic, "PNG")):
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
        sys.executable, "-m", "iqaguard.bench.benchmark", "--repository", str(fixture_repository),
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


@pytest.mark.integration
def test_expensive_load_benchmark_sends_the_costliest_legal_request(
    triton_server: TritonServer, fixture_repository: Path, tmp_path: Path
) -> None:
    out = tmp_path / "expensive.json"
    command = [
        sys.executable, "-m", "iqaguard.bench.expensive_load", "--repository", str(fixture_repository),
        "--url", triton_server.grpc_url, "--http-url", triton_server.http_url, "--duration", "1", "--json", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert list(report["phases"]) == ["baseline", "with_costly_client", "baseline_after"]
    assert all(phase["requests"] > 0 and phase["errors"] == 0 for phase in report["phases"].values())
    costly = report["costly_requests"]
    assert costly["answered"] >= 1 and not costly["errors"], "the costliest request is legal: answered, not refused"
    assert costly["items"] == report["budget"]["max_request_items"]
    assert "the baseline (target < 2×)" in result.stdout
