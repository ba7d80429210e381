"""A closed-loop asyncio load generator (Triton's perf_analyzer cannot be installed here).

`concurrency` workers each send one request, wait for its answer, and send the next, for a fixed
number of requests or a fixed duration, after untimed warm-up requests. Reported: throughput
(answered requests per second of wall time) and latency percentiles.

    python -m iqaguard.bench.loadgen --url 127.0.0.1:8001 --target ensemble --concurrency 1,2,4,8,16 --requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcaio

from iqaguard.contract import ENSEMBLE, ENSEMBLE_OUTPUTS, INPUT_IMAGE, TEACHER
from iqaguard.loopback import require_loopback
from iqaguard.repository.layout import LOGITS, PIXELS, TEACHER_PROBS

Call = Callable[[], Awaitable[Any]]
DEFAULT_SWEEP = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class LoadResult:
    """What one target did at one concurrency: counts, throughput (req/s) and latency (ms)."""

    target: str
    concurrency: int
    requests: int
    errors: int
    elapsed_s: float
    throughput: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    first_error: str | None = None

    def row(self) -> str:
        """One line of the printed table."""
        errors = f"  ERRORS {self.errors}: {self.first_error}" if self.errors else ""
        return (
            f"{self.target:<22} {self.concurrency:>4} {self.requests:>6} {self.throughput:>9.2f} "
            f"{self.p50_ms:>9.1f} {self.p90_ms:>9.1f} {self.p99_ms:>9.1f}{errors}"
        )


TABLE_HEADER = f"{'target':<22} {'conc':>4} {'reqs':>6} {'req/s':>9} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9}"


async def measure(
    target: str,
    call: Call,
    concurrency: int,
    requests: int | None = None,
    duration_s: float | None = None,
    warmup: int = 0,
) -> LoadResult:
    """Drive `call` from `concurrency` workers for `requests` answers or `duration_s` seconds.

    Exactly one of requests/duration_s is given. `warmup` requests (at the same concurrency) run
    first and are not timed. A failed call counts as an error, not as a latency sample.
    """
    if (requests is None) == (duration_s is None):
        raise ValueError("give exactly one of requests or duration_s")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if warmup:
        await asyncio.gather(*(call() for _ in range(warmup)), return_exceptions=True)

    latencies: list[float] = []
    errors: list[BaseException] = []
    issued = 0
    deadline = 0.0

    def more() -> bool:
        nonlocal issued
        if requests is not None:
            if issued >= requests:
                return False
            issued += 1
            return True
        return time.perf_counter() < deadline

    async def worker() -> None:
        while more():
            started = time.perf_counter()
            try:
                await call()
            except Exception as error:  # counted and reported, never hidden
                errors.append(error)
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    deadline = started + (duration_s or 0.0)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies, dtype=np.float64) * 1000.0
    stats = np.percentile(ms, [50, 90, 99]) if len(ms) else np.full(3, np.nan)
    return LoadResult(
        target=target,
        concurrency=concurrency,
        requests=len(latencies),
        errors=len(errors),
        elapsed_s=elapsed,
        throughput=len(latencies) / elapsed if elapsed > 0 else 0.0,
        mean_ms=float(ms.mean()) if len(ms) else float("nan"),
        p50_ms=float(stats[0]),
        p90_ms=float(stats[1]),
        p99_ms=float(stats[2]),
        max_ms=float(ms.max()) if len(ms) else float("nan"),
        first_error=f"{type(errors[0]).__name__}: {errors[0]}"[:300] if errors else None,
    )


def ensemble_call(client: grpcaio.InferenceServerClient, image: bytes, model: str = ENSEMBLE) -> Call:
    """One request to ensemble `model` (robust_classifier[_<set>]) for an encoded image, all four outputs."""
    tensor = grpcaio.InferInput(INPUT_IMAGE, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[image]], dtype=np.object_))
    outputs = [grpcaio.InferRequestedOutput(name) for name in ENSEMBLE_OUTPUTS]
    return lambda: client.infer(model, [tensor], outputs=outputs)


def teacher_call(client: grpcaio.InferenceServerClient, pixels: np.ndarray, model: str = TEACHER) -> Call:
    """One request to a teacher alone (`model`: teacher[_<set>]): PIXELS__0 [1,3,H,W] float32 in, logits and
    probabilities out."""
    batch = np.ascontiguousarray(pixels[None] if pixels.ndim == 3 else pixels, dtype=np.float32)
    tensor = grpcaio.InferInput(PIXELS, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    outputs = [grpcaio.InferRequestedOutput(name) for name in (LOGITS, TEACHER_PROBS)]
    return lambda: client.infer(model, [tensor], outputs=outputs)


def parse_sweep(text: str) -> tuple[int, ...]:
    """"1,2,4" -> (1, 2, 4)."""
    levels = tuple(int(part) for part in text.split(","))
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels must be positive integers, got {text!r}")
    return levels


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options shared by this CLI and the benchmark: sweep, request count or duration, warm-up."""
    parser.add_argument("--concurrency", type=parse_sweep, default=DEFAULT_SWEEP, help="sweep, e.g. 1,2,4,8,16")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, help="answers to time per concurrency level")
    amount.add_argument("--duration", type=float, help="seconds to run each concurrency level (default: 10)")
    parser.add_argument("--warmup", type=int, default=4, help="untimed requests before each level (default: 4)")


def amount(args: argparse.Namespace) -> dict[str, float | int | None]:
    """measure()'s requests/duration_s from parsed options (10 s per level when neither is given)."""
    if args.requests is None and args.duration is None:
        return {"requests": None, "duration_s": 10.0}
    return {"requests": args.requests, "duration_s": args.duration}


async def run_cli(args: argparse.Namespace) -> list[LoadResult]:
    from iqaguard.imaging import bytes_to_pixels

    image = args.image.read_bytes()
    results = []
    async with grpcaio.InferenceServerClient(args.url) as client:
        if args.target == "ensemble":
            call = ensemble_call(client, image, args.model or ENSEMBLE)
        else:
            height, width = args.size
            call = teacher_call(client, bytes_to_pixels(image, (height, width)), args.model or TEACHER)
        print(TABLE_HEADER)
        for level in args.concurrency:
            result = await measure(args.target, call, level, warmup=args.warmup, **amount(args))  # type: ignore[arg-type]
            print(result.row(), flush=True)
            results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iqaguard.bench.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC host:port (default: %(default)s)")
    parser.add_argument("--target", choices=("ensemble", "teacher"), default="ensemble")
    parser.add_argument(
        "--model", help=f"the model called (default: {ENSEMBLE} or {TEACHER}; another set's: {ENSEMBLE}_<set>, "
        f"{TEACHER}_<set>)",
    )  # fmt: skip
    parser.add_argument("--image", type=Path, required=True, help="encoded image sent with every request")
    parser.add_argument(
        "--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"), help="teacher input size (teacher target)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    add_run_options(parser)
    args = parser.parse_args(argv)
    require_loopback("the load generator", args.url)
    results = asyncio.run(run_cli(args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(result) for result in results], indent=2) + "\n")
    return 1 if any(result.errors for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
