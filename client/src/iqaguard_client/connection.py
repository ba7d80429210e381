"""How to reach the server: protocol, address, timeouts, TLS and the retry policy for UNAVAILABLE."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from tritonclient.utils import InferenceServerException

Protocol = Literal["grpc", "http"]
PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http")
DEFAULT_URLS: dict[Protocol, str] = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}

_GRPC_UNAVAILABLE = "StatusCode.UNAVAILABLE"
_HTTP_UNAVAILABLE = "503"


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a request that failed with UNAVAILABLE (and only that), with capped exponential backoff.

    `retries` is the number of extra attempts after the first one; 0 disables retrying.
    """

    retries: int = 3
    backoff_s: float = 0.1
    backoff_max_s: float = 2.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.backoff_max_s < 0:
            raise ValueError(f"retry settings must be non-negative: {self}")

    def delays(self) -> Iterator[float]:
        """The sleeps between attempts: backoff_s, 2·backoff_s, 4·backoff_s … capped at backoff_max_s."""
        for attempt in range(self.retries):
            yield min(self.backoff_s * (2**attempt), self.backoff_max_s)


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything a client needs to talk to one Triton server.

    url is host:port without a scheme (tritonclient's convention). timeout_s bounds one request
    attempt (connect + inference). TLS: `ssl` switches it on; `ca_file` verifies the server,
    `cert_file`/`key_file` authenticate the client; `insecure` skips host-name checks (HTTP only).
    """

    protocol: Protocol = "grpc"
    url: str | None = None
    timeout_s: float = 30.0
    ssl: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.url is not None and "://" in self.url:
            raise ValueError(f"url is host:port without a scheme (use ssl=True for TLS), got {self.url!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")

    @property
    def address(self) -> str:
        """host:port to connect to (the protocol's local default when url is not set)."""
        return self.url or DEFAULT_URLS[self.protocol]

    def grpc_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for tritonclient.grpc(.aio).InferenceServerClient."""
        return {
            "url": self.address,
            "ssl": self.ssl,
            "root_certificates": self.ca_file,
            "private_key": self.key_file,
            "certificate_chain": self.cert_file,
        }

    def http_kwargs(self, concurrency: int = 1) -> dict[str, Any]:
        """Keyword arguments for tritonclient.http.InferenceServerClient (geventhttpclient)."""
        kwargs: dict[str, Any] = {
            "url": self.address,
            "concurrency": concurrency,
            "connection_timeout": self.timeout_s,
            "network_timeout": self.timeout_s,
            "ssl": self.ssl,
            "insecure": self.insecure,
        }
        if self.ssl:
            options = {"ca_certs": self.ca_file, "certfile": self.cert_file, "keyfile": self.key_file}
            kwargs["ssl_options"] = {key: value for key, value in options.items() if value is not None}
        return kwargs

    def http_aio_kwargs(self, concurrency: int = 100) -> dict[str, Any]:
        """Keyword arguments for tritonclient.http.aio.InferenceServerClient (aiohttp)."""
        return {
            "url": self.address,
            "conn_limit": concurrency,
            "conn_timeout": self.timeout_s,
            "ssl": self.ssl,
            "ssl_context": self.ssl_context() if self.ssl else None,
        }

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context from ca_file / cert_file / key_file / insecure."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def is_unavailable(error: BaseException) -> bool:
    """Whether an error means "the server could not be reached or is not ready": the only retried kind.

    gRPC reports it as status UNAVAILABLE, HTTP as 503 or as a refused/reset connection.
    """
    if isinstance(error, InferenceServerException):
        return error.status() in (_GRPC_UNAVAILABLE, _HTTP_UNAVAILABLE)
    if isinstance(error, ConnectionError):  # refused, reset, aborted (geventhttpclient)
        return True
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp comes with tritonclient[http]
        return False
    return isinstance(error, aiohttp.ClientConnectionError) and not isinstance(error, aiohttp.ServerTimeoutError)
