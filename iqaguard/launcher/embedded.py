"""Start the embedded Triton server on free 127.0.0.1 ports (tests, load tests, benchmark), or find a running one."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from iqaguard.launcher.process import ServerOptions, ServerStartError, TritonServer, free_port, server_ready
from iqaguard.repository.layout import missing_artifacts
from iqaguard.repository.live import LiveStateError
from iqaguard.repository.live import refresh as refresh_live
from iqaguard.repository.writer import render_generated

log = logging.getLogger(__name__)
LOG_TAIL_CHARS = 6000


@dataclass(frozen=True)
class Endpoints:
    """Where a server listens (host:port, no scheme) and whether this process started it."""

    grpc_url: str
    http_url: str
    metrics_url: str | None = None
    started_here: bool = False


def bring_up_to_date(repository: Path) -> tuple[list[str], dict[str, int]]:
    """Before a server starts: every built set's generated models rendered from the checked-in ones, and
    every set's live configs written. Returns (models brought up to date, live version per set); raises
    LiveStateError when a recorded live version is no longer built."""
    return render_generated(repository), refresh_live(repository)


def start_embedded(
    repository: Path, log_path: Path, ready_timeout_s: float = 300.0, **options: object
) -> TritonServer:
    """Start a server for `repository` on free 127.0.0.1 ports and wait until it is ready.

    `options` are further ServerOptions fields. The server writes its log to `log_path`; when it
    exits or is not ready in time it is stopped and ServerStartError carries the log's tail.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    server_options = ServerOptions(
        repository=Path(repository).resolve(), http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
        **options,  # type: ignore[arg-type]
    )  # fmt: skip
    with log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
        server = TritonServer(server_options, log=log_file)
        server.start()
    try:
        server.wait_ready(ready_timeout_s)
    except ServerStartError as error:
        server.stop()
        tail = log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        raise ServerStartError(f"{error}; log tail ({log_path}):\n{tail}") from None
    return server


@contextlib.contextmanager
def embedded_server(repository: Path, log_path: Path, ready_timeout_s: float = 300.0) -> Iterator[Endpoints]:
    """A servable repository's embedded server for the duration of the block, stopped by PID afterwards."""
    missing = missing_artifacts(repository)
    if missing:
        raise SystemExit(
            f"{repository} is not servable; missing: {', '.join(missing)}. Build a model set first (`make build`)."
        )
    try:
        updated, _ = bring_up_to_date(repository)
    except LiveStateError as error:
        raise SystemExit(f"{repository}: {error}") from None
    if updated:
        log.info("brought up to date with the checked-in models: %s", ", ".join(updated))
    server = start_embedded(repository, log_path, ready_timeout_s)
    log.info("embedded server ready in %.1f s (pid %d, log %s)", server.startup_seconds, server.pid, log_path)
    try:
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
    log.info("no server ready at %s: starting the embedded server on %s", http_url, repository)
    with embedded_server(repository, log_path) as endpoints:
        yield endpoints
