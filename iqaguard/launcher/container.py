"""The Triton image's entrypoint: close the admin APIs, then run and supervise the server.

`python3 -m iqaguard.launcher.container tritonserver --model-repository=/models ...` (compose's
`command`, Kubernetes' `args`) runs tritonserver with the restricted-API flags added: the credential
is $IQAGUARD_ADMIN_KEY or the file $IQAGUARD_ADMIN_KEY_FILE names (a mounted Secret), else an
unguessable key nobody is told. It clears /dev/shm regions a crashed predecessor left, drains on
SIGTERM (Triton's readiness and the deep probe turn false, in-flight requests finish within
$IQAGUARD_DRAIN_SECONDS, then Triton stops: exit 0), and exits 1 when a backend stub dies or the
deep probe keeps failing ($IQAGUARD_HEALTH_INTERVAL, $IQAGUARD_HEALTH_FAILURES), so Docker or
Kubernetes restarts it.
Stdlib-only, Python 3.10: it runs on the NGC image's interpreter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading

from iqaguard.in_triton.busy import BUSY_DIR_ENV
from iqaguard.in_triton.large_requests import remove_slot_directories
from iqaguard.launcher.drain import drain
from iqaguard.launcher.probe import DEFAULT_MODEL, DRAIN_MARKER, DRAIN_MARKER_ENV, deep_ready
from iqaguard.launcher.readiness_gate import ReadinessGate
from iqaguard.launcher.security import (
    ADMIN_APIS,
    ADMIN_KEY_ENV,
    DEFAULT_SHM_PREFIX,
    configured_admin_key,
    remove_shm_regions,
    restricted_api_flags,
    unguessable_key,
)
from iqaguard.launcher.watchdog import Watchdog, supervise
from iqaguard.repository.live import CONFIG_NAME as LIVE_CONFIG_NAME

log = logging.getLogger("iqaguard.container")
NVIDIA_ENTRYPOINT = "/opt/nvidia/nvidia_entrypoint.sh"
GATE_DIR_ENV = "IQAGUARD_GATE_DIR"
DEFAULT_GATE_DIR = "/dev/shm/iqaguard-gate"  # writable in the image and in the pod (the /dev/shm emptyDir)


def admin_key(env: dict[str, str]) -> str:
    """The operator's credential ($IQAGUARD_ADMIN_KEY or its file), else an unguessable one nobody is told."""
    key = configured_admin_key(env)
    if key:
        log.warning("admin APIs (%s) need the operator's credential", ", ".join(ADMIN_APIS))
        return key
    log.warning("admin APIs (%s) closed: %s is not set", ", ".join(ADMIN_APIS), ADMIN_KEY_ENV)
    return unguessable_key()


def server_command(argv: list[str], key: str) -> list[str]:
    """The command to exec: tritonserver gets the restricted-API flags for `key` and reads each set's live
    configs (iqaguard.repository.live) unless told another config name; anything else runs as given."""
    if not argv or os.path.basename(argv[0]) != "tritonserver":
        return argv
    live = [] if _flag(argv, "model-config-name", "") else [f"--model-config-name={LIVE_CONFIG_NAME}"]
    return [argv[0], *restricted_api_flags(key), *live, *argv[1:]]


def _flag(argv: list[str], name: str, default: str) -> str:
    values = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"--{name}=")]
    return values[-1] if values else default


def _env_float(env: dict[str, str], name: str, default: float) -> float:
    return float(env.get(name) or default)


