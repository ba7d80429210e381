"""`iqaguard-models`: list the model sets and their versions, roll a set out or back, load or unload it.

    iqaguard-models list
    iqaguard-models rollout fashion [--version 3]
    iqaguard-models rollback fashion
    iqaguard-models load natural | unload natural

Everything but `list` (and `rollout --offline`) calls Triton's model-control API, which needs the
operator's credential: $IQAGUARD_ADMIN_KEY, $IQAGUARD_ADMIN_KEY_FILE or --admin-key-file, the same
one the server was started with.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from iqaguard.launcher.security import ADMIN_KEY_ENV, ADMIN_KEY_FILE_ENV, configured_admin_key
from iqaguard.log import cli_logging
from iqaguard.operations.rollout import (
    current_state,
    load_set,
    offline_rollout,
    rollback,
    rollout,
    unload_set,
)
from iqaguard.operations.triton_admin import AdminError, TritonAdmin
from iqaguard.repository.layout import default_repository
from iqaguard.repository.live import LiveStateError, built_versions
from iqaguard.repository.manifest import read_manifest
from iqaguard.repository.sets import ModelSet, model_sets

DEFAULT_URL = "127.0.0.1:8000"


def headline(repository: Path, model_set: ModelSet, version: int) -> str:
    """The build report's headline for one version, from its detector manifest."""
    try:
        manifest = read_manifest(repository / model_set.members[-1] / str(version))
    except (OSError, ValueError):
        return "(no manifest)"
    metrics = manifest.get("metrics", {})
    detector = metrics.get("detector", {})
    parts = [f"profile {manifest.get('profile', '?')}", f"built {str(manifest.get('created', '?'))[:16]}"]
    if "teacher_top1" in metrics:
        parts.append(f"teacher top-1 {metrics['teacher_top1']:.3f}")
    if "false_rejection_rate" in detector:
        parts.append(f"FRR {detector['false_rejection_rate']:.3f}")
    for key, label in (("mean_auroc_attacks", "AUROC attacks"), ("mean_auroc_unseen_attacks", "unseen attacks"),
                       ("mean_auroc_all_distortions", "distortions")):  # fmt: skip
        if key in detector:
            parts.append(f"{label} {detector[key]:.3f}")
    if manifest.get("weights") == "random" or "random" in str(manifest.get("teacher", "")):
        parts.append("RANDOM weights")
    return ", ".join(parts)


def list_sets(repository: Path, admin: TritonAdmin | None) -> str:
    """A table of sets, versions, the live one, and what the server has loaded (when reachable)."""
    loaded: dict[tuple[str, str], str] = {}
    if admin is not None:
        try:
            loaded = {(m["name"], str(m.get("version", ""))): m.get("state", "") for m in admin.index()}
        except AdminError as error:
            print(f"iqaguard-models: server state unknown ({error})", file=sys.stderr)
    lines = []
    for model_set in model_sets(repository):
        built = built_versions(repository, model_set)
        lines.append(f"{model_set.describe()}")
        if not built:
            lines.append("  (not built)")
            continue
        live = current_state(repository, model_set).live
        for version in built:
            marker = "live" if version == live else "    "
            states = {loaded.get((member, str(version)), "") for member in model_set.members} - {""}
            served = f" [{'/'.join(sorted(states))}]" if states else ""
            lines.append(f"  {marker} v{version}{served}: {headline(repository, model_set, version)}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="iqaguard-models", description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=default_repository(), help="default: %(default)s")
    parser.add_argument("--url", default=DEFAULT_URL, help="the server's HTTP endpoint (default: %(default)s)")
    parser.add_argument("--admin-key-file", type=Path, help="file holding the admin credential")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="sets, built versions, the live one, each version's report headline")
    out = commands.add_parser("rollout", help="make a built version of a set live (default: the newest)")
    out.add_argument("set")
    out.add_argument("--version", type=int)
    out.add_argument("--settle", type=float, default=2.0, help="seconds before the old version is unloaded")
    out.add_argument("--offline", action="store_true", help="only record it in the repository (no server)")
    back = commands.add_parser("rollback", help="make the previously live version of a set live again")
    back.add_argument("set")
    back.add_argument("--settle", type=float, default=2.0)
    for name in ("load", "unload"):
        commands.add_parser(name, help=f"{name} a set's models").add_argument("set")
    return parser.parse_args(argv)


def _admin(args: argparse.Namespace, required: bool) -> TritonAdmin | None:
    key = args.admin_key_file.read_text().strip() if args.admin_key_file else configured_admin_key()
    if not key:
        if required:
            raise AdminError(f"no admin credential: set {ADMIN_KEY_ENV} or {ADMIN_KEY_FILE_ENV}, or --admin-key-file")
        return None
    return TritonAdmin(args.url, key)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cli_logging()
    repository = args.repository.resolve()
    try:
        if args.command == "list":
            print(list_sets(repository, _admin(args, required=False)))
        elif args.command == "rollout" and args.offline:
            state = offline_rollout(repository, args.set, args.version)
            print(f"set {args.set}: v{state.live} recorded as live; served from the next server start")
        elif args.command == "rollout":
            print(rollout(repository, _admin(args, True), args.set, args.version, args.settle).describe())
        elif args.command == "rollback":
            print(rollback(repository, _admin(args, True), args.set, args.settle).describe())
        elif args.command == "load":
            print("loaded " + ", ".join(load_set(repository, _admin(args, True), args.set)))
        else:
            print("unloaded " + ", ".join(unload_set(_admin(args, True), repository, args.set)))
    except (AdminError, LiveStateError) as error:
        print(f"iqaguard-models: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
