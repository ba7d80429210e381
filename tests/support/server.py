"""Start the embedded Triton server for a test: the launcher's own helper, failing the test on a bad start."""

from __future__ import annotations

from pathlib import Path

import pytest

from iqaguard.launcher.embedded import start_embedded
from iqaguard.launcher.process import ServerStartError, TritonServer


def start_server(repository: Path, log_path: Path, **options: object) -> TritonServer:
    """Start a server on free 127.0.0.1 ports and wait for readiness; show its log if it fails."""
    try:
        return start_embedded(repository, log_path, ready_timeout_s=240, **options)
    except ServerStartError as error:
        pytest.fail(f"Triton server did not start: {error}")
