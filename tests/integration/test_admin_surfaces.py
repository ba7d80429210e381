"""Admin APIs on a real server: refused without the credential, served with it (HTTP and gRPC).

Also the server's /dev/shm regions: owner-only while it runs, gone after it crashed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from support.server import start_server
from tritonclient.utils import InferenceServerException

from iqaguard.launcher.process import TritonServer
from iqaguard.launcher.security import ADMIN_HEADER, admin_headers

pytestmark = pytest.mark.integration

# (method, path, body): one call per restricted category, system and CUDA shared memory both.
ADMIN_CALLS = [
    ("GET", "/v2/logging", None),
    ("POST", "/v2/logging", {"log_verbose_level": 1}),
    ("GET", "/v2/trace/setting", None),
    ("GET", "/v2/systemsharedmemory/status", None),
    ("GET", "/v2/cudasharedmemory/status", None),
    ("POST", "/v2/repository/index", {}),
]


def _http(server: TritonServer, method: str, path: str, body: object = None, key: str | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=data, method=method)
    for name, value in (admin_headers(key) if key else {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_http_admin_api_needs_the_credential(
    triton_server: TritonServer, method: str, path: str, body: object
) -> None:
    assert _http(triton_server, method, path, body) == 403
    assert _http(triton_server, method, path, body, key="wrong-key") == 403
    assert _http(triton_server, method, path, body, key=triton_server.options.admin_key) == 200
    if path == "/v2/logging" and method == "POST":  # put the level back for the rest of the session
        _http(triton_server, "POST", path, {"log_verbose_level": 0}, key=triton_server.options.admin_key)


def test_inference_health_and_statistics_stay_open(triton_server: TritonServer) -> None:
    for path in ("/v2/health/ready", "/v2/models/robust_classifier/ready", "/v2/models/teacher/stats"):
        assert _http(triton_server, "GET", path) == 200, path


def test_registering_shared_memory_is_refused_without_the_credential(triton_server: TritonServer) -> None:
    """The call that crashed the server: register a stub's own region, then name it as an output."""
    region = next(Path("/dev/shm").glob(f"{triton_server.options.shm_prefix}*")).name
    body = {"key": region, "offset": 0, "byte_size": 64}
    assert _http(triton_server, "POST", "/v2/systemsharedmemory/region/stolen/register", body) == 403
    assert triton_server.is_ready()


def test_loading_from_a_path_or_uploading_code_needs_the_credential(triton_server: TritonServer) -> None:
    override = {"parameters": {"config": json.dumps({"backend": "python"}), "file:1/model.py": "aW1wb3J0IG9z"}}
    assert _http(triton_server, "POST", "/v2/repository/models/evil/load", override) == 403
    assert _http(triton_server, "POST", "/v2/repository/models/teacher/unload", {}) == 403
    assert triton_server.is_ready()


def test_grpc_admin_api_needs_the_credential(triton_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    calls = {
        "logging": lambda **kw: client.get_log_settings(**kw),
        "trace": lambda **kw: client.get_trace_settings(**kw),
        "system shared memory": lambda **kw: client.get_system_shared_memory_status(**kw),
        "cuda shared memory": lambda **kw: client.get_cuda_shared_memory_status(**kw),
        "repository": lambda **kw: client.get_model_repository_index(**kw),
    }
    for name, call in calls.items():
        with pytest.raises(InferenceServerException, match="restricted"):
            call()
        with pytest.raises(InferenceServerException, match="restricted"):
            call(headers=admin_headers("wrong-key", grpc=True))
        assert call(headers=admin_headers(triton_server.options.admin_key, grpc=True)) is not None, name
    assert client.is_server_ready()
    assert ADMIN_HEADER in admin_headers("x", grpc=True).popitem()[0]


def test_shared_memory_is_private_and_cleared_after_a_crash(fixture_repository: Path, tmp_path: Path) -> None:
    server = start_server(fixture_repository, tmp_path / "triton.log")
    try:
        regions = list(Path("/dev/shm").glob(f"{server.options.shm_prefix}*"))
        assert regions, "the Python backend's regions carry this server's prefix"
        assert all(path.stat().st_mode & 0o777 == 0o600 for path in regions)
        stubs = subprocess.run(["pgrep", "-g", str(server.pid)], capture_output=True, text=True).stdout.split()
        assert len(stubs) > 1
        os.kill(server.pid, signal.SIGKILL)  # a crash: Triton cannot clean up after itself
        server.process.wait(timeout=30)  # type: ignore[union-attr]
        assert list(Path("/dev/shm").glob(f"{server.options.shm_prefix}*")), "a crash leaves regions behind"
    finally:
        server.stop()
    assert not list(Path("/dev/shm").glob(f"{server.options.shm_prefix}*"))
    assert subprocess.run(["pgrep", "-g", str(server.pid)], capture_output=True).returncode == 1, "stubs left"
