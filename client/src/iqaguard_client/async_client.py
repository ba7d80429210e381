"""asyncio client for the robust_classifier ensemble over gRPC or HTTP (tritonclient's aio clients)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from iqaguard_client.connection import ConnectionSettings, is_unavailable
from iqaguard_client.contract import ENSEMBLE
from iqaguard_client.inference import DEFAULT_TOP_K, TRANSPORT_ERRORS, ensemble_request, read_image, transport
from iqaguard_client.results import Classification, ClassificationError, ServerUnavailableError, error_for, parse_result

Outcome = Classification | ClassificationError


class AsyncClassifier:
    """Classify many images concurrently, one request per image, so a bad image fails only itself.

    Create it inside the running event loop (gRPC's aio channel binds to it), e.g.
    ``async with AsyncClassifier(settings) as classifier: ...``.
    """

    def __init__(
        self,
        settings: ConnectionSettings | None = None,
        top_k: int = DEFAULT_TOP_K,
        model: str = ENSEMBLE,
        max_connections: int = 64,
    ) -> None:
        self.settings = settings or ConnectionSettings()
        self.top_k = top_k
        self.model = model
        self._module = transport(self.settings.protocol, asynchronous=True)
        if self.settings.protocol == "grpc":
            self._client = self._module.InferenceServerClient(**self.settings.grpc_kwargs())
            self._infer_kwargs: dict[str, Any] = {"client_timeout": self.settings.timeout_s}
        else:
            self._client = self._module.InferenceServerClient(**self.settings.http_aio_kwargs(max_connections))
            self._infer_kwargs = {}  # aiohttp's total timeout is set on the session

    async def check_ready(self) -> None:
        """Raise ServerUnavailableError (with the address) unless the server and the model are ready."""
        where = f"{self.settings.protocol}://{self.settings.address}"
        try:
            ready = await asyncio.wait_for(self._client.is_model_ready(self.model), self.settings.timeout_s)
        except TRANSPORT_ERRORS as error:
            raise ServerUnavailableError(where, f"cannot reach Triton: {error or type(error).__name__}") from error
        if not ready:
            raise ServerUnavailableError(where, f"model {self.model!r} is not ready")

    async def classify(self, data: bytes, image: str = "<bytes>", top_k: int | None = None) -> Classification:
        """Classify one encoded image; retry only UNAVAILABLE; raise ClassificationError naming `image`."""
        inputs, outputs = ensemble_request(self._module, data, top_k or self.top_k)
        delays = self.settings.retry.delays()
        attempts = 0
        while True:
            attempts += 1
            try:
                result = await self._client.infer(self.model, inputs, outputs=outputs, **self._infer_kwargs)
                return parse_result(image, result)
            except TRANSPORT_ERRORS as error:
                unavailable = is_unavailable(error)
                delay = next(delays, None) if unavailable else None
                if delay is None:
                    raise error_for(image, error, unavailable, attempts) from error
                await asyncio.sleep(delay)

    async def classify_many(
        self,
        images: Iterable[tuple[str, bytes | Path]],
        concurrency: int = 8,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> AsyncIterator[Outcome]:
        """Classify (name, bytes-or-path) pairs with at most `concurrency` requests in flight.

        Yields one outcome per image, in input order, as soon as it and those before it are done;
        failures are yielded as ClassificationError, never raised. Files are read only when their
        request is about to be sent. `on_done` is called in completion order (e.g. a progress bar).
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        slots = asyncio.Semaphore(concurrency)

        async def one(name: str, source: bytes | Path) -> Outcome:
            async with slots:
                try:
                    data = read_image(source, name) if isinstance(source, Path) else source
                    outcome: Outcome = await self.classify(data, name)
                except ClassificationError as error:
                    outcome = error
            if on_done is not None:
                on_done(outcome)
            return outcome

        tasks = [asyncio.ensure_future(one(name, source)) for name, source in images]
        try:
            for task in tasks:
                yield await task
        finally:
            for task in tasks:
                task.cancel()

    async def close(self) -> None:
        """Close the connection."""
        await self._client.close()

    async def __aenter__(self) -> AsyncClassifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
