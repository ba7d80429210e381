"""Bad input fails its own request with a clear error; good requests beside it succeed; the server lives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from support.fixture_models import FIXTURE_SIZE
from support.images import bad_images, encode, good_images
from tritonclient.utils import InferenceServerException

from iqaguard.contract import ENSEMBLE, VERDICTS
from iqaguard.imaging import bytes_to_pixels
from iqaguard.launcher.process import TritonServer

pytestmark = pytest.mark.integration


def _request(data_items: list[bytes]) -> grpcaio.InferInput:
    tensor = grpcaio.InferInput("IMAGE", [len(data_items), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(data_items, dtype=np.object_).reshape(-1, 1))
    return tensor


async def _send_all(url: str, payloads: list[list[bytes]]) -> list:
    client = grpcaio.InferenceServerClient(url)
    try:
        return await asyncio.gather(
            *[client.infer(ENSEMBLE, [_request(items)]) for items in payloads], return_exceptions=True
        )
    finally:
        await client.close()


def test_bad_and_odd_inputs_mixed_with_good_ones(
    triton_server: TritonServer, photo: np.ndarray, fixture_repository: Path
) -> None:
    bad, odd = bad_images(photo), good_images(photo)
    clean = encode(photo, "JPEG")
    # Interleave so bad requests share dynamic batches with good ones.
    cases = [(f"good #{i}", clean) for i in range(12)] + list(bad.items()) + list(odd.items())
    order = np.random.default_rng(0).permutation(len(cases))
    cases = [cases[i] for i in order]
    results = asyncio.run(_send_all(triton_server.grpc_url, [[data] for _, data in cases]))

    teacher = torch.jit.load(str(fixture_repository / "teacher" / "1" / "model.pt"))
    for (name, data), result in zip(cases, results, strict=True):
        if name in bad:
            assert isinstance(result, InferenceServerException), f"{name} was accepted"
            assert "invalid image" in result.message(), f"{name}: unclear error {result.message()!r}"
            continue
        assert not isinstance(result, Exception), f"{name} failed: {result}"
        assert result.as_numpy("VERDICT")[0, 0].decode() in VERDICTS
        # A correct answer: the same probabilities as the teacher in-process on the same decoded pixels.
        with torch.no_grad():
            _, expected = teacher(torch.from_numpy(bytes_to_pixels(data, FIXTURE_SIZE)[None]))
        np.testing.assert_allclose(result.as_numpy("PROBS"), expected.numpy(), atol=1e-5, err_msg=name)

    assert grpcclient.InferenceServerClient(triton_server.grpc_url).is_server_ready()


def test_error_messages_name_the_problem(triton_server: TritonServer, photo: np.ndarray) -> None:
    bad = bad_images(photo)
    expectations = {
        "empty": "empty input",
        "text file": "unsupported format: only JPEG, PNG, BMP, WebP and GIF",
        "tiff": "unsupported format",
        "eps (would need Ghostscript)": "unsupported format",
        "truncated jpeg": "truncated",
        "png claiming 50000x50000": "exceeds the limit",
    }
    results = asyncio.run(_send_all(triton_server.grpc_url, [[bad[name]] for name in expectations]))
    for (name, expected), result in zip(expectations.items(), results, strict=True):
        assert isinstance(result, InferenceServerException)
        assert expected in result.message(), f"{name}: {result.message()!r}"


def test_one_bad_item_fails_only_its_multi_image_request(triton_server: TritonServer, photo: np.ndarray) -> None:
    clean = encode(photo, "PNG")
    results = asyncio.run(_send_all(triton_server.grpc_url, [[clean, b"broken", clean], [clean, clean]]))
    assert isinstance(results[0], InferenceServerException) and "item 1" in results[0].message()
    assert results[1].as_numpy("PROBS").shape == (2, 10)
