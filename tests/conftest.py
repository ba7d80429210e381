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

from iqaguard.launcher.process import TritonServer


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
