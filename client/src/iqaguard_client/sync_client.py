"""Blocking client for the robust_classifier ensemble over gRPC or HTTP (tritonclient)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient

from iqaguard_client.connection import ConnectionSettings, is_unavailable
from iqaguard_client.contract import ENSEMBLE
from iqaguard_client.inference import (
    DEFAULT_TOP_K,
    TRANSPORT_ERRORS,
    ensemble_request,
    read_image,
    response_size,
    transport,
)
from iqaguard_client.results import Classification, ClassificationError, ServerUnavailableError, error_for, parse_result


@dataclass(frozen=True)
class Reply:
    """A Classification plus what it cost on the wire: response bytes and attempts (retries + 1)."""

    result: Classification
    response_bytes: int
    attempts: int


class _GrpcClient(grpcclient.InferenceServerClient):
    """tritonclient's blocking gRPC client with a close() that acts once.

    tritonclient closes again from __del__; with gRPC's gevent support on (Locust), a second
    Channel.close() during garbage collection can hang the process at exit.
    """

    _closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            super().close()


class Classifier:
    """Classify images one request per image with tritonclient's blocking client.

    Safe to use from one thread (or one greenlet) at a time; give each thread or Locust user its own.
    """

    def __init__(
        self, settings: ConnectionSettings | None = None, top_k: int = DEFAULT_TOP_K, model: str = ENSEMBLE
    ) -> None:
        self.settings = settings or ConnectionSettings()
        self.top_k = top_k
        self.model = model
        self._module = transport(self.settings.protocol, asynchronous=False)
        if self.settings.protocol == "grpc":
            self._client = _GrpcClient(**self.settings.grpc_kwargs())
            self._infer_kwargs: dict[str, Any] = {"client_timeout": self.settings.timeout_s}
        else:
            self._client = self._module.InferenceServerClient(**self.settings.http_kwargs())
            self._infer_kwargs = {}  # the HTTP client's timeouts are set on the connection

    def check_ready(self) -> None:
        """Raise ServerUnavailableError (with the address) unless the server and the model are ready."""
        where = f"{self.settings.protocol}://{self.settings.address}"
        try:
            ready = self._client.is_model_ready(self.model)
        except TRANSPORT_ERRORS as error:
            raise ServerUnavailableError(where, f"cannot reach Triton: {error}") from error
        if not ready:
            raise ServerUnavailableError(where, f"model {self.model!r} is not ready")

    def classify_reply(self, data: bytes, image: str = "<bytes>", top_k: int | None = None) -> Reply:
        """Classify one encoded image; retry only UNAVAILABLE; raise ClassificationError naming `image`."""
        inputs, outputs = ensemble_request(self._module, data, top_k or self.top_k)
        delays = self.settings.retry.delays()
        attempts = 0
        while True:
            attempts += 1
            try:
                result = self._client.infer(self.model, inputs, outputs=outputs, **self._infer_kwargs)
                break
            except TRANSPORT_ERRORS as error:
                unavailable = is_unavailable(error)
                delay = next(delays, None) if unavailable else None
                if delay is None:
                    raise error_for(image, error, unavailable, attempts) from error
                time.sleep(delay)
        return Reply(parse_result(image, result), response_size(result), attempts)

    def classify(self, data: bytes, image: str = "<bytes>", top_k: int | None = None) -> Classification:
        """Classify one encoded image (see classify_reply)."""
        return self.classify_reply(data, image, top_k).result

    def classify_files(self, paths: Iterable[Path]) -> Iterator[Classification | ClassificationError]:
        """Classify files one after another; failures are yielded (not raised) so one file cannot stop the rest."""
        for path in paths:
            try:
                yield self.classify(read_image(path, str(path)), str(path))
            except ClassificationError as error:
                yield error

    def close(self) -> None:
        """Close the connection."""
        self._client.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
