"""SIGTERM drains: readiness false first, requests in flight complete, exit code 0, nothing left behind."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support.images import slow_requests
from test_fault_recovery import _grpc_port
from test_server_lifecycle import _launch, _wait_for_line
from tritonclient.utils import InferenceServerException

from iqaguard.contract import ENSEMBLE
from iqaguard.in_triton.large_requests import slot_directories, slot_directory
from iqaguard.launcher.probe import server_ready

pytestmark = pytest.mark.integration


def slow_tensors(photo: np.ndarray, ordinary: int) -> list[grpcclient.InferInput]:
    """IMAGE inputs of expensive but legal requests: one large (seconds of decoding), `ordinary` of 11 Mpx."""
    tensors = []
    for items in slow_requests(photo, ordinary):
        tensors.append(grpcclient.InferInput("IMAGE", [len(items), 1], "BYTES"))
        tensors[-1].set_data_from_numpy(np.array(items, dtype=np.object_).reshape(-1, 1))
    return tensors


def test_sigterm_lets_requests_in_flight_finish(fixture_repository: Path, tmp_path: Path, photo: np.ndarray) -> None:
    log = tmp_path / "launcher.log"
    process, http_port = _launch(fixture_repository, log, "--drain-timeout", "60")
    text = _wait_for_line(log, "ready in", process)
    server_pid = int(text.split("(pid ", 1)[1].split(")", 1)[0])
    url = f"127.0.0.1:{_grpc_port(text)}"
    command_line = Path(f"/proc/{server_pid}/cmdline").read_bytes().decode().split("\0")
    (prefix,) = [arg.split("shm-region-prefix-name=", 1)[1] for arg in command_line if "shm-region-prefix" in arg]
    tensors = slow_tensors(photo, ordinary=7)
    outcomes: list[str] = []

    def send(tensor: grpcclient.InferInput) -> None:
        client = grpcclient.InferenceServerClient(url)
        try:
            client.infer(ENSEMBLE, [tensor], client_timeout=120)
            outcomes.append("ok")
        except InferenceServerException as error:
            outcomes.append(f"{error.status()}: {error.message()}")

    threads = [threading.Thread(target=send, args=(tensor,)) for tensor in tensors]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    signalled = time.monotonic()
    assert Path(slot_directory("iqa_preprocess", server_pid)).is_dir(), "the instances' shared slots"
    process.send_signal(signal.SIGTERM)
    _wait_for_line(log, "draining then stopping", process)
    time.sleep(0.5)
    # Triton's own readiness (what Kubernetes, load balancers and `curl` ask), HTTP and gRPC alike.
    assert not server_ready(f"127.0.0.1:{http_port}"), "ready while draining"
    assert not grpcclient.InferenceServerClient(url).is_server_ready(), "gRPC ready while draining"
    assert grpcclient.InferenceServerClient(url).is_model_ready(ENSEMBLE), "the models keep serving"
    assert any(thread.is_alive() for thread in threads), "requests should still be in flight here"
    for thread in threads:
        thread.join(timeout=120)
    code = process.wait(timeout=120)
    print(f"drain: {outcomes.count('ok')}/8 completed, exit {code} {time.monotonic() - signalled:.1f} s after SIGTERM")
    assert outcomes == ["ok"] * 8, outcomes
    assert code == 0, log.read_text()[-3000:]
    assert "drained (idle)" in log.read_text()
    with pytest.raises(InferenceServerException) as refused:  # stopped: UNAVAILABLE, which clients retry
        grpcclient.InferenceServerClient(url).infer(ENSEMBLE, [tensors[1]], client_timeout=10)
    assert refused.value.status() == "StatusCode.UNAVAILABLE"
    assert subprocess.run(["pgrep", "-g", str(server_pid)], capture_output=True).returncode == 1, "stubs left"
    assert not list(Path("/dev/shm").glob(f"{prefix}*")), "shared-memory regions left"
    gate = [arg.split("=", 1)[1] for arg in command_line if "iqaguard-gate-" in arg]
    assert len(gate) == 1 and not Path(gate[0]).exists(), "the readiness gate's repository is removed"
    assert not slot_directories(server_pid), "the large-request slot folders are removed"
