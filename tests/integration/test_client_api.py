"""The thin clients (iqaguard_client): settings, retries, result parsing, and real calls to the fixture server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from iqaguard_client import (
    AsyncClassifier,
    Classification,
    ClassificationError,
    Classifier,
    ConnectionSettings,
    ImageRejectedError,
    RetryPolicy,
    ServerUnavailableError,
)
from support.fixture_models import FIXTURE_CLASSES
from support.images import bad_images, encode
from tritonclient.utils import InferenceServerException

from iqaguard.contract import VERDICTS
from iqaguard.launcher.process import TritonServer, free_port

# ------------------------------------------------------------------------------------------ no server


@pytest.fixture(scope="module")
def jpeg(photo: np.ndarray) -> bytes:
    return encode(photo, "JPEG", quality=90)


def _check(answer: Classification, image: str, top_k: int) -> None:
    assert answer.image == image
    assert len(answer.top_k) == top_k
    assert all(item.label == FIXTURE_CLASSES[item.index] for item in answer.top_k)
    probabilities = [item.probability for item in answer.top_k]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0 + 1e-5
    assert answer.verdict in VERDICTS and answer.accepted == (answer.verdict == "accept")
    assert 0.0 <= answer.suspicion <= 1.0 and np.isfinite(answer.quality)


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sync_client_classifies_and_names_rejected_images(
    triton_server: TritonServer, jpeg: bytes, photo: np.ndarray, protocol: str
) -> None:
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    with Classifier(ConnectionSettings(protocol, url=url), top_k=3) as classifier:  # type: ignore[arg-type]
        classifier.check_ready()
        reply = classifier.classify_reply(jpeg, "chelsea.jpg")
        _check(reply.result, "chelsea.jpg", 3)
        assert reply.attempts == 1 and reply.response_bytes > 0
        truncated = bad_images(photo)["truncated jpeg"]
        with pytest.raises(ImageRejectedError, match=r"^half\.jpg: .*invalid image") as caught:
            classifier.classify(truncated, "half.jpg")
        assert caught.value.image == "half.jpg"
        _check(classifier.classify(jpeg, "again.jpg", top_k=1), "again.jpg", 1)  # the connection still works


@pytest.mark.integration
def test_grpc_and_http_give_the_same_answer(triton_server: TritonServer, jpeg: bytes) -> None:
    with Classifier(ConnectionSettings("grpc", url=triton_server.grpc_url)) as over_grpc:
        first = over_grpc.classify(jpeg, "x")
    with Classifier(ConnectionSettings("http", url=triton_server.http_url)) as over_http:
        second = over_http.classify(jpeg, "x")
    assert [item.index for item in first.top_k] == [item.index for item in second.top_k]
    assert first.verdict == second.verdict
    assert first.quality == pytest.approx(second.quality, abs=1e-2)


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_async_classify_many_keeps_order_and_isolates_bad_images(
    triton_server: TritonServer, jpeg: bytes, photo: np.ndarray, tmp_path: Path, protocol: str
) -> None:
    unreadable = tmp_path / "gone.png"  # a path that vanished before it was read
    bad = bad_images(photo)
    items: list[tuple[str, bytes | Path]] = [
        ("a.jpg", jpeg), ("empty", bad["empty"]), ("b.png", encode(photo, "PNG")), ("text", bad["text file"]),
        ("gone.png", unreadable), *[(f"c{index}.jpg", jpeg) for index in range(6)],
    ]  # fmt: skip
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    completed: list[str] = []

    async def run() -> list:
        async with AsyncClassifier(ConnectionSettings(protocol, url=url), top_k=2) as classifier:  # type: ignore[arg-type]
            await classifier.check_ready()
            stream = classifier.classify_many(items, concurrency=4, on_done=lambda o: completed.append(o.image))
            return [outcome async for outcome in stream]

    outcomes = asyncio.run(run())
    assert [outcome.image for outcome in outcomes] == [name for name, _ in items]
    assert sorted(completed) == sorted(name for name, _ in items)
    failed = {outcome.image: outcome for outcome in outcomes if isinstance(outcome, ClassificationError)}
    assert set(failed) == {"empty", "text", "gone.png"}
    assert isinstance(failed["empty"], ImageRejectedError) and "invalid image" in failed["empty"].message
    assert failed["gone.png"].status == "local" and "cannot read file" in failed["gone.png"].message
    for outcome in outcomes:
        if isinstance(outcome, Classification):
            _check(outcome, outcome.image, 2)


@pytest.mark.integration
def test_unavailable_is_retried_and_other_errors_are_not(
    triton_server: TritonServer, jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ConnectionSettings("grpc", url=triton_server.grpc_url, retry=RetryPolicy(retries=3, backoff_s=0.01))
    with Classifier(settings) as classifier:
        real_infer, calls = classifier._client.infer, []

        def flaky(*args: object, **kwargs: object) -> object:
            calls.append(1)
            if len(calls) <= 2:
                raise InferenceServerException("not yet", status="StatusCode.UNAVAILABLE")
            return real_infer(*args, **kwargs)

        monkeypatch.setattr(classifier._client, "infer", flaky)
        reply = classifier.classify_reply(jpeg, "flaky.jpg")
        assert reply.attempts == 3 and len(calls) == 3

        calls.clear()

        def unknown_model(_model: str, *args: object, **kwargs: object) -> object:
            calls.append(1)
            return real_infer("nope", *args, **kwargs)

        monkeypatch.setattr(classifier._client, "infer", unknown_model)
        with pytest.raises(ClassificationError, match="nope") as caught:
            classifier.classify(jpeg, "wrong-model.jpg")
        assert len(calls) == 1 and not isinstance(caught.value, ServerUnavailableError)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_unreachable_server_raises_unavailable_after_the_retries(jpeg: bytes, protocol: str) -> None:
    retry = RetryPolicy(retries=2, backoff_s=0.01)
    settings = ConnectionSettings(protocol, url=f"127.0.0.1:{free_port()}", timeout_s=5, retry=retry)  # type: ignore[arg-type]
    with Classifier(settings) as classifier:
        with pytest.raises(ServerUnavailableError, match="after 3 attempts"):
            classifier.classify(jpeg, "nowhere.jpg")
        with pytest.raises(ServerUnavailableError, match="cannot reach Triton"):
            classifier.check_ready()
