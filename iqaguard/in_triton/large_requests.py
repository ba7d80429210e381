"""Large requests run behind ordinary ones: a bounded number at once, decoded at low CPU priority.

A request whose images' headers claim more than `large_pixels` in total is large (one 12-Mpx phone
photo is not). Two rules keep such requests from slowing everyone else:
- At most `max_large` large requests are decoded at once across every instance of the preprocessor
  on one server (one file lock per slot in a shared folder; the kernel drops the locks of a process
  that dies). One more is refused at once with a RequestRefused ("retry"), so large requests can never
  hold every instance while ordinary ones queue behind them. Measured before this rule: two clients
  sending the costliest legal request back to back made ordinary requests' p99 75× its baseline.
- Their decoding runs in a worker thread at a lower CPU priority (nice +10 on Linux). When the cores
  are contended the kernel gives ordinary work about ten times its share; idle cores still run it at
  full speed.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
LOW_PRIORITY_NICE = 10


class RequestRefused(Exception):
    """A legal request refused for now because the server is busy; the client may retry it (UNAVAILABLE)."""


class LargeRequestGate:
    """Slots for large requests, shared by the instances of one model on one server, and a low-priority decoder."""

    def __init__(self, slot_dir: str, max_large: int, large_pixels: int) -> None:
        if max_large < 1 or large_pixels < 1:
            raise ValueError(f"max_large and large_pixels must be at least 1, got {max_large}, {large_pixels}")
        self.slot_dir = slot_dir
        self.max_large = max_large
        self.large_pixels = large_pixels
        os.makedirs(slot_dir, mode=0o700, exist_ok=True)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="large-decode", initializer=_lower_priority)

    def is_large(self, claimed_pixels: int) -> bool:
        """Whether a request claiming this many pixels in total is large."""
        return claimed_pixels > self.large_pixels

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the slots for the block; RequestRefused at once when all are taken."""
        for index in range(self.max_large):
            handle = open(os.path.join(self.slot_dir, f"large-{index}.lock"), "a")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        raise RequestRefused(
            f"busy: {self.max_large} large request(s) (over {self.large_pixels} pixels in total) are being "
            "decoded; retry later, or send fewer or smaller images per request"
        )

    def run_large(self, work: Callable[[], T]) -> T:
        """Run `work` in a slot, on the low-priority thread; RequestRefused when no slot is free."""
        with self.slot():
            return self._worker.submit(work).result()


def slot_directory(model_name: str, server_pid: int | None = None) -> str:
    """Where one server's instances of `model_name` share their slots: a folder named after the server
    process (by default this stub's parent), so two servers on one host never share slots."""
    server_pid = os.getppid() if server_pid is None else server_pid
    return os.path.join(tempfile.gettempdir(), f"iqaguard-{os.getuid()}", f"large-{server_pid}-{model_name}")


def slot_directories(server_pid: int) -> list[str]:
    """The slot folders (one per model) of the server with this PID."""
    return glob.glob(glob.escape(slot_directory("", server_pid)) + "*")


def remove_slot_directories(server_pid: int) -> None:
    """Delete the slot folders of the server with this PID (after it exited)."""
    for directory in slot_directories(server_pid):
        shutil.rmtree(directory, ignore_errors=True)


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOW_PRIORITY_NICE)  # this thread only, on Linux
    except (OSError, AttributeError) as error:
        log.warning("large requests decode at normal priority: %s", error)
