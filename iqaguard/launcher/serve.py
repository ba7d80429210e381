"""`iqaguard-serve`: run the embedded Triton server on 127.0.0.1 in the foreground.

Serves every model set built in the repository on one server: `robust_classifier` (the default
set) and `robust_classifier_<set>` for each set (iqaguard.repository.sets). Checks the repository first
(and, with --build-if-missing, builds the default model set when it is not built), waits until the
server is ready, prints where it listens, and forwards SIGINT/SIGTERM to it. A watchdog restarts the
server when a backend stub dies, a set's ensemble stops answering or tritonserver crashes (within a
restart budget; past it the launcher exits so an orchestrator takes over).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from iqaguard.launcher.drain import drain
from iqaguard.launcher.embedded import bring_up_to_date
from iqaguard.launcher.process import ServerOptions, ServerStartError, TritonServer
from iqaguard.launcher.security import (
    ADMIN_APIS,
    ADMIN_HEADER,
    ADMIN_KEY_ENV,
    ADMIN_KEY_FILE_ENV,
    configured_admin_key,
    unguessable_key,
)
from iqaguard.launcher.watchdog import RestartBudget, Watchdog, crash_reason, supervise
from iqaguard.log import cli_logging
from iqaguard.repository.check import check_repository, format_problems
from iqaguard.repository.layout import REPOSITORY_ENV, default_repository, latest_version, missing_artifacts
from iqaguard.repository.live import LiveStateError
from iqaguard.repository.manifest import describe_sets
from iqaguard.repository.sets import DEFAULT_SET, model_sets

DEFAULT_PROFILE = DEFAULT_SET  # the profile built when the default set is missing (its set name is the profile's)
RESTART_WINDOW_S = 600.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="iqaguard-serve",
        description="Serve every built model set (robust_classifier, robust_classifier_<set>) with the real "
        "Triton server, on 127.0.0.1.",
    )
    parser.add_argument(
        "--model-repository", type=Path, default=default_repository(),
        help=f"default: ${REPOSITORY_ENV}, else ./model_repository (%(default)s)",
    )  # fmt: skip
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--model-control-mode", choices=("none", "poll", "explicit"), default="explicit",
        help="Triton's model control mode (default: %(default)s: every model loaded at start; iqaguard-models "
        "rolls sets out and back with the admin credential)",
    )  # fmt: skip
    parser.add_argument(
        "--load-model", action="append", default=[],
        help="with explicit mode; repeatable (default: every model, '*')",
    )  # fmt: skip
    parser.add_argument(
        "--admin-key-file", type=Path,
        help=f"file holding the credential for Triton's admin APIs ({', '.join(ADMIN_APIS)}); "
        f"or set ${ADMIN_KEY_ENV} / ${ADMIN_KEY_FILE_ENV}. Without one they are closed to every client",
    )  # fmt: skip
    parser.add_argument("--log-verbose", type=int, default=0, help="Triton log verbosity (0 = info)")
    parser.add_argument(
        "--health-interval", type=float, default=2.0,
        help="seconds between watchdog checks (dead backend stubs, one real inference per ensemble); "
        "on a fault the server is restarted. 0 turns the watchdog off (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--health-failures", type=int, default=2,
        help="failed inferences in a row that count as a fault (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-restarts", type=int, default=5,
        help="restarts allowed in any 10 minutes after crashes or watchdog faults; past that the "
        "launcher exits with the server's code (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--drain-timeout", type=float, default=20.0,
        help="on SIGTERM/SIGINT, seconds to let queued and executing requests finish before Triton "
        "stops (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for readiness")
    parser.add_argument(
        "--build-if-missing",
        action="store_true",
        help=f"build the default model set ({DEFAULT_PROFILE}) first when it is not built",
    )
    parser.add_argument("extra", nargs="*", help="further tritonserver flags, after `--`")
    return parser.parse_args(argv)


def ensure_model_set(repository: Path, build_if_missing: bool) -> None:
    """Exit with a clear message (or build the default set) when configs are broken or artifacts missing."""
    problems = check_repository(repository)
    if problems:
        sys.exit(f"iqaguard-serve: {repository} has broken configs:\n{format_problems(problems)}")
    missing = missing_artifacts(repository)
    if not missing:
        return
    if not build_if_missing or not default_set_unbuilt(repository):
        sys.exit(
            f"iqaguard-serve: {repository} is not servable; missing:\n  "
            + "\n  ".join(missing)
            + "\nBuild the default model set with `make build` (or run `make serve`, which builds it); rebuild "
            "another set S with `python build/build_models.py --profile P --set-name S`, or remove it with "
            "`python -m iqaguard.repository.sets remove S`."
        )
    from iqaguard.pipeline import build_model_set  # heavy: torch, training

    print(f"iqaguard-serve: the default model set is not built in {repository}; building the "
          f"'{DEFAULT_PROFILE}' profile")  # fmt: skip
    build_model_set(profile=DEFAULT_PROFILE, repository=repository, as_default=True)
    still_missing = missing_artifacts(repository)
    if still_missing:
        sys.exit("iqaguard-serve: the build finished but left out:\n  " + "\n  ".join(still_missing))


def default_set_unbuilt(repository: Path) -> bool:
    """Whether the default set (the checked-in slots, what robust_classifier serves) lacks a built member."""
    default = model_sets(repository)[0]
    return any(not (repository / name).is_dir() or latest_version(repository / name) is None
               for name in default.members)  # fmt: skip


def admin_key(args: argparse.Namespace) -> str:
    """The operator's admin credential (file, then environment), else an unguessable one: APIs closed."""
    key = args.admin_key_file.read_text().strip() if args.admin_key_file else configured_admin_key()
    if key:
        print(f"iqaguard-serve: admin APIs ({', '.join(ADMIN_APIS)}) need the header {ADMIN_HEADER}")
        return key
    print(f"iqaguard-serve: admin APIs ({', '.join(ADMIN_APIS)}) closed: no credential configured")
    return unguessable_key()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli_logging()
    repository = args.model_repository.resolve()
    ensure_model_set(repository, args.build_if_missing)
    try:
        updated, live = bring_up_to_date(repository)
    except LiveStateError as error:
        sys.exit(f"iqaguard-serve: {error}")
    if updated:
        print(f"iqaguard-serve: brought up to date with the checked-in models: {', '.join(updated)}")
    print("iqaguard-serve: live versions: " + ", ".join(f"{name} v{version}" for name, version in live.items()))
    options = ServerOptions(
        repository=repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        model_control_mode=args.model_control_mode,
        load_models=args.load_model or (["*"] if args.model_control_mode == "explicit" else []),
        log_verbose=args.log_verbose,
        extra_args=args.extra,
        admin_key=admin_key(args),
    )
    server = TritonServer(options)
    stop_requests: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        # The main thread keeps supervising (and reaps the child); the drain runs beside it.
        if stop_requests:
            print("iqaguard-serve: second signal, killing the server", flush=True)
            server.kill()
            return
        stop_requests.append(signum)
        print(f"iqaguard-serve: {signal.Signals(signum).name} received, draining then stopping", flush=True)
        threading.Thread(target=drain_then_stop, args=(server, args.drain_timeout), daemon=True).start()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    for line in describe_sets(repository):
        print(f"iqaguard-serve: {line}")
    failed = start_and_wait(server, args.ready_timeout, stop_requests)
    if failed is not None:
        return failed
    print(
        f"iqaguard-serve: ready in {server.startup_seconds:.1f} s (pid {server.pid}) — HTTP http://{server.http_url}, "
        f"gRPC {server.grpc_url}, metrics {server.metrics_url}",
        flush=True,
    )
    budget = RestartBudget(args.max_restarts, RESTART_WINDOW_S)
    while True:
        code, fault = supervise(server.process, health_check(server, args), args.health_interval or 3600.0)
        if stop_requests:
            break
        fault = fault or crash_reason(code)
        if fault is None:
            break
        if not budget.spend():
            print(
                f"iqaguard-serve: {fault}; already restarted {args.max_restarts} times in "
                f"{RESTART_WINDOW_S:.0f} s, giving up",
                file=sys.stderr, flush=True,
            )  # fmt: skip
            code = server.stop(timeout=5.0) if code is None else code
            return shell_status(code) or 1
        print(f"iqaguard-serve: {fault}; restarting the server", flush=True)
        started = time.monotonic()
        server.stop(timeout=5.0)  # a dead stub can hold Triton's shutdown for its whole exit timeout
        failed = start_and_wait(server, args.ready_timeout, stop_requests)
        if failed is not None:
            return failed
        print(
            f"iqaguard-serve: serving again {time.monotonic() - started:.1f} s after the fault (pid {server.pid})",
            flush=True,
        )
    if code is None:  # a stop arrived while the watchdog was checking
        code = server.process.wait() if server.process else 1
    server.cleanup()
    if stop_requests:
        print(f"iqaguard-serve: stopped (tritonserver exit code {code})", flush=True)
    else:
        print(f"iqaguard-serve: tritonserver exited unexpectedly with code {code}", file=sys.stderr)
    return shell_status(code)


