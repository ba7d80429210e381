"""`iqaguard-models` on a real server: a set switches versions as a whole, under load, and stays switched.

Two fixture builds of the default set (v1, v2: different weights) and a second set `other`. Every
answer given while a rollout and a rollback run must be exactly v1's or exactly v2's (PROBS and
SUSPICION together): a v2 teacher with a v1 detector would give v2's PROBS with another SUSPICION.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from support.fixture_models import write_fixture_repository, write_fixture_set
from support.images import encode
from support.server import start_server
from tritonclient.utils import InferenceServerException

from iqaguard.contract import ENSEMBLE
from iqaguard.launcher.security import ADMIN_KEY_ENV, admin_headers
from iqaguard.repository.live import LIVE_CONFIG, read_state
from iqaguard.repository.sets import ModelSet

CLI = Path(sys.executable).parent / "iqaguard-models"
KEY = "rollout-test-key"
OTHER = "robust_classifier_other"
TOLERANCE = 1e-4  # batch composition changes float sums in the last bits; v1 and v2 differ by far more


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = write_fixture_repository(tmp_path_factory.mktemp("rollout") / "model_repository", seed=0)
    write_fixture_set(repo, ModelSet("fixture", default=True), seed=1)  # v2, built but not live
    write_fixture_set(repo, ModelSet("other"), seed=2)
    return repo


def _infer(client: httpclient.InferenceServerClient, model: str, image: bytes) -> tuple[np.ndarray, float]:
    tensor = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[image]], dtype=object))
    result = client.infer(model, [tensor])
    return result.as_numpy("PROBS")[0], float(result.as_numpy("SUSPICION")[0, 0])


def _same(answer: tuple[np.ndarray, float], reference: tuple[np.ndarray, float]) -> bool:
    return bool(np.allclose(answer[0], reference[0], atol=TOLERANCE) and abs(answer[1] - reference[1]) < TOLERANCE)


def _models_cli(repository: Path, url: str, *args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ADMIN_KEY_ENV}
    if key is not None:
        env[ADMIN_KEY_ENV] = key
    command = [str(CLI), "--repository", str(repository), "--url", url, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


class Traffic:
    """Threads sending one image to an ensemble until stopped, keeping every answer and every error."""

    def __init__(self, url: str, model: str, image: bytes, threads: int = 3) -> None:
        self.answers: list[tuple[np.ndarray, float]] = []
        self.errors: list[str] = []
        self.refusals = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url, model, image), daemon=True) for _ in range(threads)
        ]

    def _run(self, url: str, model: str, image: bytes) -> None:
        client = httpclient.InferenceServerClient(url, network_timeout=120)
        count = 0
        while not self._stop.is_set():
            count += 1
            try:
                if count % 5 == 0:  # a bad input among the good ones: refused alone
                    try:
                        _infer(client, model, image[: len(image) // 3])
                        self.errors.append("a truncated image was answered")
                    except InferenceServerException as error:
                        assert "invalid image" in str(error), error
                        self.refusals += 1
                    continue
                self.answers.append(_infer(client, model, image))
            except Exception as error:
                self.errors.append(f"{type(error).__name__}: {error}")

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=150)


def test_rollout_and_rollback_switch_a_set_whole_under_load(repository: Path, tmp_path: Path, photo) -> None:
    image = encode(photo, "PNG")
    server = start_server(repository, tmp_path / "triton.log", admin_key=KEY)
    try:
        client = httpclient.InferenceServerClient(server.http_url)
        loaded = {(m["name"], m["version"]) for m in client.get_model_repository_index(headers=admin_headers(KEY))
                  if m.get("state") == "READY"}  # fmt: skip
        assert ("teacher", "1") in loaded and ("teacher", "2") not in loaded  # v2 built, not live
        v1 = _infer(client, ENSEMBLE, image)
        other_before = _infer(client, OTHER, image)

        with Traffic(server.http_url, ENSEMBLE, image) as switched, Traffic(server.http_url, OTHER, image, 1) as other:
            result = _models_cli(repository, server.http_url, "rollout", "fixture", "--settle", "1")
            assert result.returncode == 0, result.stderr
            assert "v1 -> v2" in result.stdout
            v2 = _infer(client, ENSEMBLE, image)
            assert not _same(v2, v1), "the two fixture builds must answer differently for this test to mean anything"
            result = _models_cli(repository, server.http_url, "rollback", "fixture", "--settle", "1")
            assert result.returncode == 0, result.stderr
            assert "v2 -> v1" in result.stdout
        assert switched.errors == [] and other.errors == []
        assert switched.refusals > 0
        mixed = [answer for answer in switched.answers if not (_same(answer, v1) or _same(answer, v2))]
        assert not mixed, f"{len(mixed)} of {len(switched.answers)} answers came from a mix of versions"
        assert any(_same(a, v2) for a in switched.answers) and any(_same(a, v1) for a in switched.answers)
        assert all(_same(answer, other_before) for answer in other.answers), "the other set changed"
        assert _same(_infer(client, ENSEMBLE, image), v1)
        assert _same(_infer(client, "robust_classifier_fixture", image), v1)

        listing = _models_cli(repository, server.http_url, "list")
        assert listing.returncode == 0, listing.stderr
        assert "live v1" in listing.stdout and "v2" in listing.stdout and "other" in listing.stdout
        refused = _models_cli(repository, server.http_url, "rollout", "fixture", key=None)
        assert refused.returncode == 1 and "no admin credential" in refused.stderr
        wrong = _models_cli(repository, server.http_url, "rollout", "fixture", key="wrong-key")
        assert wrong.returncode == 1 and "load" in wrong.stderr
        assert _same(_infer(client, ENSEMBLE, image), v1)  # a refused rollout changed nothing
        assert read_state(repository, ModelSet("fixture", default=True)).live == 1
    finally:
        server.stop()

    # A restarted server serves the live version (v1), not the newest built one (v2).
    assert (repository / "teacher" / LIVE_CONFIG).is_file()
    server = start_server(repository, tmp_path / "triton-restarted.log", admin_key=KEY)
    try:
        assert _same(_infer(httpclient.InferenceServerClient(server.http_url), ENSEMBLE, image), v1)
    finally:
        server.stop()


def test_rollout_of_a_version_that_is_not_built_changes_nothing(repository: Path, tmp_path: Path) -> None:
    result = _models_cli(repository, "127.0.0.1:9", "rollout", "fixture", "--version", "7")
    assert result.returncode == 1 and "version 7 is not built" in result.stderr
    result = _models_cli(repository, "127.0.0.1:9", "rollout", "nosuchset")
    assert result.returncode == 1 and "no model set 'nosuchset'" in result.stderr
