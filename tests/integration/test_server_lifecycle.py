"""The launcher: refuses an unbuilt repository, starts to ready, stops cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from support import CHECKED_IN_REPOSITORY

from iqaguard.launcher.process import free_port
from iqaguard.repository.layout import copy_checked_in, missing_artifacts

pytestmark = pytest.mark.integration


def _launch(repository: Path, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    http_port = free_port()
    command = [
        sys.executable, "-m", "iqaguard.launcher.serve", "--model-repository", str(repository),
        "--http-port", str(http_port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port()), *extra,
    ]
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT), http_port


def _wait_for_line(log: Path, needle: str, process: subprocess.Popen[bytes], timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if needle in text:
            return text
        if process.poll() is not None:
            pytest.fail(f"launcher exited with {process.returncode}:\n{text[-4000:]}")
        time.sleep(0.5)
    process.kill()
    pytest.fail(f"{needle!r} not printed within {timeout} s")


def _configs_only(tmp_path: Path) -> Path:
    return copy_checked_in(CHECKED_IN_REPOSITORY, tmp_path / "model_repository")


def test_broken_ensemble_wiring_is_refused_before_starting(tmp_path: Path) -> None:
    repository = _configs_only(tmp_path)
    ensemble = repository / "robust_classifier" / "config.pbtxt"
    ensemble.write_text(ensemble.read_text().replace('value: "student_logits"', 'value: "student_logit"', 1))
    result = subprocess.run(
        [sys.executable, "-m", "iqaguard.launcher.serve", "--model-repository", str(repository)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0 and "broken configs" in result.stderr and "student_logits" in result.stderr


def test_unbuilt_repository_is_refused_with_instructions(tmp_path: Path) -> None:
    repository = _configs_only(tmp_path)
    assert "teacher/<version>/model.pt" in missing_artifacts(repository)
    result = subprocess.run(
        [sys.executable, "-m", "iqaguard.launcher.serve", "--model-repository", str(repository)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "teacher/<version>/model.pt" in result.stderr and "make build" in result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_launcher_serves_then_shuts_down_cleanly(
    fixture_repository: Path, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    log = tmp_path / "launcher.log"
    started = time.monotonic()
    process, http_port = _launch(fixture_repository, log, "--log-verbose", "1")
    text = _wait_for_line(log, "ready in", process)
    print(f"cold start to ready: {time.monotonic() - started:.1f} s")
    assert f"http://127.0.0.1:{http_port}" in text
    assert "weights=random" in text  # fixture members are visibly random
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    assert client.is_server_ready() and client.is_model_ready("robust_classifier")
    client.close()  # an open keep-alive connection would hold shutdown for the whole exit timeout

    process.send_signal(stop_signal)
    assert process.wait(timeout=60) == 0
    with pytest.raises(ConnectionError):
        httpclient.InferenceServerClient(f"127.0.0.1:{http_port}", connection_timeout=2).is_server_live()
