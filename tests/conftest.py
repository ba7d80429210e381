"""Shared fixtures: a fixture model repository and one real Triton server on 127.0.0.1 per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fixture_models import write_fixture_repository

from iqaguard.server.process import ServerOptions, TritonServer, free_port


def start_server(repository: Path, log_path: Path, **options: object) -> TritonServer:
    """Start a server on free 127.0.0.1 ports and wait for readiness; show its log if it fails."""
    server = TritonServer(
        ServerOptions(
            repository=repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
            **options,  # type: ignore[arg-type]
        ),
        log=log_path.open("wb"),
    )
    server.start()
    try:
        server.startup_seconds = server.wait_ready(timeout=240)  # type: ignore[attr-defined]
    except Exception:
        server.stop()
        tail = log_path.read_text(errors="replace")[-6000:]
        pytest.fail(f"Triton server did not start; log tail:\n{tail}")
    return server


@pytest.fixture(scope="session")
def fixture_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with the checked-in configs and untrained TEST FIXTURE members."""
    return write_fixture_repository(tmp_path_factory.mktemp("repo") / "model_repository")


@pytest.fixture(scope="session")
def triton_server(fixture_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """One embedded Triton server serving the fixture repository for the whole session."""
    server = start_server(fixture_repository, tmp_path_factory.mktemp("logs") / "triton.log")
    yield server
    server.stop()




@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo (skimage's chelsea), uint8 RGB."""
    from skimage import data

    return data.chelsea()
