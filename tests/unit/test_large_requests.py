"""Large requests: a bounded number decode at once across processes (others refused for now), at low priority."""

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
from support.images import encode

from iqaguard.in_triton.large_requests import LOW_PRIORITY_NICE, LargeRequestGate, RequestRefused
from iqaguard.in_triton.preprocess import Preprocessor, RequestBudget


def test_slots_are_exclusive_and_freed(tmp_path: Path) -> None:
    gate = LargeRequestGate(str(tmp_path), max_large=2, large_pixels=100)
    with gate.slot(), gate.slot(), pytest.raises(RequestRefused, match="retry"), gate.slot():
        pass
    with gate.slot():  # both freed
        pass
    assert gate.is_large(101) and not gate.is_large(100)


def test_a_slot_held_by_another_process_counts_and_is_freed_when_it_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; handle = open(sys.argv[1], 'a'); fcntl.flock(handle, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(600)"), str(tmp_path / "large-0.lock")],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        gate = LargeRequestGate(str(tmp_path), max_large=1, large_pixels=1)
        with pytest.raises(RequestRefused), gate.slot():
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        with gate.slot():  # the kernel dropped the dead process's lock
            pass
    finally:
        holder.kill()


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is Linux's")
def test_large_work_runs_on_a_low_priority_thread(tmp_path: Path) -> None:
    gate = LargeRequestGate(str(tmp_path), max_large=1, large_pixels=1)
    caller = threading.get_native_id()

    def own_priority() -> tuple[int, int]:
        return threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    worker, nice = gate.run_large(own_priority)
    assert worker != caller
    assert nice == os.getpriority(os.PRIO_PROCESS, caller) + LOW_PRIORITY_NICE or nice == 19
    assert os.getpriority(os.PRIO_PROCESS, caller) != nice, "the caller's own priority is untouched"


def test_a_large_request_is_refused_alone_while_the_slots_are_taken(tmp_path: Path, photo: np.ndarray) -> None:
    small, large = encode(photo[:64, :64], "PNG"), encode(photo, "PNG")
    gate = LargeRequestGate(str(tmp_path), max_large=1, large_pixels=64 * 64 * 2)
    preprocessor = Preprocessor((32, 32), budget=RequestBudget(), large=gate)
    reference = Preprocessor((32, 32)).run([[large, large]])[0]
    with gate.slot():
        ordinary, refused, also_ordinary = preprocessor.run([[small], [large, large], [small, small]])
    assert isinstance(refused, RequestRefused) and "busy" in str(refused)
    assert not isinstance(ordinary, Exception) and not isinstance(also_ordinary, Exception)
    started = time.monotonic()
    (served,) = preprocessor.run([[large, large]])  # slot free again: decoded, as without the gate
    assert time.monotonic() - started < 60
    assert not isinstance(served, Exception) and not isinstance(reference, Exception)
    np.testing.assert_array_equal(served.pixels, reference.pixels)
    np.testing.assert_array_equal(served.iqa, reference.iqa)
