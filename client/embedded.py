"""Find a running server, or start the project's embedded Triton server for a load test or benchmark."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from iqaguard.server.process import ServerOptions, TritonServer, free_port, server_ready
from iqaguard.server.repository import missing_artifacts


@dataclass(frozen=True)
class Endpoints:
    """Where a server listens (host:port, no scheme) and whether this process started it."""

    grpc_url: str
    http_url: str
    metrics_url: str | None = None
    started_here: bool = False


@contextlib.contextmanager
def embedded_server(repository: Path, log_path: Path, ready_timeout_s: float = 300.0) -> Iterator[Endpoints]:
    """Start the embedded server on free 127.0.0.1 ports, yield its endpoints, stop it by PID afterwards."""
    missing = missing_artifacts(repository)
    if missing:
        raise SystemExit(
            f"{repository} is not servable; missing: {', '.join(missing)}. Build a model set first (`make build`)."
        )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        options = ServerOptions(
            repository=repository.resolve(), http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
        )
        server = TritonServer(options, log=log)
        server.start()
        try:
            seconds = server.wait_ready(ready_timeout_s)
            print(f"embedded server ready in {seconds:.1f} s (pid {server.pid}, log {log_path})", flush=True)
            yield Endpoints(server.grpc_url, server.http_url, server.metrics_url, started_here=True)
        finally:
            server.stop()


@contextlib.contextmanager
def server_for(
    grpc_url: str, http_url: str, repository: Path, log_path: Path, serve: bool = True
) -> Iterator[Endpoints]:
    """The server at the given URLs when it is ready; otherwise (when `serve`) an embedded one."""
    if server_ready(http_url):
        yield Endpoints(grpc_url, http_url)
        return
    if not serve:
        raise SystemExit(f"no Triton server is ready at {http_url}; start one with `make serve`")
    print(f"no server ready at {http_url}: starting the embedded server on {repository}", flush=True)
    with embedded_server(repository, log_path) as endpoints:
        yield endpoints
