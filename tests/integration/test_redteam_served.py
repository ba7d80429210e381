"""`python -m iqaguard.redteam` against a real server: it attacks only what the set accepts, through the
served path, and writes its figures into the set's report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from iqaguard.contract import ENSEMBLE

pytestmark = pytest.mark.integration


def test_redteam_command_writes_its_section(triton_server, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "report.md").write_text("# Build report\n")
    command = [
        sys.executable, "-m", "iqaguard.redteam", "--profile", "fashion", "--set-name", "fixture",
        "--ensemble", ENSEMBLE, "--count", "3", "--eps", "8,16", "--budgets", "5,15", "--no-serve",
        "--whitebox-steps", "3", "--repository", str(triton_server.options.repository),
        "--grpc-url", triton_server.grpc_url, "--http-url", triton_server.http_url,
        "--metrics-url", triton_server.metrics_url.removeprefix("http://").removesuffix("/metrics"),
        "--reports", str(reports),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    figures = json.loads((reports / "redteam.json").read_text())
    assert 0 < figures["attacked"] <= 3 and figures["candidates"] <= 4000  # from the fashion build's evaluation split
    assert figures["clean_images_remembered"] is True  # --no-serve: the selection's clean images stay remembered
    assert figures["probe_memory"]["probe_memory"] == "true" and float(figures["probe_memory"]["probe_radius"]) > 0
    probe = figures["probe_memory_on_ordinary_traffic"]
    assert probe["clean_once"]["images"] == figures["candidates"] and probe["jpeg_resent_5x"]["images"] > 0
    assert 0 <= probe["jpeg_resent_5x"]["flagged"] <= probe["jpeg_resent_5x"]["images"]
    for eps in ("8/255", "16/255"):
        row = figures["black_box"][eps]
        assert 0 <= row["evasion"]["5"] <= row["evasion"]["15"] <= 1
        assert figures["attacked"] <= row["queries"] <= figures["attacked"] * 15
    white = figures["white_box"]
    assert white["version"] == 1 and white["steps"] == 3
    for eps in ("8/255", "16/255"):
        assert 0 <= white[eps]["evasion"] <= white[eps]["in_process_evasion"] <= 1  # served confirms, never adds
    report = (reports / "report.md").read_text()
    assert report.startswith("# Build report") and "## Adaptive attacks (red team)" in report and "White-box" in report
    refused = subprocess.run([*command[:-8], "--grpc-url", "10.0.0.1:8001", "--http-url", triton_server.http_url],
                             capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert refused.returncode != 0 and "127.0.0.1 only" in refused.stderr
