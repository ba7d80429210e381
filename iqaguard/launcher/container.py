"""The Triton image's entrypoint: close the admin APIs, clear stale /dev/shm regions, exec the server.

`python3 -m iqaguard.launcher.container tritonserver --model-repository=/models ...` (compose's
`command`, Kubernetes' `args`) runs tritonserver with the restricted-API flags added: the credential
is $IQAGUARD_ADMIN_KEY or the file $IQAGUARD_ADMIN_KEY_FILE names (a mounted Secret), else an
unguessable key nobody is told. Stdlib-only, Python 3.10: it runs on the NGC image's interpreter.
"""

from __future__ import annotations

import logging
import os
import sys

from iqaguard.launcher.security import (
    ADMIN_APIS,
    ADMIN_KEY_ENV,
    DEFAULT_SHM_PREFIX,
    configured_admin_key,
    remove_shm_regions,
    restricted_api_flags,
    unguessable_key,
)

log = logging.getLogger("iqaguard.container")
NVIDIA_ENTRYPOINT = "/opt/nvidia/nvidia_entrypoint.sh"


def server_command(argv: list[str], env: dict[str, str]) -> list[str]:
    """The command to exec: tritonserver gets the restricted-API flags; anything else runs as given."""
    if not argv or os.path.basename(argv[0]) != "tritonserver":
        return argv
    key = configured_admin_key(env)
    if key:
        log.warning("admin APIs (%s) need the operator's credential", ", ".join(ADMIN_APIS))
    else:
        log.warning("admin APIs (%s) closed: %s is not set", ", ".join(ADMIN_APIS), ADMIN_KEY_ENV)
        key = unguessable_key()
    return [argv[0], *restricted_api_flags(key), *argv[1:]]


def main(argv: list[str] | None = None) -> None:
    """Exec the server through NVIDIA's entrypoint (its banner and environment checks) when present."""
    logging.basicConfig(level=logging.INFO, format="iqaguard: %(message)s")
    command = server_command(list(sys.argv[1:] if argv is None else argv), dict(os.environ))
    if not command:
        sys.exit("usage: python3 -m iqaguard.launcher.container tritonserver [flags...]")
    # A restarted container keeps its /dev/shm (a pod's emptyDir): regions of a crashed server go first.
    remove_shm_regions(DEFAULT_SHM_PREFIX)
    os.umask(0o077)  # the server's shared-memory regions: owner only
    if os.path.exists(NVIDIA_ENTRYPOINT):
        command = [NVIDIA_ENTRYPOINT, *command]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
