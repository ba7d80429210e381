"""The thin client's parts without a server: settings, retries, errors, result parsing, channel closing."""

from __future__ import annotations

import pytest
from iqaguard_client import (
    Classifier,
    ConnectionSettings,
    ImageRejectedError,
    RetryPolicy,
    ServerUnavailableError,
)
from iqaguard_client.connection import is_unavailable
from iqaguard_client.results import ResponseError, error_for, parse_result, parse_top_k
from tritonclient.utils import InferenceServerException

from iqaguard.launcher.process import free_port

# ------------------------------------------------------------------------------------------ no server


def test_retry_policy_backs_off_exponentially_with_a_cap() -> None:
    assert list(RetryPolicy(retries=5, backoff_s=0.1, backoff_max_s=0.5).delays()) == pytest.approx(
        [0.1, 0.2, 0.4, 0.5, 0.5]
    )
    assert list(RetryPolicy(retries=0).delays()) == []
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)


def test_connection_settings_validate_and_map_to_tritonclient() -> None:
    assert ConnectionSettings("grpc").address == "127.0.0.1:8001"
    assert ConnectionSettings("http").address == "127.0.0.1:8000"
    with pytest.raises(ValueError, match="without a scheme"):
        ConnectionSettings("http", url="http://127.0.0.1:8000")
    with pytest.raises(ValueError, match="protocol"):
        ConnectionSettings("tcp")  # type: ignore[arg-type]
    secure = ConnectionSettings("grpc", url="triton:443", ssl=True, ca_file="ca.pem", cert_file="c.pem", key_file="k")
    assert secure.grpc_kwargs() == {
        "url": "triton:443", "ssl": True, "root_certificates": "ca.pem", "private_key": "k",
        "certificate_chain": "c.pem",
    }  # fmt: skip
    http = ConnectionSettings("http", timeout_s=7.0, ssl=True, ca_file="ca.pem").http_kwargs()
    assert http["network_timeout"] == http["connection_timeout"] == 7.0
    assert http["ssl_options"] == {"ca_certs": "ca.pem"}
    assert "ssl_options" not in ConnectionSettings("http").http_kwargs()


def test_only_unavailable_is_retryable() -> None:
    assert is_unavailable(InferenceServerException("down", status="StatusCode.UNAVAILABLE"))
    assert is_unavailable(InferenceServerException("busy", status="503"))
    assert is_unavailable(ConnectionRefusedError(111, "refused"))
    assert not is_unavailable(InferenceServerException("bad", status="StatusCode.INVALID_ARGUMENT"))
    assert not is_unavailable(InferenceServerException("slow", status="StatusCode.DEADLINE_EXCEEDED"))
    assert not is_unavailable(TimeoutError("slow"))


def test_errors_name_the_image_and_say_what_kind_they_are() -> None:
    rejected = error_for("cat.jpg", InferenceServerException("invalid image: empty input", status="400"), False)
    assert isinstance(rejected, ImageRejectedError) and str(rejected) == "cat.jpg: invalid image: empty input"
    down = error_for("dog.png", InferenceServerException("refused", status="StatusCode.UNAVAILABLE"), True, 4)
    assert isinstance(down, ServerUnavailableError) and "dog.png" in str(down) and "after 4 attempts" in str(down)
    assert down.to_dict() == {
        "image": "dog.png", "ok": False, "error": down.message, "status": "StatusCode.UNAVAILABLE",
    }  # fmt: skip


def test_top_k_entries_are_parsed_best_first_and_keep_colons_in_labels() -> None:
    labels = parse_top_k([b"0.25:3:b", b"0.7:1:a:with colon", "0.05:0"])
    assert [(item.label, item.index, item.probability) for item in labels] == [
        ("a:with colon", 1, 0.7), ("b", 3, 0.25), ("0", 0, 0.05),
    ]  # fmt: skip


# ------------------------------------------------------------------------------- against the server


def test_malformed_response_is_a_response_error() -> None:
    class Empty:
        def as_numpy(self, name: str) -> None:
            return None

    with pytest.raises(ResponseError, match=r"^odd\.jpg: malformed"):
        parse_result("odd.jpg", Empty())


def test_grpc_channel_is_closed_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # tritonclient closes again from __del__; a second close under gevent (Locust) can hang at exit.
    classifier = Classifier(ConnectionSettings("grpc", url=f"127.0.0.1:{free_port()}"))
    closes: list[int] = []
    channel = classifier._client._channel
    real_close = channel.close
    monkeypatch.setattr(channel, "close", lambda: closes.append(1) or real_close())
    classifier.close()
    classifier.close()
    classifier._client.__del__()
    assert closes == [1]
