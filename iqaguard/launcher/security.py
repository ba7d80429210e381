"""Triton's administrative APIs, closed to clients without the operator's credential.

Triton 2.51 restricts API categories to requests carrying a header (`--http-restricted-api`,
`--grpc-restricted-protocol`). Everything here is stdlib-only and Python 3.10-compatible: the
container entrypoint (iqaguard.launcher.container) runs it on the NGC image's Python.
"""

from __future__ import annotations

import glob
import os
import secrets
from collections.abc import Mapping

# System and CUDA shared memory, model load/unload/index, trace and log settings. Inference,
# health, metadata, model config and statistics stay open (clients and dashboards need them).
ADMIN_APIS = ("shared-memory", "model-repository", "trace", "logging")
ADMIN_HEADER = "iqaguard-admin-key"
# Triton's gRPC server looks for the key under this prefix in the call's metadata.
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
ADMIN_KEY_ENV = "IQAGUARD_ADMIN_KEY"
ADMIN_KEY_FILE_ENV = "IQAGUARD_ADMIN_KEY_FILE"
# The Python backend's shared-memory regions (/dev/shm) start with this prefix unless configured.
DEFAULT_SHM_PREFIX = "triton_python_backend_shm_region_"


def restricted_api_flags(admin_key: str) -> list[str]:
    """tritonserver flags that put the admin APIs behind `admin_key` on HTTP and gRPC."""
    if not admin_key or any(c in admin_key for c in ":,= \n"):
        raise ValueError("the admin key must be non-empty without ':', ',', '=' or whitespace")
    apis = ",".join(ADMIN_APIS)
    return [
        f"--http-restricted-api={apis}:{ADMIN_HEADER}={admin_key}",
        f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={admin_key}",
    ]


def admin_headers(admin_key: str, grpc: bool = False) -> dict[str, str]:
    """The header an operator's client sends to use an admin API (HTTP, or gRPC metadata)."""
    return {GRPC_ADMIN_HEADER if grpc else ADMIN_HEADER: admin_key}


def configured_admin_key(env: Mapping[str, str] | None = None) -> str | None:
    """The operator's credential: $IQAGUARD_ADMIN_KEY, else the file $IQAGUARD_ADMIN_KEY_FILE names."""
    env = os.environ if env is None else env
    if env.get(ADMIN_KEY_ENV):
        return env[ADMIN_KEY_ENV].strip()
    if env.get(ADMIN_KEY_FILE_ENV):
        with open(env[ADMIN_KEY_FILE_ENV]) as handle:
            return handle.read().strip()
    return None


def unguessable_key() -> str:
    """A random credential nobody is told: the admin APIs are then closed to every client."""
    return secrets.token_urlsafe(32)


def _regions(prefix: str, directory: str) -> list[str]:
    return glob.glob(os.path.join(directory, glob.escape(prefix) + "*"))


def restrict_shm_regions(prefix: str, directory: str = "/dev/shm") -> int:
    """chmod 0600 the regions starting with `prefix` (the backend creates them 0644); return how many."""
    count = 0
    for path in _regions(prefix, directory):
        try:
            os.chmod(path, 0o600)
            count += 1
        except FileNotFoundError:
            pass
    return count


def remove_shm_regions(prefix: str, directory: str = "/dev/shm") -> list[str]:
    """Delete the shared-memory regions whose name starts with `prefix`; return their paths."""
    removed = []
    for path in _regions(prefix, directory):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed
