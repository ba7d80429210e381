"""Start the embedded Triton server for a test: the launcher's own helper, failing the test on a bad start."""

from __future__ import annotations

import io
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image

from iqaguard.contract import ENSEMBLE
from iqaguard.launcher.embedded import start_embedded
from iqaguard.launcher.process import ServerStartError, TritonServer


def start_server(repository: Path, log_path: Path, **options: object) -> TritonServer:
    """Start a server on free 127.0.0.1 ports, wait for readiness and warm it up; show its log if it fails."""
    try:
        server = start_embedded(repository, log_path, ready_timeout_s=240, **options)
    except ServerStartError as error:
        pytest.fail(f"Triton server did not start: {error}")
    warm_up(server, log_path)
    return server


def _ensemble_ready(server: TritonServer) -> bool:
    try:
        with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{ENSEMBLE}/ready", timeout=5) as reply:
            return reply.status == 200
    except OSError:
        return False


def warm_up(server: TritonServer, log_path: Path) -> None:
    """Send one request through the ensemble, alone, before any test sends concurrent load.

    The embedded Triton 2.51 once died with SIGSEGV inside tritonserver on its very first round of
    concurrent requests while this machine was heavily loaded (upstream reports crashes of this kind in
    the Python backend under concurrent first requests). One sequential request first keeps that rare
    crash from failing every test that shares the server; a server that dies here fails loudly.
    """
    if not _ensemble_ready(server):
        return  # e.g. explicit model control with nothing loaded yet
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buffer, format="PNG")
    image = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[buffer.getvalue()]], dtype=np.object_))
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        client.infer(ENSEMBLE, [image])
    except Exception as error:
        tail = log_path.read_text(errors="replace")[-3000:] if log_path.is_file() else ""
        server.stop()
        pytest.fail(f"the server failed its warm-up request: {error}\n{tail}")
    finally:
        client.close()
