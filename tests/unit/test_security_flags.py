"""Admin APIs closed by default: the flags the launcher and the container entrypoint give tritonserver."""

from __future__ import annotations

from pathlib import Path

import pytest

from iqaguard.launcher.container import admin_key, server_command
from iqaguard.launcher.process import ServerOptions
from iqaguard.launcher.security import (
    ADMIN_APIS,
    configured_admin_key,
    remove_shm_regions,
    restrict_shm_regions,
    restricted_api_flags,
)

EXPECTED_FLAGS = [
    "--http-restricted-api=shared-memory,model-repository,trace,logging:iqaguard-admin-key=k3y",
    "--grpc-restricted-protocol=shared-memory,model-repository,trace,logging:iqaguard-admin-key=k3y",
]


def test_every_admin_category_is_restricted_and_inference_is_not() -> None:
    assert restricted_api_flags("k3y") == EXPECTED_FLAGS
    assert {"shared-memory", "model-repository", "trace", "logging"} == set(ADMIN_APIS)
    assert not {"inference", "health", "metadata", "statistics"} & set(ADMIN_APIS)


@pytest.mark.parametrize("key", ["", "a:b", "a,b", "a=b", "a b"])
def test_keys_that_would_break_the_flag_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="admin key"):
        restricted_api_flags(key)


def test_launcher_command_is_closed_without_a_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from iqaguard.launcher import process

    monkeypatch.setattr(process, "has_gpu", lambda: True)
    install = type("Install", (), {"binary": Path("/bin/tritonserver")})()
    first, second = ServerOptions(tmp_path), ServerOptions(tmp_path)
    assert first.admin_key != second.admin_key and len(first.admin_key) >= 32, "each server: its own random key"
    assert first.admin_key not in repr(first)
    command = first.command(install, tmp_path)  # type: ignore[arg-type]
    assert restricted_api_flags(first.admin_key) == [a for a in command if "restricted" in a]
    assert f"--backend-config=python,shm-region-prefix-name={first.shm_prefix}" in command
    assert first.shm_prefix != second.shm_prefix


def test_container_entrypoint_adds_the_flags_with_the_operators_key(tmp_path: Path) -> None:
    key = admin_key({"IQAGUARD_ADMIN_KEY": "k3y"})
    command = server_command(["tritonserver", "--model-repository=/models"], key)
    live = "--model-config-name=live"  # each set's live versions (iqaguard.repository.live)
    assert command == ["tritonserver", *EXPECTED_FLAGS, live, "--model-repository=/models"]
    secret = tmp_path / "key"
    secret.write_text("k3y\n")
    from_file = server_command(["tritonserver"], admin_key({"IQAGUARD_ADMIN_KEY_FILE": str(secret)}))
    assert from_file == ["tritonserver", *EXPECTED_FLAGS, live]
    assert server_command(["tritonserver", "--model-config-name=x"], "k")[-1:] == [
        "--model-config-name=x"
    ], "an operator's own config name wins"
    closed = admin_key({"IQAGUARD_ADMIN_KEY": ""})
    assert len(closed) >= 32 and closed != admin_key({}), "unguessable, and new each time"
    assert server_command(["bash", "-c", "true"], "k") == ["bash", "-c", "true"], "other commands run as given"


def test_configured_key_prefers_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-file")
    assert configured_admin_key({"IQAGUARD_ADMIN_KEY": "env", "IQAGUARD_ADMIN_KEY_FILE": str(secret)}) == "env"
    assert configured_admin_key({"IQAGUARD_ADMIN_KEY_FILE": str(secret)}) == "from-file"
    assert configured_admin_key({}) is None


def test_shared_memory_regions_are_tightened_and_removed_by_prefix(tmp_path: Path) -> None:
    ours = [tmp_path / "iqaguard_ab12_one", tmp_path / "iqaguard_ab12_two"]
    other = tmp_path / "triton_python_backend_shm_region_x"
    for path in [*ours, other]:
        path.write_bytes(b"x")
        path.chmod(0o644)
    assert restrict_shm_regions("iqaguard_ab12_", str(tmp_path)) == 2
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in ours)
    assert sorted(remove_shm_regions("iqaguard_ab12_", str(tmp_path))) == sorted(map(str, ours))
    assert other.exists() and other.stat().st_mode & 0o777 == 0o644, "another server's regions are left alone"
