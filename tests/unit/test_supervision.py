"""When the launcher calls an exit a crash, how many restarts it allows before handing over, and what the
watchdog counts as a fault."""

from __future__ import annotations

import http.server
import signal
import threading
from collections.abc import Iterator

import pytest

from iqaguard.launcher.watchdog import RestartBudget, crash_reason


def test_only_an_exit_by_signal_is_a_crash() -> None:
    assert crash_reason(-signal.SIGSEGV) == "tritonserver crashed (SIGSEGV)"
    assert crash_reason(-signal.SIGKILL) == "tritonserver crashed (SIGKILL)"
    assert crash_reason(-200) == "tritonserver crashed (signal 200)"
    assert crash_reason(0) is None and crash_reason(1) is None and crash_reason(None) is None


def test_budget_counts_restarts_in_a_sliding_window() -> None:
    now = [0.0]
    budget = RestartBudget(restarts=2, window_s=60, clock=lambda: now[0])
    assert budget.spend()
    now[0] = 30.0
    assert budget.spend()
    now[0] = 59.0
    assert not budget.spend(), "a third restart inside 60 s is over budget"
    now[0] = 60.5
    assert budget.spend(), "the first restart left the window"
    assert not budget.spend(), "the second (at 30 s) and third (at 60.5 s) fill it again"


def test_zero_budget_never_restarts() -> None:
    assert not RestartBudget(restarts=0, window_s=600).spend()


def test_only_a_lasting_zombie_counts_while_models_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from iqaguard.launcher import watchdog

    sightings = iter([[101], [102], [102, 103], [103]])
    monkeypatch.setattr(watchdog, "dead_stubs", lambda group: next(sightings))
    dog = watchdog.Watchdog("127.0.0.1:1", group=1, models=[])
    assert dog.lasting_dead() is None  # 101 once: a helper Triton reaps
    assert dog.lasting_dead() is None  # 101 gone, 102 new
    assert dog.lasting_dead() == "backend stub process(es) [102] died"
    assert dog.lasting_dead() == "backend stub process(es) [103] died"


class _FakeTriton(http.server.BaseHTTPRequestHandler):
    """`served` answers ready and infers; `broken` answers ready but fails inference; others are not loaded."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        model = self.path.split("/")[3]
        self.send_response(200 if model in ("served", "broken") else 400)
        self.end_headers()

    def do_POST(self) -> None:
        model = self.path.split("/")[3]
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"outputs": [{"name": "VERDICT", "data": ["accept"]}]}' if model == "served" else b'{"error": "x"}'
        self.send_response(200 if model == "served" else 500)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fake_triton() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeTriton)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_unloaded_set_is_not_a_fault_but_a_broken_one_is(fake_triton: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from iqaguard.launcher import watchdog

    monkeypatch.setattr(watchdog, "dead_stubs", lambda group: [])
    unloaded = watchdog.Watchdog(fake_triton, group=1, models=["served", "unloaded"], failures=2)
    assert [unloaded.fault() for _ in range(3)] == [None, None, None]
    broken = watchdog.Watchdog(fake_triton, group=1, models=["served", "broken"], failures=2)
    assert broken.fault() is None
    assert "deep readiness failed 2 times: broken: HTTP 500" in broken.fault()