def shell_status(code: int | None) -> int:
    """The launcher's exit status for the server's: 128 + N when signal N killed it, as shells report."""
    if code is None:
        return 1
    return 128 - code if code < 0 else code


def drain_then_stop(server: TritonServer, timeout_s: float) -> None:
    """Let queued and executing requests finish (up to `timeout_s`), then SIGTERM the server."""
    if server.process is not None and server.process.poll() is None and server.startup_seconds is not None:
        marker = os.path.join(server.busy_dir, os.pardir, f"{os.path.basename(server.busy_dir)}.draining")
        idle = drain(server.metrics_url, server.busy_dir, timeout_s, marker, server.close_readiness)
        with contextlib.suppress(OSError):
            os.unlink(marker)
        print(f"iqaguard-serve: drained ({'idle' if idle else 'drain timeout reached'})", flush=True)
    server.terminate()


def start_and_wait(server: TritonServer, timeout_s: float, stop_requests: list[int]) -> int | None:
    """Start the server and wait for readiness; None when ready, else the launcher's exit code."""
    server.start()
    try:
        server.wait_ready(timeout_s)
    except ServerStartError as error:
        code = server.stop()
        if stop_requests:
            return code or 0
        print(f"iqaguard-serve: {error}", file=sys.stderr)
        return 1
    return None


def health_check(server: TritonServer, args: argparse.Namespace) -> Callable[[], str | None]:
    """The watchdog's check for the running server process (dead stubs, deep readiness of every ensemble)."""
    if not args.health_interval:
        return lambda: None
    watchdog = Watchdog(server.http_url, server.pid, ensembles(server.options.repository), args.health_failures)

    def check() -> str | None:
        server.restrict_shared_memory()  # regions a restarted stub created since the last check
        return watchdog.fault()

    return check


def ensembles(repository: Path) -> list[str]:
    """One ensemble per model set (what clients call, so what the deep probe sends): a probe through
    robust_classifier_<default> would only repeat the one through robust_classifier."""
    return [model_set.ensembles[0] for model_set in model_sets(repository)]


if __name__ == "__main__":
    sys.exit(main())
