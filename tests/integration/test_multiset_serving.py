"""Two model sets on one real server started by `iqaguard-serve` (what `make serve` runs).

The repository holds the fixture default set (32x32, 10 classes: robust_classifier and
robust_classifier_fixture) and a second set `small` (48x48, 4 classes: robust_classifier_small),
both TEST FIXTURE members written by the build's own writer. Every ensemble keeps the contract over
gRPC and HTTP, and each answers with its own set's input size, labels and teacher.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from support import CHECKED_IN_REPOSITORY
from support.fixture_models import (
    FIXTURE_CLASSES,
    FIXTURE_SIZE,
    fixture_modules,
    write_fixture_repository,
    write_fixture_set,
)
from support.images import encode

from iqaguard.contract import ENSEMBLE_OUTPUTS, ENSEMBLE_TENSORS, VERDICTS
from iqaguard.imaging import bytes_to_pixels
from iqaguard.iqa import brisque
from iqaguard.launcher.process import free_port
from iqaguard.repository.sets import target_set

pytestmark = pytest.mark.integration

SMALL_CLASSES = ["small_a", "small_b", "small_c", "small_d"]


@dataclass(frozen=True)
class ServedSet:
    """What one ensemble should answer with: its set's input size, labels and fixture seed."""

    size: tuple[int, int]
    labels: list[str]
    seed: int


SETS = {
    "robust_classifier": ServedSet(FIXTURE_SIZE, FIXTURE_CLASSES, 0),
    "robust_classifier_fixture": ServedSet(FIXTURE_SIZE, FIXTURE_CLASSES, 0),
    "robust_classifier_small": ServedSet((48, 48), SMALL_CLASSES, 1),
}


@dataclass(frozen=True)
class Launched:
    repository: Path
    grpc_url: str
    http_url: str
    log: Path


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    root = tmp_path_factory.mktemp("multiset")
    repository = write_fixture_repository(root / "model_repository")
    write_fixture_set(repository, target_set(repository, "small"), (48, 48), SMALL_CLASSES, seed=1)
    shutil.copy2(CHECKED_IN_REPOSITORY / ".gitignore", repository)  # the checkout's top-level file, as served
    http_port, grpc_port, log = free_port(), free_port(), root / "launcher.log"
    command = [
        sys.executable, "-m", "iqaguard.launcher.serve", "--model-repository", str(repository),
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(free_port()),
        "--drain-timeout", "2",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while "ready in" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"iqaguard-serve did not become ready:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        yield Launched(repository, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}", log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def image(photo: np.ndarray) -> bytes:
    return encode(photo, "PNG")


def _client(protocol: str, launched: Launched) -> tuple[ModuleType, Any]:
    if protocol == "grpc":
        return grpcclient, grpcclient.InferenceServerClient(launched.grpc_url)
    return httpclient, httpclient.InferenceServerClient(launched.http_url)


def test_launcher_names_every_set(launched: Launched) -> None:
    text = launched.log.read_text(errors="replace")
    assert "set fixture (default: robust_classifier, robust_classifier_fixture)" in text
    assert "set small (robust_classifier_small)" in text and "teacher_small v1" in text


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("ensemble", sorted(SETS))
def test_every_set_keeps_the_contract(launched: Launched, image: bytes, protocol: str, ensemble: str) -> None:
    module, client = _client(protocol, launched)
    expected = SETS[ensemble]
    try:
        metadata = client.get_model_metadata(ensemble)
        declared = metadata["inputs"] + metadata["outputs"] if protocol == "http" else [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
            for t in (*metadata.inputs, *metadata.outputs)
        ]  # fmt: skip
        assert sorted((t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in declared) == sorted(
            (spec.name, spec.datatype, [-1, *spec.dims]) for spec in ENSEMBLE_TENSORS
        )
        tensor = module.InferInput("IMAGE", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[image]], dtype=np.object_))
        outputs = [module.InferRequestedOutput(name) for name in ENSEMBLE_OUTPUTS]
        result = client.infer(ensemble, [tensor], outputs=outputs)
        top = client.infer(ensemble, [tensor], outputs=[module.InferRequestedOutput("PROBS", class_count=2)])
    finally:
        client.close()

    probs, quality = result.as_numpy("PROBS"), result.as_numpy("QUALITY")
    suspicion, verdict = result.as_numpy("SUSPICION"), result.as_numpy("VERDICT")
    assert probs.dtype == np.float32 and probs.shape == (1, len(expected.labels))
    assert quality.dtype == np.float32 and quality.shape == (1, 1)
    assert suspicion.dtype == np.float32 and suspicion.shape == (1, 1) and 0.0 <= float(suspicion[0, 0]) <= 1.0
    assert verdict.dtype == np.object_ and verdict.shape == (1, 1) and verdict[0, 0].decode() in VERDICTS
    # The set's own input size, teacher and labels: not the other set's.
    pixels = bytes_to_pixels(image, expected.size)[None]
    assert float(quality[0, 0]) == pytest.approx(float(brisque(pixels)[0, -1]), abs=1e-3)
    with torch.no_grad():
        _, in_process = fixture_modules(expected.seed, len(expected.labels))["teacher"](torch.from_numpy(pixels))
    np.testing.assert_allclose(probs, in_process.numpy(), atol=1e-4)  # float rounding across batch kernels
    labels = [entry.decode().split(":")[2] for entry in top.as_numpy("PROBS").reshape(-1)]
    assert labels == [expected.labels[i] for i in in_process[0].argsort(descending=True)[:2].tolist()]


