"""Shared fixtures: a fixture model repository and one real Triton server on 127.0.0.1 per session.

Tests are grouped by what they exercise: unit/ (no server), integration/ (a real server or the
installed commands), deploy/ (deployment files and model configs). Helpers live in support/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.fixture_models import write_fixture_repository
from support.server import start_server
from support.small_build import second_version, small_build

from iqaguard.launcher.embedded import LOG_TAIL_CHARS
from iqaguard.launcher.process import TritonServer


@pytest.fixture(scope="session")
def fixture_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with the checked-in configs and untrained TEST FIXTURE members."""
    return write_fixture_repository(tmp_path_factory.mktemp("repo") / "model_repository")


class SessionServer:
    """The session's embedded server; started again (in a new log) if a test left it dead."""

    def __init__(self, repository: Path, logs: Path) -> None:
        self.repository = repository
        self.logs = logs
        self.starts = 0
        self.server: TritonServer | None = None

    @property
    def log_path(self) -> Path:
        return self.logs / f"triton-{self.starts}.log"

    def running(self) -> TritonServer:
        if self.server is None or self.server.process is None or self.server.process.poll() is not None:
            self.starts += 1
            self.server = start_server(self.repository, self.log_path)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="session")
def session_server(fixture_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionServer]:
    holder = SessionServer(fixture_repository, tmp_path_factory.mktemp("logs"))
    yield holder
    holder.stop()


@pytest.fixture
def triton_server(session_server: SessionServer) -> Iterator[TritonServer]:
    """One embedded Triton server serving the fixture repository, shared by the session.

    A test during which the server died fails at teardown with the server's exit code and log tail,
    and the next test gets a fresh server: one crash is one failure, attributed where it happened.
    """
    server = session_server.running()
    yield server
    code = server.process.poll() if server.process is not None else None
    if code is not None:
        tail = session_server.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        server.cleanup()
        pytest.fail(f"the session's Triton server died during this test (exit code {code}); log tail:\n{tail}")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo (skimage's chelsea), uint8 RGB."""
    from skimage import data

    return data.chelsea()


@pytest.fixture(scope="session")
def small_fashion_build(tmp_path_factory: pytest.TempPathFactory):
    """A small real build of the fashion set as version 1 (tests/support/small_build.py)."""
    return small_build(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="session")
def second_fashion_version(small_fashion_build, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the small build with a second, not yet live, fashion build as version 2."""
    return second_version(small_fashion_build.repository, tmp_path_factory.mktemp("second-build"))
