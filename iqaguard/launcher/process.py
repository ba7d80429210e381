"""Start, wait for and stop one embedded Triton server process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from iqaguard.in_triton.busy import BUSY_DIR_ENV
from iqaguard.in_triton.large_requests import remove_slot_directories
from iqaguard.launcher.backends import TritonInstall, assemble_backend_directory, server_environment
from iqaguard.launcher.probe import server_ready
from iqaguard.launcher.readiness_gate import ReadinessGate
from iqaguard.launcher.security import (
    remove_shm_regions,
    restrict_shm_regions,
    restricted_api_flags,
    unguessable_key,
)
from iqaguard.loopback import LOOPBACK
from iqaguard.repository.live import CONFIG_NAME as LIVE_CONFIG_NAME

log = logging.getLogger(__name__)

# On hosts without CUDA these avoid GPU allocations and metrics; harmless where a GPU exists.
_CPU_FLAGS = ("--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0")


class ServerStartError(RuntimeError):
    """The server exited or did not become ready in time."""


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def has_gpu() -> bool:
    """Whether an NVIDIA GPU is visible (the device nodes exist)."""
    return Path("/dev/nvidiactl").exists()


@dataclass
class ServerOptions:
    """How to start the server; ports default to Triton's 8000/8001/8002."""

    repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    # Explicit control with every model loaded at start: only the operator (admin key) loads or unloads.
    model_control_mode: str = "explicit"
    load_models: list[str] = field(default_factory=lambda: ["*"])
    log_verbose: int = 0
    extra_args: list[str] = field(default_factory=list)
    # The admin APIs' credential (iqaguard.launcher.security); a random one closes them to everyone.
    admin_key: str = field(default_factory=unguessable_key, repr=False)
    # This server's Python-backend regions in /dev/shm: created 0600 and removed when it exits.
    shm_prefix: str = field(default_factory=lambda: f"iqaguard_{secrets.token_hex(6)}_")

    def command(self, install: TritonInstall, backend_dir: Path) -> list[str]:
        """The tritonserver command line; every listener bound to 127.0.0.1."""
        args = [
            str(install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            f"--http-address={LOOPBACK}",
            f"--http-port={self.http_port}",
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={self.metrics_port}",
            "--metrics-config=summary_latencies=true",  # p50..p99 per model, for the latency alert
            f"--model-control-mode={self.model_control_mode}",
            f"--model-config-name={LIVE_CONFIG_NAME}",  # each set's live versions (iqaguard.repository.live)
            f"--log-verbose={self.log_verbose}",
            "--exit-timeout-secs=10",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *restricted_api_flags(self.admin_key),
        ]
        args += [f"--load-model={name}" for name in self.load_models]
        if not has_gpu():
            args += list(_CPU_FLAGS)
        return args + list(self.extra_args)


class TritonServer:
    """One tritonserver child process, stopped by PID."""

    def __init__(self, options: ServerOptions, log: IO[bytes] | None = None) -> None:
        self.options = options
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None  # set by wait_ready
        # The stubs' busy markers (iqaguard.in_triton.busy), read by a drain; private to this server.
        self.busy_dir = tempfile.mkdtemp(prefix="iqaguard-busy-")
        self.gate = ReadinessGate()  # turns /v2/health/ready false when a drain starts

    @property
    def pid(self) -> int:
        """PID of the running server."""
        if self.process is None:
            raise RuntimeError("server not started")
        return self.process.pid

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.options.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.options.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.options.metrics_port}/metrics"

    def start(self) -> None:
        """Launch tritonserver (does not wait for readiness)."""
        install = TritonInstall.locate()
        os.makedirs(self.busy_dir, mode=0o700, exist_ok=True)
        self.gate.open()
        backend_dir = assemble_backend_directory(install)
        self.process = subprocess.Popen(
            [*self.options.command(install, backend_dir), self.gate.flag()],
            env={**server_environment(install), BUSY_DIR_ENV: self.busy_dir},
            stdout=self.log,
            stderr=subprocess.STDOUT if self.log is not None else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: signals from a terminal go to the launcher
            umask=0o077,  # shared-memory regions and files it creates: owner only
        )

    def is_ready(self) -> bool:
        """Whether this server's /v2/health/ready answers 200."""
        return server_ready(self.http_url)

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Block until ready; return seconds waited. Raises ServerStartError if it exits or times out."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ServerStartError(f"tritonserver exited with code {code} before becoming ready")
            if self.is_ready():
                self.startup_seconds = time.monotonic() - started
                self.restrict_shared_memory()
                return self.startup_seconds
            time.sleep(0.25)
        raise ServerStartError(f"tritonserver not ready after {timeout:.0f} s")

    def close_readiness(self) -> bool:
        """Make /v2/health/ready answer not ready while every model keeps serving (a drain's first step)."""
        return self.gate.close(self.http_url, self.options.admin_key)

    def terminate(self) -> None:
        """Ask the server to shut down (SIGTERM by PID) without waiting."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the server's whole process group (it and its backend stubs)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the server, escalate to SIGKILL of its group after `timeout`; return its exit code."""
        if self.process is None:
            return None
        self.terminate()
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.wait(timeout=10)
        self.cleanup()
        return code

    def _wait_group_gone(self, timeout: float) -> None:
        if self.process is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def restrict_shared_memory(self) -> int:
        """Make this server's /dev/shm regions owner-only (the Python backend creates them 0644)."""
        return restrict_shm_regions(self.options.shm_prefix)

    def cleanup(self) -> None:
        """After the server exited: SIGKILL stubs it left behind, remove its /dev/shm regions."""
        self.kill()  # a crashed server's stubs stay in its process group
        self._wait_group_gone(timeout=5.0)
        shutil.rmtree(self.busy_dir, ignore_errors=True)  # markers of stubs killed inside execute()
        self.gate.remove()
        if self.process is not None:
            remove_slot_directories(self.process.pid)
        removed = remove_shm_regions(self.options.shm_prefix)
        if removed:
            log.info("removed %d shared-memory regions the server left in /dev/shm", len(removed))

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
