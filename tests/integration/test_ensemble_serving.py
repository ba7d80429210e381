"""The robust_classifier ensemble on a real embedded Triton server, over gRPC and HTTP."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from support.fixture_models import FIXTURE_CLASSES, FIXTURE_SIZE
from support.images import encode
from tritonclient.utils import InferenceServerException

from iqaguard.contract import ENSEMBLE, ENSEMBLE_OUTPUTS, VERDICTS
from iqaguard.imaging import bytes_to_pixels
from iqaguard.iqa import brisque
from iqaguard.launcher.process import TritonServer

pytestmark = pytest.mark.integration


def _image_input(module: ModuleType, data: bytes) -> Any:
    tensor = module.InferInput("IMAGE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    return tensor


def _check_contract(result: Any, n_classes: int = len(FIXTURE_CLASSES)) -> None:
    probs, quality = result.as_numpy("PROBS"), result.as_numpy("QUALITY")
    suspicion, verdict = result.as_numpy("SUSPICION"), result.as_numpy("VERDICT")
    assert probs.dtype == np.float32 and probs.shape == (1, n_classes)
    assert abs(float(probs.sum()) - 1.0) < 1e-4 and (probs >= 0).all()
    assert quality.dtype == np.float32 and quality.shape == (1, 1) and np.isfinite(quality).all()
    assert suspicion.dtype == np.float32 and suspicion.shape == (1, 1) and 0.0 <= float(suspicion[0, 0]) <= 1.0
    assert verdict.dtype == np.object_ and verdict.shape == (1, 1) and verdict[0, 0].decode() in VERDICTS


@pytest.fixture(scope="module")
def payloads(photo: np.ndarray) -> dict[str, bytes]:
    return {"jpeg": encode(photo, "JPEG", quality=90), "png": encode(photo, "PNG")}


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_grpc_sync_returns_the_contract(triton_server: TritonServer, payloads: dict[str, bytes], fmt: str) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    outputs = [grpcclient.InferRequestedOutput(name) for name in ENSEMBLE_OUTPUTS]
    _check_contract(client.infer(ENSEMBLE, [_image_input(grpcclient, payloads[fmt])], outputs=outputs))


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_http_sync_returns_the_contract(triton_server: TritonServer, payloads: dict[str, bytes], fmt: str) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_url)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=True) for name in ENSEMBLE_OUTPUTS]
    _check_contract(client.infer(ENSEMBLE, [_image_input(httpclient, payloads[fmt])], outputs=outputs))


def test_asyncio_grpc_and_http(triton_server: TritonServer, payloads: dict[str, bytes]) -> None:
    async def run() -> None:
        grpc_client = grpcaio.InferenceServerClient(triton_server.grpc_url)
        http_client = httpaio.InferenceServerClient(triton_server.http_url)
        try:
            results = await asyncio.gather(
                *[grpc_client.infer(ENSEMBLE, [_image_input(grpcaio, data)]) for data in payloads.values()],
                *[http_client.infer(ENSEMBLE, [_image_input(httpaio, data)]) for data in payloads.values()],
            )
        finally:
            await grpc_client.close()
            await http_client.close()
        for result in results:
            _check_contract(result)

    asyncio.run(run())


def test_top_k_labels_come_back_by_name(
    triton_server: TritonServer, payloads: dict[str, bytes], fixture_repository: Path
) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    result = client.infer(
        ENSEMBLE,
        [_image_input(grpcclient, payloads["jpeg"])],
        outputs=[grpcclient.InferRequestedOutput("PROBS", class_count=3)],
    )
    entries = [item.decode() for item in result.as_numpy("PROBS").reshape(-1)]
    assert len(entries) == 3
    parsed = [entry.split(":") for entry in entries]
    assert [label for _, _, label in parsed] == [FIXTURE_CLASSES[int(index)] for _, index, _ in parsed]
    scores = [float(score) for score, _, _ in parsed]
    assert scores == sorted(scores, reverse=True)

    # The same ranking as the fixture teacher computes in-process on the same pixels.
    pixels = bytes_to_pixels(payloads["jpeg"], FIXTURE_SIZE)[None]
    teacher = torch.jit.load(str(fixture_repository / "teacher" / "1" / "model.pt"))
    with torch.no_grad():
        _, probs = teacher(torch.from_numpy(pixels))
    assert [int(index) for _, index, _ in parsed] == probs[0].argsort(descending=True)[:3].tolist()


def test_quality_is_brisque_of_the_served_pixels(triton_server: TritonServer, payloads: dict[str, bytes]) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    result = client.infer(ENSEMBLE, [_image_input(grpcclient, payloads["png"])])
    expected = brisque(bytes_to_pixels(payloads["png"], FIXTURE_SIZE)[None])[0, -1]
    assert float(result.as_numpy("QUALITY")[0, 0]) == pytest.approx(float(expected), abs=1e-3)


def test_served_teacher_equals_in_process_module_for_mixed_batches(
    triton_server: TritonServer, fixture_repository: Path
) -> None:
    rng = np.random.default_rng(1)
    batches = [rng.random((size, 3, *FIXTURE_SIZE), dtype=np.float32) for size in (1, 4, 2, 7, 3)]

    async def run() -> list:
        client = grpcaio.InferenceServerClient(triton_server.grpc_url)
        try:
            requests = []
            for batch in batches:
                tensor = grpcaio.InferInput("PIXELS__0", list(batch.shape), "FP32")
                tensor.set_data_from_numpy(batch)
                requests.append(client.infer("teacher", [tensor]))
            return await asyncio.gather(*requests)
        finally:
            await client.close()

    teacher = torch.jit.load(str(fixture_repository / "teacher" / "1" / "model.pt"))
    for batch, result in zip(batches, asyncio.run(run()), strict=True):
        with torch.no_grad():
            logits, probs = teacher(torch.from_numpy(batch))
        np.testing.assert_allclose(result.as_numpy("LOGITS__0"), logits.numpy(), atol=1e-5)
        np.testing.assert_allclose(result.as_numpy("PROBS__1"), probs.numpy(), atol=1e-5)


def _metric(text: str, name: str, model: str) -> float:
    match = re.search(rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.e+]+)$', text, re.MULTILINE)
    assert match, f"{name} for {model} not in metrics"
    return float(match.group(1))


def test_dynamic_batching_happens_under_concurrency(triton_server: TritonServer, payloads: dict[str, bytes]) -> None:
    members = ("iqa_preprocess", "teacher", "student", "detector")

    def snapshot() -> dict[str, tuple[float, float]]:
        text = urllib.request.urlopen(triton_server.metrics_url, timeout=10).read().decode()
        return {
            model: (
                _metric(text, "nv_inference_exec_count", model),
                _metric(text, "nv_inference_request_success", model),
            )
            for model in members
        }

    async def burst() -> None:
        client = grpcaio.InferenceServerClient(triton_server.grpc_url)
        try:
            results = await asyncio.gather(
                *[client.infer(ENSEMBLE, [_image_input(grpcaio, payloads["jpeg"])]) for _ in range(32)]
            )
        finally:
            await client.close()
        assert len(results) == 32

    before = snapshot()
    asyncio.run(burst())
    # A member's statistics are recorded after it releases its response, so the ensemble's answer can
    # arrive before the last member's counters move: let them settle (bounded) before reading.
    deadline = time.monotonic() + 10
    after = snapshot()
    while time.monotonic() < deadline and any(after[m][1] - before[m][1] < 32 for m in members):
        time.sleep(0.1)
        after = snapshot()
    for model in members:
        executions = after[model][0] - before[model][0]
        successes = after[model][1] - before[model][1]
        assert successes == 32, f"{model}: {successes} successes"
        assert executions <= successes / 2, f"{model}: {executions} executions for {successes} requests"


def test_wrong_input_name_is_a_clear_client_error(triton_server: TritonServer, payloads: dict[str, bytes]) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    tensor = grpcclient.InferInput("PICTURE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[payloads["jpeg"]]], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="PICTURE"):
        client.infer(ENSEMBLE, [tensor])
    assert client.is_server_ready()
