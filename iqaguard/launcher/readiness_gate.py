"""Turn Triton's own /v2/health/ready false when a drain starts, while every model keeps answering.

Triton 2.51 has no API that marks a running server not ready. With strict readiness (its default)
it reports not ready while any model is in a failed-load state; models that were unloaded do not
count. So the supervisor gives Triton a second, private model repository that is empty while serving.
To drain, it writes a model without any version there and asks Triton to load it, with the admin
credential. The load fails at once, and from then on /v2/health/ready (HTTP and gRPC) answers not
ready. Inference, model readiness and the shutdown exit code are unaffected. Measured on 2.51: the
failing load takes about 1 ms. It needs explicit model control (the project's default); in other
modes close() reports that it could not close the gate.
Stdlib-only, Python 3.10: the container entrypoint runs it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request

from iqaguard.launcher.probe import server_ready
from iqaguard.launcher.security import ADMIN_HEADER

log = logging.getLogger(__name__)
GATE_MODEL = "iqaguard_draining"


class ReadinessGate:
    """A private model repository whose failed load makes Triton report not ready."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or tempfile.mkdtemp(prefix="iqaguard-gate-")
        self.open()

    def flag(self) -> str:
        """The tritonserver flag that adds the gate's repository."""
        return f"--model-repository={self.directory}"

    def open(self) -> None:
        """An empty gate repository (for the next server start): the server can turn ready."""
        shutil.rmtree(self.directory, ignore_errors=True)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def close(self, http_url: str, admin_key: str, timeout_s: float = 5.0) -> bool:
        """Make the server at `http_url` (host:port) report not ready; True when it now does."""
        model = os.path.join(self.directory, GATE_MODEL)
        os.makedirs(model, exist_ok=True)
        with open(os.path.join(model, "config.pbtxt"), "w") as handle:
            handle.write(f'name: "{GATE_MODEL}"\nbackend: "{GATE_MODEL}"\n')  # no version folder: cannot load
        request = urllib.request.Request(
            f"http://{http_url}/v2/repository/models/{GATE_MODEL}/load", data=b"{}", method="POST",
            headers={ADMIN_HEADER: admin_key, "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            urllib.request.urlopen(request, timeout=timeout_s).close()
        except urllib.error.HTTPError as error:
            error.close()  # 400 "load failed": the expected answer
        except OSError as error:
            log.warning("readiness gate: the load request failed: %s", error)
        ready = server_ready(http_url, timeout_s)
        if ready:
            log.warning("readiness gate: %s still reports ready (is model control explicit?)", http_url)
        return not ready

    def remove(self) -> None:
        """Delete the gate's repository (after the server exited)."""
        shutil.rmtree(self.directory, ignore_errors=True)

