"""One command for a headless Locust load test on 127.0.0.1, with CSV and HTML reports.

    python -m iqaguard.bench.loadtest --users 8 --duration 30s          # `make loadtest USERS=8 DURATION=30s`

Uses the server at --grpc-url/--http-url when one is ready there (e.g. `make serve`); otherwise starts
the embedded server on --repository (free ports) for the run and stops it afterwards. Runs
`locust -f iqaguard/bench/locustfile.py --headless ...` as a subprocess, writes <out>/<name>_stats.csv,
_failures.csv, _exceptions.csv, _stats_history.csv and <out>/<name>.html, and
exits with Locust's status (non-zero when any request failed). Arguments after `--` go to Locust.
--ensemble picks the model set called (robust_classifier_<set>; default robust_classifier). The image
pool is the held-out samples of that set's newest build in --repository when it has them (else a
synthetic pool; `-- --pool-dir DIR` picks a folder); the run prints which.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

from iqaguard.contract import ENSEMBLE
from iqaguard.launcher.embedded import server_for
from iqaguard.log import cli_logging
from iqaguard.loopback import require_loopback
from iqaguard.repository.layout import default_repository

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
DEFAULT_OUT = Path("reports") / "locust"  # under the working directory


def read_stats(csv_path: Path) -> list[dict[str, str]]:
    """Rows of Locust's <name>_stats.csv (one per request type and name, then "Aggregated")."""
    with csv_path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def locust_command(args: argparse.Namespace, grpc_url: str, http_url: str) -> list[str]:
    """The headless locust command line for this run."""
    prefix = args.out / args.name
    return [
        str(Path(sys.executable).parent / "locust"), "-f", str(LOCUSTFILE), "--headless",
        "--users", str(args.users), "--spawn-rate", str(args.spawn_rate or args.users), "--run-time", args.duration,
        "--stop-timeout", "10", "--csv", str(prefix), "--csv-full-history", "--html", f"{prefix}.html",
        "--only-summary", "--grpc-url", grpc_url, "--http-url", http_url,
        "--model-repository", str(args.repository), "--ensemble", args.ensemble, *args.locust_args,
    ]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m iqaguard.bench.loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=8, help="simulated clients (default: 8)")
    parser.add_argument("--spawn-rate", type=float, help="users started per second (default: all at once)")
    parser.add_argument("--duration", default="30s", help="Locust run time, e.g. 30s, 2m (default: 30s)")
    parser.add_argument("--grpc-url", default="127.0.0.1:8001", help="default: %(default)s")
    parser.add_argument("--http-url", default="127.0.0.1:8000", help="default: %(default)s")
    parser.add_argument(
        "--repository",
        type=Path,
        default=default_repository(),
        help="served when no server runs; its build's held-out samples are the image pool",
    )
    parser.add_argument(
        "--ensemble", default=os.environ.get("IQAGUARD_ENSEMBLE") or ENSEMBLE,
        help=f"the ensemble to load: {ENSEMBLE} or {ENSEMBLE}_<set> (default: $IQAGUARD_ENSEMBLE, else {ENSEMBLE})",
    )
    parser.add_argument("--no-serve", action="store_true", help="fail instead of starting the embedded server")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder (default: reports/locust)")
    parser.add_argument("--name", default="loadtest", help="report file prefix (default: %(default)s)")
    parser.add_argument("locust_args", nargs="*", help="further locust options, after `--`")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli_logging()
    require_loopback("the load test", args.grpc_url, args.http_url)
    args.out.mkdir(parents=True, exist_ok=True)
    with server_for(args.grpc_url, args.http_url, args.repository, args.out / "triton.log", not args.no_serve) as at:
        command = locust_command(args, at.grpc_url, at.http_url)
        print("running:", " ".join(command), flush=True)
        code = subprocess.run(command, check=False).returncode
    prefix = args.out / args.name
    if Path(f"{prefix}_stats.csv").is_file():
        print(f"reports: {prefix}_stats.csv (+ _failures, _exceptions, _stats_history .csv), {prefix}.html")
    return code


if __name__ == "__main__":
    sys.exit(main())
