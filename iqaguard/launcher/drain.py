"""Graceful drain: wait until nothing is queued or executing, before Triton is told to stop.

Triton 2.51 on SIGTERM stops every model's scheduler at once, so an ensemble request in flight
fails at its next step ("Server is stopping"); measured: 0 of 8 three-second requests completed,
exit code 1. The supervisor therefore drains first: readiness turns false (Triton's own, through
iqaguard.launcher.readiness_gate, and the drain marker, which the deep probe reports), queued
requests (Triton's pending-request gauge) and executing ones (the stubs' busy markers,
iqaguard.in_triton.busy) run to the end, then SIGTERM finds Triton idle.
Stdlib-only, Python 3.10: the container entrypoint runs it.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.request
from collections.abc import Callable

from iqaguard.launcher.probe import DRAIN_MARKER

log = logging.getLogger(__name__)
PENDING_METRIC = "nv_inference_pending_request_count"


def pending_requests(metrics_url: str) -> int:
    """Requests queued in any model, from Triton's metrics (0 when they cannot be read)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith(PENDING_METRIC))


def executing(busy_dir: str) -> int:
    """Stubs inside execute() right now."""
    try:
        return len(os.listdir(busy_dir))
    except OSError:
        return 0


def wait_idle(metrics_url: str, busy_dir: str, timeout_s: float, quiet_s: float = 0.5) -> bool:
    """Wait until nothing is queued or executing for `quiet_s` in a row; False when `timeout_s` ran out."""
    deadline = time.monotonic() + timeout_s
    idle_since: float | None = None
    while time.monotonic() < deadline:
        if pending_requests(metrics_url) or executing(busy_dir):
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= quiet_s:
            return True
        time.sleep(0.05)
    return False


def drain(
    metrics_url: str, busy_dir: str, timeout_s: float, marker: str = DRAIN_MARKER,
    close_readiness: Callable[[], bool] | None = None,
) -> bool:
    """Mark the server draining (readiness false: the marker, and `close_readiness()`, which turns Triton's
    own readiness false), then wait until idle; True when it got idle in time."""
    with open(marker, "w") as handle:
        handle.write(str(os.getpid()))
    if close_readiness is not None and not close_readiness():
        log.warning("drain: Triton's /v2/health/ready could not be turned false; the deep probe reports draining")
    started = time.monotonic()
    idle = wait_idle(metrics_url, busy_dir, timeout_s)
    log.warning(
        "drain: %s after %.1f s", "idle" if idle else f"still busy, stopping anyway (limit {timeout_s:.0f} s)",
        time.monotonic() - started,
    )  # fmt: skip
    return idle