def test_each_set_ensemble_calls_its_own_members(launched: Launched) -> None:
    client = httpclient.InferenceServerClient(launched.http_url)
    try:
        steps = {
            name: [step["model_name"] for step in client.get_model_config(name)["ensemble_scheduling"]["step"]]
            for name in SETS
        }
    finally:
        client.close()
    assert steps["robust_classifier"] == steps["robust_classifier_fixture"]
    assert steps["robust_classifier"] == ["iqa_preprocess", "teacher", "student", "detector", "guard_monitor"]
    assert steps["robust_classifier_small"] == [f"{name}_small" for name in steps["robust_classifier"]]


def _run(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", *arguments], capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_cli_takes_the_ensemble_name(launched: Launched, image: bytes, tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(image)
    by_option = _run("iqaguard_client.cli", "--ensemble", "robust_classifier_small", "--protocol", "http",
                     "--url", launched.http_url, "--json", "--top-k", "4", str(path))  # fmt: skip
    by_env = _run("iqaguard_client.cli", "--url", launched.grpc_url, "--json", "--top-k", "4", str(path),
                  env={"IQAGUARD_ENSEMBLE": "robust_classifier_small"})  # fmt: skip
    default = _run("iqaguard_client.cli", "--url", launched.grpc_url, "--json", "--top-k", "4", str(path))
    for result, labels in ((by_option, SMALL_CLASSES), (by_env, SMALL_CLASSES), (default, FIXTURE_CLASSES)):
        record = json.loads(result.stdout.splitlines()[-1])
        assert {item["label"] for item in record["top_k"]} <= set(labels), record


def test_benchmark_takes_the_ensemble_name(launched: Launched, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    _run("iqaguard.bench.benchmark", "--repository", str(launched.repository), "--ensemble", "robust_classifier_small",
         "--url", launched.grpc_url, "--http-url", launched.http_url, "--concurrency", "1", "--requests", "2",
         "--warmup", "1", "--json", str(out))  # fmt: skip
    report = json.loads(out.read_text())
    assert report["conditions"]["ensemble"] == "robust_classifier_small"
    assert report["conditions"]["input_size"] == [48, 48]
    assert set(report["conditions"]["members"]) == {"teacher_small", "student_small", "detector_small"}
    assert [row["target"] for row in report["results"]] == ["ensemble", "teacher", "inprocess"]
    assert all(row["requests"] == 2 and row["errors"] == 0 for row in report["results"])


def test_locust_takes_the_ensemble_name(launched: Launched, tmp_path: Path) -> None:
    from iqaguard.bench.loadtest import read_stats

    _run("iqaguard.bench.loadtest", "--no-serve", "--users", "2", "--duration", "3s", "--grpc-url", launched.grpc_url,
         "--http-url", launched.http_url, "--repository", str(launched.repository), "--ensemble",
         "robust_classifier_small", "--out", str(tmp_path), "--", "--kind-weights", "1,0,0")  # fmt: skip
    rows = {(row["Type"], row["Name"]): row for row in read_stats(tmp_path / "loadtest_stats.csv")}
    for request_type in ("gRPC", "HTTP"):
        row = rows[(request_type, "robust_classifier_small [clean]")]
        assert int(row["Request Count"]) > 0 and int(row["Failure Count"]) == 0
