"""The image's entrypoint, run here on the embedded binary: admin APIs closed, dead stub → exit 1, SIGTERM drains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from test_admin_surfaces import _http
from test_fault_recovery import _stub_pid
from test_graceful_drain import slow_tensors

from iqaguard.contract import ENSEMBLE
from iqaguard.launcher import probe
from iqaguard.launcher.backends import TritonInstall, assemble_backend_directory, server_environment
from iqaguard.launcher.process import ServerOptions, TritonServer, free_port

pytestmark = pytest.mark.integration


def _entrypoint(repository: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], TritonServer, dict[str, str]]:
    """`python3 -m iqaguard.launcher.container tritonserver ...` as the image runs it, on free ports."""
    install = TritonInstall.locate()
    server = TritonServer(ServerOptions(repository, *(_free_ports())))
    flags = [a for a in server.options.command(install, assemble_backend_directory(install)) if "restricted" not in a]
    env = {
        **server_environment(install), "IQAGUARD_ADMIN_KEY": "operator-key", "IQAGUARD_HEALTH_INTERVAL": "1",
        "IQAGUARD_BUSY_DIR": str(tmp_path / "busy"), "IQAGUARD_DRAIN_MARKER": str(tmp_path / "draining"),
        "IQAGUARD_GATE_DIR": str(tmp_path / "gate"),
    }  # fmt: skip
    log = (tmp_path / "entrypoint.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "iqaguard.launcher.container", *flags], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 240
    while probe.deep_ready(server.http_url) is not None:
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "entrypoint.log").read_text()
        time.sleep(0.5)
    return process, server, env


def _free_ports() -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


def _server_pid(process: subprocess.Popen[bytes]) -> int:
    listing = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    return int(listing[0])


def test_entrypoint_closes_admin_apis_and_exits_when_a_stub_dies(fixture_repository: Path, tmp_path: Path) -> None:
    process, server, _ = _entrypoint(fixture_repository, tmp_path)
    try:
        assert _http(server, "GET", "/v2/logging") == 403
        assert _http(server, "GET", "/v2/logging", key="operator-key") == 200
        server_pid = _server_pid(process)
        os.kill(_stub_pid(server_pid, "teacher_0"), signal.SIGKILL)
        killed = time.monotonic()
        code = process.wait(timeout=60)
        print(f"container entrypoint: dead stub noticed, exit {code} after {time.monotonic() - killed:.1f} s")
        assert code == 1, "non-zero, so `restart: on-failure` and Kubernetes restart the container"
        deadline = time.monotonic() + 20  # killed stubs vanish once reaped; bounded wait on a busy host
        while subprocess.run(["pgrep", "-g", str(server_pid)], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "stubs left"
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()


def test_entrypoint_drains_on_sigterm(fixture_repository: Path, tmp_path: Path, photo: np.ndarray) -> None:
    process, server, env = _entrypoint(fixture_repository, tmp_path)
    tensors = slow_tensors(photo, ordinary=3)
    outcomes: list[object] = []

    def send(tensor: grpcclient.InferInput) -> None:
        try:
            grpcclient.InferenceServerClient(server.grpc_url).infer(ENSEMBLE, [tensor], client_timeout=120)
            outcomes.append("ok")
        except Exception as error:
            outcomes.append(error)

    threads = [threading.Thread(target=send, args=(tensor,)) for tensor in tensors]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert probe.main(["--url", server.http_url, "--drain-marker", env["IQAGUARD_DRAIN_MARKER"]]) == 1, "not ready"
    assert not probe.server_ready(server.http_url), "Triton's own readiness false while draining"
    assert any(thread.is_alive() for thread in threads), "requests should still be in flight here"
    for thread in threads:
        thread.join(timeout=120)
    assert process.wait(timeout=120) == 0
    assert outcomes == ["ok"] * 4, outcomes
    assert not (tmp_path / "gate").exists(), "the readiness gate's repository is removed"
