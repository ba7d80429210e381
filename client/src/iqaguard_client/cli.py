"""`iqaguard-classify`: classify image files with a served robust_classifier ensemble; say whether to trust each."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from iqaguard_client.async_client import AsyncClassifier, Outcome
from iqaguard_client.connection import DEFAULT_URLS, PROTOCOLS, ConnectionSettings, RetryPolicy
from iqaguard_client.contract import ENSEMBLE, VERDICTS
from iqaguard_client.files import Missing, expand_inputs
from iqaguard_client.inference import DEFAULT_TOP_K
from iqaguard_client.progress import Progress
from iqaguard_client.results import Classification, ClassificationError, ServerUnavailableError

EXIT_OK, EXIT_STRICT, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
ENSEMBLE_ENV = "IQAGUARD_ENSEMBLE"

DESCRIPTION = """\
Classify images with the iqaguard `robust_classifier` model served by Triton (or another model
set's `robust_classifier_<set>`, see --ensemble), and say for each whether its answer can be trusted.
For every image you get the most probable classes, a quality score and a verdict:

  accept       the answer looks trustworthy
  low_quality  the image is too degraded (blur, noise, heavy compression, ...) to trust the answer
  adversarial  the image looks manipulated to fool the classifier

quality is the BRISQUE score of the image (about 0 = pristine, 100 or more = very poor);
suspicion is the detector's probability (0..1) that the answer is unreliable.
Start a server first with `make serve` (it listens on 127.0.0.1).
"""

EPILOG = f"""\
examples:
  iqaguard-classify cat.jpg dog.png          two files
  iqaguard-classify photos/                  every image in a folder (add --recursive for subfolders)
  iqaguard-classify "photos/**/*.jpg"        a glob pattern, quoted so the shell leaves it alone
  iqaguard-classify --json photos/ > out.jsonl
  iqaguard-classify --protocol http --url 127.0.0.1:8000 --top-k 5 cat.jpg
  iqaguard-classify --ensemble robust_classifier_natural photo.jpg
  iqaguard-classify --strict uploads/ || echo "something needs a look"

exit status:
  {EXIT_OK}  done; images that failed are reported but do not change the status without --strict
  {EXIT_STRICT}  with --strict: an image failed or its verdict is not "accept"
  {EXIT_USAGE}  bad arguments, or no image to classify
  {EXIT_UNAVAILABLE}  the server cannot be reached or the model is not ready
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="iqaguard-classify",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or quoted glob patterns")
    where = parser.add_argument_group("server")
    where.add_argument("--protocol", choices=PROTOCOLS, default="grpc", help="how to talk to Triton (default: grpc)")
    where.add_argument(
        "--url", metavar="HOST:PORT",
        help=f"server address, no scheme (default: {DEFAULT_URLS['grpc']} for grpc, {DEFAULT_URLS['http']} for http)",
    )  # fmt: skip
    where.add_argument(
        "--ensemble", metavar="NAME", default=os.environ.get(ENSEMBLE_ENV) or ENSEMBLE,
        help=f"the ensemble to call: {ENSEMBLE} (the default model set) or {ENSEMBLE}_<set> "
        f"(default: ${ENSEMBLE_ENV}, else {ENSEMBLE})",
    )  # fmt: skip
    where.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="per request (default: 30)")
    where.add_argument(
        "--retries", type=int, default=3, metavar="N",
        help="retries when the server is unavailable, with backoff; other errors are not retried (default: 3)",
    )  # fmt: skip
    where.add_argument("--concurrency", type=int, default=8, metavar="N", help="requests in flight (default: 8)")
    tls = parser.add_argument_group("TLS (when the server is behind TLS)")
    tls.add_argument("--ssl", action="store_true", help="connect with TLS")
    tls.add_argument("--ca-file", metavar="PEM", help="CA certificates to verify the server")
    tls.add_argument("--cert-file", metavar="PEM", help="client certificate (mutual TLS)")
    tls.add_argument("--key-file", metavar="PEM", help="client private key (mutual TLS)")
    tls.add_argument("--insecure", action="store_true", help="HTTP only: do not check the server's host name")
    output = parser.add_argument_group("output")
    output.add_argument(
        "--top-k", type=int, default=DEFAULT_TOP_K, metavar="K",
        help=f"classes to show per image (default: {DEFAULT_TOP_K})",
    )  # fmt: skip
    output.add_argument("--json", action="store_true", help="one JSON object per image (JSON Lines) instead of text")
    output.add_argument("--strict", action="store_true", help=f"exit {EXIT_STRICT} if an image fails or isn't accepted")
    output.add_argument("--recursive", action="store_true", help="also classify images in subfolders of a folder")
    output.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown on a terminal)")
    args = parser.parse_args(argv)
    for name in ("top_k", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.retries < 0 or args.timeout <= 0:
        parser.error("--retries must be >= 0 and --timeout > 0")
    if args.url and "://" in args.url:
        parser.error(f"--url takes HOST:PORT without a scheme (use --ssl for TLS), got {args.url!r}")
    return args


def settings_from(args: argparse.Namespace) -> ConnectionSettings:
    """The connection settings the command-line options describe."""
    return ConnectionSettings(
        protocol=args.protocol, url=args.url, timeout_s=args.timeout, ssl=args.ssl, ca_file=args.ca_file,
        cert_file=args.cert_file, key_file=args.key_file, insecure=args.insecure, retry=RetryPolicy(args.retries),
    )  # fmt: skip


def format_text(outcome: Outcome) -> str:
    """One human-readable line per image."""
    if isinstance(outcome, ClassificationError):
        return f"{outcome.image}\tFAILED\t{outcome.message}"
    classes = ", ".join(f"{item.label} {item.probability:.3f}" for item in outcome.top_k)
    return (
        f"{outcome.image}\t{outcome.verdict}\tquality {outcome.quality:.1f}\t"
        f"suspicion {outcome.suspicion:.3f}\t{classes}"
    )


def format_json(outcome: Outcome) -> str:
    """One JSON object per image."""
    return json.dumps(outcome.to_dict(), ensure_ascii=False)


def summary(counts: Counter[str]) -> str:
    total = sum(counts.values())
    parts = [f"{counts[verdict]} {verdict}" for verdict in VERDICTS] + [f"{counts['failed']} failed"]
    return f"iqaguard-classify: {total} image{'s' if total != 1 else ''}: " + ", ".join(parts)


async def classify(args: argparse.Namespace, inputs: list[Path | Missing]) -> tuple[Counter[str], bool]:
    """Classify the inputs, printing each outcome in input order; return verdict counts and reachability."""
    counts: Counter[str] = Counter()
    render = format_json if args.json else format_text
    show_progress = False if args.no_progress else None  # None: shown on a terminal only
    items: list[tuple[str, bytes | Path]] = []
    missing: list[Missing] = []
    for item in inputs:
        if isinstance(item, Missing):
            missing.append(item)
        else:
            items.append((str(item), item))
    for item in missing:
        counts["failed"] += 1
        print(render(ClassificationError(item.argument, item.reason, status="local")), flush=True)
    if not items:
        return counts, True
    async with AsyncClassifier(settings_from(args), top_k=args.top_k, model=args.ensemble) as classifier:
        try:
            await classifier.check_ready()
        except ServerUnavailableError as error:
            print(f"iqaguard-classify: {error}\nIs the server running? Start it with `make serve`.", file=sys.stderr)
            return counts, False
        with Progress(len(items), enabled=show_progress) as bar:
            async for outcome in classifier.classify_many(
                items, concurrency=args.concurrency, on_done=lambda _: bar.update()
            ):
                counts[outcome.verdict if isinstance(outcome, Classification) else "failed"] += 1
                bar.write(render(outcome))
    return counts, True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    inputs = expand_inputs(args.images, recursive=args.recursive)
    if not any(isinstance(item, Path) for item in inputs):
        for item in inputs:
            if isinstance(item, Missing):
                print(f"iqaguard-classify: {item.argument}: {item.reason}", file=sys.stderr)
        print("iqaguard-classify: no image to classify", file=sys.stderr)
        return EXIT_USAGE
    counts, reachable = asyncio.run(classify(args, inputs))
    if not reachable:
        return EXIT_UNAVAILABLE
    print(summary(counts), file=sys.stderr)
    not_accepted = sum(count for key, count in counts.items() if key != "accept")
    return EXIT_STRICT if args.strict and not_accepted else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
