"""A rollout and a rollback of two real (small) fashion builds under Locust load lose no good request.

16 Locust gRPC users send good and invalid images to the set being switched, 4 more to another set,
while `iqaguard-models` rolls fashion from v1 to v2 and back. Every good request must be answered
and every invalid one refused. A probe client beside them times single requests, so the p99 during
each switch can be set beside the steady p99 measured in the same run (printed, and written to
<tmp>/rollout_latency.json; a ratio on 2 shared cores is a measurement, not a pass/fail rule).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support.fixture_models import write_fixture_set
from support.images import encode
from support.server import start_server

from iqaguard.bench.loadtest import read_stats
from iqaguard.contract import ENSEMBLE
from iqaguard.launcher.security import ADMIN_KEY_ENV
from iqaguard.repository.live import read_state
from iqaguard.repository.sets import ModelSet

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLI = Path(sys.executable).parent / "iqaguard-models"
KEY = "rollout-load-key"
OTHER = "robust_classifier_other"
STEADY_S, AFTER_SWITCH_S = 12.0, 8.0


class Probe:
    """One client timing one request at a time: (start, seconds, ok) per request, and the PROBS it got."""

    def __init__(self, url: str, image: bytes) -> None:
        self.samples: list[tuple[float, float, bool]] = []
        self.probs: list[np.ndarray | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, image), daemon=True)

    def _run(self, url: str, image: bytes) -> None:
        client = grpcclient.InferenceServerClient(url)
        tensor = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[image]], dtype=np.object_))
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                probs = client.infer(ENSEMBLE, [tensor], client_timeout=60).as_numpy("PROBS")[0]
            except Exception:
                probs = None
            self.samples.append((started, time.monotonic() - started, probs is not None))
            self.probs.append(probs)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=90)

    def first_change(self, after: float) -> float:
        """When the first request that got other PROBS than the one before `after` started (a switch seen)."""
        before = next(p for (began, _, _), p in zip(self.samples[::-1], self.probs[::-1], strict=True)
                      if began < after and p is not None)  # fmt: skip
        for (began, _, _), probs in zip(self.samples, self.probs, strict=True):
            if began >= after and probs is not None and not np.allclose(probs, before, atol=1e-4):
                return began
        raise AssertionError("the probe never saw the new version's answers")

    def p99_ms(self, start: float, end: float) -> tuple[float, int]:
        window = [seconds for began, seconds, _ in self.samples if start <= began < end]
        return (float(np.percentile(window, 99)) * 1000 if window else float("nan")), len(window)


def _locust(server, out: Path, ensemble: str, users: int, duration_s: int) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "iqaguard.bench.loadtest", "--no-serve", "--users", str(users),
        "--duration", f"{duration_s}s", "--grpc-url", server.grpc_url, "--http-url", server.http_url,
        "--repository", str(server.options.repository), "--out", str(out), "--ensemble", ensemble, "--",
        "--invalid-share", "0.1", "TritonGrpcUser",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _models_cli(repository: Path, url: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
    env = {**os.environ, ADMIN_KEY_ENV: KEY}
    started = time.monotonic()
    result = subprocess.run([str(CLI), "--repository", str(repository), "--url", url, *args],
                            capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    return result, started, time.monotonic()


def _good_and_invalid(rows: list[dict[str, str]], ensemble: str) -> tuple[dict[str, int], dict[str, int]]:
    def counts(name: str) -> dict[str, int]:
        row = next((r for r in rows if r["Type"] == "gRPC" and r["Name"] == name), None)
        return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"])} if row else {}

    good = {"requests": 0, "failures": 0}
    for row in rows:
        if row["Type"] == "gRPC" and row["Name"].startswith(f"{ensemble} [") and not row["Name"].endswith("[invalid]"):
            good["requests"] += int(row["Request Count"])
            good["failures"] += int(row["Failure Count"])
    return good, counts(f"{ensemble} [invalid]")


def test_rollout_and_rollback_under_locust_load_fail_no_good_request(
    second_fashion_version, tmp_path: Path, photo
) -> None:
    repository = tmp_path / "model_repository"
    shutil.copytree(second_fashion_version.repository, repository)
    write_fixture_set(repository, ModelSet("other"), seed=2)
    fashion = ModelSet("fashion", default=True)
    assert read_state(repository, fashion).live == 1
    server = start_server(repository, tmp_path / "triton.log", admin_key=KEY)
    duration = int(STEADY_S + 2 * AFTER_SWITCH_S + 40)
    try:
        with Probe(server.grpc_url, encode(photo, "PNG")) as probe:
            switched = _locust(server, tmp_path / "switched", ENSEMBLE, 16, duration)
            other = _locust(server, tmp_path / "other", OTHER, 4, duration)
            time.sleep(STEADY_S)
            rollout, rollout_start, rollout_end = _models_cli(repository, server.http_url, "rollout", "fashion")
            time.sleep(AFTER_SWITCH_S)
            rollback, rollback_start, rollback_end = _models_cli(repository, server.http_url, "rollback", "fashion")
            time.sleep(AFTER_SWITCH_S)
            logs = {name: process.communicate(timeout=duration + 120)[0] for name, process in
                    (("switched", switched), ("other", other))}  # fmt: skip
        assert rollout.returncode == 0, rollout.stderr
        assert rollback.returncode == 0, rollback.stderr
        assert "v1 -> v2" in rollout.stdout and "v2 -> v1" in rollback.stdout
    finally:
        server.stop()

    results = {}
    for name, ensemble in (("switched", ENSEMBLE), ("other", OTHER)):
        rows = read_stats(tmp_path / name / "loadtest_stats.csv")
        good, invalid = _good_and_invalid(rows, ensemble)
        results[name] = {"good": good, "invalid": invalid}
        assert good["requests"] > 0 and good["failures"] == 0, (name, good, logs[name][-3000:])
        assert invalid.get("requests", 0) > 0 and invalid["failures"] == 0, (name, invalid, logs[name][-3000:])
    start = min(began for began, _, _ in probe.samples)
    steady, steady_n = probe.p99_ms(start + 2.0, rollout_start)
    during_rollout, n_rollout = probe.p99_ms(rollout_start, rollout_end)
    during_rollback, n_rollback = probe.p99_ms(rollback_start, rollback_end)
    switched_at = probe.first_change(rollout_start)
    first_second, n_first = probe.p99_ms(switched_at, switched_at + 1.0)
    assert all(ok for _, _, ok in probe.samples), "the probe's good requests must all be answered"
    figures = {
        "locust": results, "probe_requests": len(probe.samples),
        "rollout_steps": rollout.stdout.strip(), "rollback_steps": rollback.stdout.strip(),
        "steady_p99_ms": steady, "steady_n": steady_n,
        "rollout_s": rollout_end - rollout_start, "rollout_p99_ms": during_rollout, "rollout_n": n_rollout,
        "rollback_s": rollback_end - rollback_start, "rollback_p99_ms": during_rollback, "rollback_n": n_rollback,
        "first_v2_answer_after_rollout_start_s": switched_at - rollout_start,
        "first_second_on_v2_p99_ms": first_second, "first_second_n": n_first,
    }  # fmt: skip
    (tmp_path / "rollout_latency.json").write_text(json.dumps(figures, indent=2))
    print(f"\nrollout under load: {json.dumps(figures)}")
    print(f"p99 steady {steady:.0f} ms; during rollout {during_rollout:.0f} ms ({during_rollout / steady:.2f}x), "
          f"during rollback {during_rollback:.0f} ms ({during_rollback / steady:.2f}x); first second on v2 "
          f"{first_second:.0f} ms")  # fmt: skip
