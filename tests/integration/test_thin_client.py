"""The thin client as a user gets it: `pip install ./client` into a fresh Python 3.13 venv, without torch."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support import ROOT
from support.fixture_models import FIXTURE_CLASSES
from support.images import encode

from iqaguard.contract import VERDICTS
from iqaguard.launcher.process import TritonServer

HEAVY = ("torch", "torchvision", "locust", "matplotlib", "skimage", "iqaguard")


def python313() -> str | None:
    """A Python 3.13 interpreter that runs: pyenv's, else python3.13 on PATH."""
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [*sorted(glob.glob(f"{root}/versions/3.13*/bin/python3.13")), shutil.which("python3.13") or ""]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "--version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.startswith("Python 3.13"):
            return candidate
    return None


@pytest.fixture(scope="module")
def thin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh Python 3.13 venv with nothing but `pip install ./client`."""
    interpreter = python313()
    if interpreter is None:
        pytest.skip("no Python 3.13 interpreter (pyenv or python3.13 on PATH) to install the client into")
    venv = tmp_path_factory.mktemp("thin") / "venv"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT / "client")],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return venv


@pytest.mark.slow
def test_the_client_installs_without_torch_or_the_server_side(thin_venv: Path) -> None:
    probe = "import importlib.util, json; print(json.dumps({m: bool(importlib.util.find_spec(m)) for m in %r}))"
    found = subprocess.run(  # run outside the checkout: `python -c` would find ./iqaguard on sys.path
        [str(thin_venv / "bin" / "python"), "-c", probe % (HEAVY,)],
        capture_output=True, text=True, check=True, cwd=thin_venv,
    )  # fmt: skip
    assert json.loads(found.stdout) == dict.fromkeys(HEAVY, False)
    assert (thin_venv / "bin" / "iqaguard-classify").is_file()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_installed_command_classifies_against_the_served_ensemble(
    thin_venv: Path, triton_server: TritonServer, photo: np.ndarray, tmp_path: Path, protocol: str
) -> None:
    image = tmp_path / "cat.jpg"
    image.write_bytes(encode(photo, "JPEG", quality=90))
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    result = subprocess.run(
        [str(thin_venv / "bin" / "iqaguard-classify"), "--protocol", protocol, "--url", url, "--json", str(image)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["ok"] is True and record["image"] == str(image) and record["verdict"] in VERDICTS
    assert record["top_k"][0]["label"] in FIXTURE_CLASSES and 0.0 <= record["suspicion"] <= 1.0
