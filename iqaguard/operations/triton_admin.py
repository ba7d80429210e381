"""Triton's model-control API as the operator uses it: every call carries the admin credential."""

from __future__ import annotations

import logging
import time

import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from iqaguard.launcher.security import admin_headers

log = logging.getLogger(__name__)


class AdminError(RuntimeError):
    """The server refused or failed a model-control call."""


class TritonAdmin:
    """Load, unload and inspect models on one server over HTTP (127.0.0.1:8000 by default)."""

    def __init__(self, url: str, admin_key: str, timeout_s: float = 600.0) -> None:
        self.url = url
        self._headers = admin_headers(admin_key)
        self._client = httpclient.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)

    def _call(self, what: str, call, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return call(*args, headers=self._headers, **kwargs)
        except InferenceServerException as error:
            raise AdminError(f"{what} on {self.url}: {error.message()}") from None
        except OSError as error:
            raise AdminError(f"{what}: cannot reach {self.url} ({error})") from None

    def load(self, model: str) -> float:
        """(Re)load `model` from the repository files; the old instance serves until the new one is ready.
        Returns the seconds it took."""
        started = time.monotonic()
        self._call(f"load {model}", self._client.load_model, model)
        took = time.monotonic() - started
        log.info("loaded %s (%.1f s)", model, took)
        return took

    def unload(self, model: str) -> None:
        """Unload `model` (its in-flight requests finish first)."""
        self._call(f"unload {model}", self._client.unload_model, model)
        log.info("unloaded %s", model)

    def index(self) -> list[dict]:
        """Every model version the repository holds, with its state (READY, UNAVAILABLE, ...)."""
        return list(self._call("repository index", self._client.get_model_repository_index))

    def is_ready(self, model: str) -> bool:
        try:
            return bool(self._client.is_model_ready(model))
        except (InferenceServerException, OSError):
            return False
