"""Notice a server that can no longer serve although Triton's health endpoints say it can.

Triton's Python backend never restarts a dead stub, and /v2/health/* stay 200 after one dies
(measured on 2.51). Two signals, checked by whoever supervises the server (the embedded launcher,
the container entrypoint): a stub of the server's process group that died (a zombie: Triton does not
reap it), and the deep readiness probe (iqaguard.launcher.probe) failing several times in a row.
Stdlib-only, Python 3.10: the container entrypoint runs it on the NGC image's interpreter.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

from iqaguard.launcher.probe import deep_ready, model_ready


def dead_stubs(group: int, proc: str = "/proc") -> list[int]:
    """PIDs of processes in process group `group` that died and were not reaped (state Z)."""
    dead = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "stat")) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state == "Z" and int(entry) != group:
            dead.append(int(entry))
    return sorted(dead)


class Watchdog:
    """Says why a running server cannot serve, or None; probe failures count only when consecutive."""

    def __init__(self, http_url: str, group: int, models: Sequence[str], failures: int = 2) -> None:
        self.http_url = http_url
        self.group = group
        self.models = list(models)
        self.failures = failures
        self._failed_in_a_row = 0
        self._dead_before: set[int] = set()

    def lasting_dead(self) -> str | None:
        """Why the server is broken when one of its stubs died, counting only stubs the previous call found
        dead too, else None. While models load, Triton's Python backend runs short-lived helper processes
        that stay zombies until it reaps them (measured: 5 while the fixture repository loaded), so one
        sighting is no fault; a dead stub stays a zombie and is caught by the next call."""
        dead = set(dead_stubs(self.group))
        lasting, self._dead_before = sorted(dead & self._dead_before), dead
        return f"backend stub process(es) {lasting} died" if lasting else None

    def fault(self) -> str | None:
        """One check: a stub dead in two checks running (loading a model, e.g. in a rollout, leaves short-lived
        zombies), a failing deep probe after `failures` checks in a row. Models Triton reports not loaded
        (a set unloaded by an operator) are not probed: unloading is not a fault."""
        dead = self.lasting_dead()
        if dead:
            return dead
        loaded = [m for m in self.models if model_ready(self.http_url, m)]
        problems = [p for m in loaded if (p := deep_ready(self.http_url, m))]
        problems = [p for p in problems if "timed out" not in p]  # busy is not broken
        self._failed_in_a_row = self._failed_in_a_row + 1 if problems else 0
        if self._failed_in_a_row >= self.failures:
            return f"deep readiness failed {self._failed_in_a_row} times: {problems[0]}"
        return None


def supervise(
    process: subprocess.Popen[bytes], check: Callable[[], str | None], interval_s: float
) -> tuple[int | None, str | None]:
    """Wait for `process` to exit, calling `check` every `interval_s`; (exit code, None) or (None, fault)."""
    while True:
        try:
            return process.wait(timeout=interval_s), None
        except subprocess.TimeoutExpired:
            fault = check()
            if fault and process.poll() is None:
                return None, fault


def crash_reason(exit_code: int | None) -> str | None:
    """Why the server's exit was a crash (killed by a signal nobody asked for), else None."""
    if exit_code is None or exit_code >= 0:
        return None
    try:
        name = signal.Signals(-exit_code).name
    except ValueError:
        name = f"signal {-exit_code}"
    return f"tritonserver crashed ({name})"


class RestartBudget:
    """At most `restarts` restarts in any `window_s` seconds; beyond that a supervisor gives up."""

    def __init__(self, restarts: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.restarts = restarts
        self.window_s = window_s
        self.clock = clock
        self._recent: collections.deque[float] = collections.deque()

    def spend(self) -> bool:
        """Take one restart; False when the budget for the current window is used up."""
        now = self.clock()
        while self._recent and now - self._recent[0] > self.window_s:
            self._recent.popleft()
        if len(self._recent) >= self.restarts:
            return False
        self._recent.append(now)
        return True
