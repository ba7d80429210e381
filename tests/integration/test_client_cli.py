"""The `iqaguard-classify` console script, run as a subprocess against the fixture server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from iqaguard_client.cli import EXIT_STRICT, EXIT_UNAVAILABLE, EXIT_USAGE
from iqaguard_client.files import Missing, expand_inputs
from support.fixture_models import FIXTURE_CLASSES
from support.images import bad_images, encode

from iqaguard.contract import VERDICTS
from iqaguard.launcher.process import TritonServer, free_port

CLI = Path(sys.executable).parent / "iqaguard-classify"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, photo: np.ndarray) -> Path:
    """Two good photos, a truncated JPEG, and a text file that a folder scan must skip."""
    root = tmp_path_factory.mktemp("images")
    (root / "cat.jpg").write_bytes(encode(photo, "JPEG", quality=90))
    (root / "cat.png").write_bytes(encode(photo[::2, ::2], "PNG"))
    (root / "broken.jpg").write_bytes(bad_images(photo)["truncated jpeg"])
    (root / "notes.txt").write_text("not an image")
    (root / "sub").mkdir()
    (root / "sub" / "deep.webp").write_bytes(encode(photo, "WEBP"))
    return root


def test_inputs_expand_from_files_folders_and_globs(folder: Path) -> None:
    found = expand_inputs([str(folder / "notes.txt"), str(folder), f"{folder}/*.png", str(folder / "nope.jpg")])
    names = [item.name if isinstance(item, Path) else item for item in found]
    assert names[:4] == ["notes.txt", "broken.jpg", "cat.jpg", "cat.png"]  # explicit file kept; no duplicates
    assert isinstance(names[4], Missing) and names[4].reason == "no such file or folder"
    assert [path.name for path in expand_inputs([str(folder)], recursive=True)][-1] == "deep.webp"
    assert [path.name for path in expand_inputs([f"{folder}/**/*.webp"])] == ["deep.webp"]


def test_help_explains_the_verdicts_and_exit_codes() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for text in ("accept", "low_quality", "adversarial", "--strict", "--json", "--protocol", "make serve", "exit"):
        assert text in result.stdout


@pytest.mark.integration
def test_json_lines_for_a_folder_with_a_bad_file_over_grpc(triton_server: TritonServer, folder: Path) -> None:
    result = run_cli("--url", triton_server.grpc_url, "--json", "--top-k", "2", str(folder))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(record["image"]).name for record in records] == ["broken.jpg", "cat.jpg", "cat.png"]
    broken, *good = records
    assert broken["ok"] is False and "invalid image" in broken["error"]
    for record in good:
        assert record["ok"] is True and record["verdict"] in VERDICTS
        assert len(record["top_k"]) == 2 and record["top_k"][0]["label"] in FIXTURE_CLASSES
        assert 0.0 <= record["suspicion"] <= 1.0 and isinstance(record["quality"], float)
    assert "3 images" in result.stderr and "1 failed" in result.stderr


@pytest.mark.integration
def test_strict_fails_on_a_bad_file_over_http(triton_server: TritonServer, folder: Path) -> None:
    result = run_cli(
        "--protocol", "http", "--url", triton_server.http_url, "--strict", str(folder / "broken.jpg"),
        str(folder / "cat.jpg"),
    )  # fmt: skip
    assert result.returncode == EXIT_STRICT, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{folder / 'broken.jpg'}\tFAILED\t") and "invalid image" in lines[0]
    assert lines[1].split("\t")[1] in VERDICTS


def test_unreachable_server_and_no_inputs_have_their_own_exit_codes(folder: Path) -> None:
    down = run_cli("--url", f"127.0.0.1:{free_port()}", "--retries", "0", str(folder / "cat.jpg"))
    assert down.returncode == EXIT_UNAVAILABLE and "cannot reach Triton" in down.stderr
    nothing = run_cli(str(folder / "missing.jpg"))
    assert nothing.returncode == EXIT_USAGE and "no image to classify" in nothing.stderr
