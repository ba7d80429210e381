"""The Locust load test: the image pool, and short real `locust` runs against the fixture server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.images import bad_images, encode

from iqaguard.bench.image_pool import (
    KINDS,
)
from iqaguard.bench.loadtest import read_stats
from iqaguard.launcher.process import TritonServer

REQUEST_TYPES = ("gRPC", "HTTP")


def run_loadtest(server: TritonServer, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "iqaguard.bench.loadtest", "--no-serve", "--users", "4", "--duration", "5s",
        "--grpc-url", server.grpc_url, "--http-url", server.http_url, "--repository", str(server.options.repository),
        "--out", str(out), "--", *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.integration
@pytest.mark.slow
def test_headless_loadtest_counts_every_request_type_without_failures(
    triton_server: TritonServer, tmp_path: Path
) -> None:
    result = run_loadtest(triton_server, tmp_path, "--kind-weights", "1,1,1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {(row["Type"], row["Name"]): row for row in read_stats(tmp_path / "loadtest_stats.csv")}
    expected = {(kind_type, f"robust_classifier [{kind}]") for kind_type in REQUEST_TYPES for kind in KINDS}
    assert expected <= set(rows), f"missing request types: {expected - set(rows)}"
    for key in expected:
        assert int(rows[key]["Request Count"]) > 0, key
        assert int(rows[key]["Failure Count"]) == 0, key
        assert float(rows[key]["Average Content Size"]) > 0, key  # response_length was reported
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0
    assert (tmp_path / "loadtest.html").stat().st_size > 0
    # The pool says where its images came from: the fixture repository's manifests name no build samples.
    assert "synthetic pool" in result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_failed_requests_are_reported_to_locust(
    triton_server: TritonServer, tmp_path: Path, photo: np.ndarray
) -> None:
    pool = tmp_path / "pool"
    for kind in KINDS:
        (pool / kind).mkdir(parents=True)
        (pool / kind / "good.jpg").write_bytes(encode(photo, "JPEG"))
    (pool / "clean" / "broken.jpg").write_bytes(bad_images(photo)["truncated jpeg"])
    result = run_loadtest(triton_server, tmp_path / "out", "--pool-dir", str(pool), "--kind-weights", "1,0,0")
    assert result.returncode != 0  # Locust exits non-zero when a request failed
    rows = {(row["Type"], row["Name"]): row for row in read_stats(tmp_path / "out" / "loadtest_stats.csv")}
    assert int(rows[("", "Aggregated")]["Failure Count"]) > 0
    failures = (tmp_path / "out" / "loadtest_failures.csv").read_text()
    assert "broken.jpg" in failures and "invalid image" in failures