class Supervisor:
    """tritonserver as a child: drained on SIGTERM, restarted (by exiting 1) when a stub dies."""

    def __init__(self, command: list[str], env: dict[str, str], key: str) -> None:
        self.env = env
        self.key = key
        self.http_url = f"127.0.0.1:{_flag(command, 'http-port', '8000')}"
        self.metrics_url = f"http://127.0.0.1:{_flag(command, 'metrics-port', '8002')}/metrics"
        self.busy_dir = env.setdefault(BUSY_DIR_ENV, "/dev/shm/iqaguard-busy")
        shutil.rmtree(self.busy_dir, ignore_errors=True)  # a restarted container keeps /dev/shm and /tmp
        os.makedirs(self.busy_dir, mode=0o700)
        self.marker = env.get(DRAIN_MARKER_ENV) or DRAIN_MARKER
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.marker)
        # Turns Triton's own /v2/health/ready false when the drain starts (iqaguard.launcher.readiness_gate).
        self.gate = ReadinessGate(env.get(GATE_DIR_ENV) or DEFAULT_GATE_DIR)
        command = [*command, self.gate.flag()]
        if os.path.exists(NVIDIA_ENTRYPOINT):
            command = [NVIDIA_ENTRYPOINT, *command]  # its banner and environment checks; it execs the server
        self.child = subprocess.Popen(command, env=env, start_new_session=True)
        models = (env.get("IQAGUARD_PROBE_MODELS") or DEFAULT_MODEL).split(",")
        self.watchdog = Watchdog(self.http_url, self.child.pid, models, int(env.get("IQAGUARD_HEALTH_FAILURES") or 3))
        self.served = False
        self.stopping = False

    def on_signal(self, signum: int, _frame: object) -> None:
        """First signal: drain, then SIGTERM; a second one: SIGKILL."""
        if self.stopping:
            os.killpg(self.child.pid, signal.SIGKILL)
            return
        self.stopping = True
        threading.Thread(target=self._drain_then_stop, daemon=True).start()

    def _drain_then_stop(self) -> None:
        if self.child.poll() is None:
            seconds = _env_float(self.env, "IQAGUARD_DRAIN_SECONDS", 20.0)
            close = lambda: self.gate.close(self.http_url, self.key)  # noqa: E731
            drain(self.metrics_url, self.busy_dir, seconds, self.marker, close)
        self.child.send_signal(signal.SIGTERM)

    def check(self) -> str | None:
        """Watchdog faults, once the server has answered a deep probe (model loading is not a fault)."""
        if self.stopping:
            return None
        if not self.served:  # a stub may die before the first answer; probe failures count only after it
            self.served = deep_ready(self.http_url) is None
            return self.watchdog.lasting_dead()  # loading leaves short-lived zombies: only lasting ones count
        return self.watchdog.fault()

    def run(self) -> int:
        """Supervise until the server exits (its code) or fails (1, so the container is restarted)."""
        interval = _env_float(self.env, "IQAGUARD_HEALTH_INTERVAL", 5.0)
        code, fault = supervise(self.child, self.check, interval)
        if fault is not None:
            log.error("%s: stopping the server so the container restarts", fault)
            self.child.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.child.wait(timeout=15)
            code = 1
        with contextlib.suppress(ProcessLookupError):  # stubs the server left behind
            os.killpg(self.child.pid, signal.SIGKILL)
        self.child.wait()
        self.gate.remove()
        remove_slot_directories(self.child.pid)
        return code if code is not None else 1


def main(argv: list[str] | None = None) -> None:
    """Run the server under supervision; exit with its exit code (1 after a fault)."""
    logging.basicConfig(level=logging.INFO, format="iqaguard: %(message)s")
    env = dict(os.environ)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.exit("usage: python3 -m iqaguard.launcher.container tritonserver [flags...]")
    if os.path.basename(argv[0]) != "tritonserver":
        os.execvp(argv[0], argv)
    key = admin_key(env)
    command = server_command(argv, key)
    # A restarted container keeps its /dev/shm (a pod's emptyDir): regions of a crashed server go first.
    remove_shm_regions(DEFAULT_SHM_PREFIX)
    os.umask(0o077)  # the server's shared-memory regions: owner only
    supervisor = Supervisor(command, env, key)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    sys.exit(supervisor.run())


if __name__ == "__main__":
    main()
