"""Ordinary clients' latency while one client sends the most expensive legal requests.

One run, one server, three phases of `--duration` seconds each, measured side by side:
1. baseline: `--clients` closed-loop workers send an ordinary photo (a 640×480 JPEG) to the ensemble;
2. the same workers, while `--abusers` more clients send back to back the costliest request the
   served preprocessor's budget admits: `max_request_items` random-noise WebP images (the slowest
   format to decode per pixel, measured) whose header pixels fill `max_request_pixels`, within
   `max_request_bytes` and the per-image limits (read from the served model's config);
3. baseline again, to see the machine's own drift.
Printed and written to JSON: each phase's p50/p99 of the ordinary requests, their ratio to the baseline,
the expensive requests' count and latency, how many were refused for now (UNAVAILABLE: the server was
busy with as many large requests as it runs at once) and every other error (none is expected).

    python -m iqaguard.bench.expensive_load [--url 127.0.0.1:8001 --http-url 127.0.0.1:8000] [--duration 20]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from iqaguard.bench.loadgen import TABLE_HEADER, LoadResult, ensemble_call, measure
from iqaguard.contract import ENSEMBLE, ENSEMBLE_OUTPUTS, INPUT_IMAGE
from iqaguard.launcher.embedded import server_for
from iqaguard.log import cli_logging
from iqaguard.loopback import require_loopback
from iqaguard.repository.layout import default_repository
from iqaguard.repository.sets import set_for_ensemble

ORDINARY_SIZE = (640, 480)


@dataclass(frozen=True)
class Budget:
    """The served preprocessor's limits: per image and per request."""

    max_pixels: int
    max_bytes: int
    max_request_items: int
    max_request_bytes: int
    max_request_pixels: int


def served_budget(http_url: str, preprocessor: str) -> Budget:
    """The budget `preprocessor` serves with, from its model config (an open, read-only API)."""
    client = httpclient.InferenceServerClient(http_url)
    try:
        parameters = client.get_model_config(preprocessor).get("parameters", {})
    finally:
        client.close()
    values = {key: int(value["string_value"]) for key, value in parameters.items() if key.startswith("max_")}
    return Budget(**{field: values[field] for field in Budget.__dataclass_fields__})


def ordinary_image() -> bytes:
    """An ordinary request's image: a scikit-image photo as a 640×480 JPEG."""
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).resize(ORDINARY_SIZE).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def costliest_items(budget: Budget, seed: int = 0) -> list[bytes]:
    """The most expensive legal request: as many noise WebP images as allowed, their pixels filling the budget."""
    count = budget.max_request_items
    pixels = min(budget.max_request_pixels // count, budget.max_pixels)
    width = int(math.sqrt(pixels * 4 / 3))
    height = pixels // width
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "WEBP", quality=90)
    item = buffer.getvalue()
    count = min(count, budget.max_request_bytes // len(item))
    if count < 1 or len(item) > budget.max_bytes:
        raise ValueError(f"a {width}x{height} noise WebP ({len(item)} bytes) does not fit the budget {budget}")
    return [item] * count


async def abuse(grpc_url: str, model: str, items: list[bytes], stop: Callable[[], bool]) -> dict[str, list]:
    """Send the costly request back to back, with no pause even after a refusal, until `stop()`; return each
    answer's latency (s), each refusal for now (UNAVAILABLE, server busy) and each other error."""
    tensor = grpcaio.InferInput(INPUT_IMAGE, [len(items), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(items, dtype=np.object_).reshape(-1, 1))
    outputs = [grpcaio.InferRequestedOutput(name) for name in ENSEMBLE_OUTPUTS]
    outcome: dict[str, list] = {"latencies": [], "refused": [], "errors": []}
    loop = asyncio.get_running_loop()
    async with grpcaio.InferenceServerClient(grpc_url) as client:
        while not stop():
            started = loop.time()
            try:
                await client.infer(model, [tensor], outputs=outputs, client_timeout=300)
            except InferenceServerException as error:  # counted and reported, never hidden
                busy = error.status() == "StatusCode.UNAVAILABLE" and "busy" in (error.message() or "")
                outcome["refused" if busy else "errors"].append(f"{error.status()}: {error.message()}"[:300])
                continue
            outcome["latencies"].append(loop.time() - started)
    return outcome


def costly_clients(grpc_url: str, model: str, budget: Budget, count: int, stop: Event, results: Queue) -> None:
    """A process of `count` costly clients (its own, so their serialisation never stalls the ordinary clients'
    event loop): put their joint outcome on `results` once `stop` is set."""
    items = costliest_items(budget)

    async def clients() -> list[dict[str, list]]:
        return await asyncio.gather(*(abuse(grpc_url, model, items, stop.is_set) for _ in range(count)))

    outcomes = asyncio.run(clients())
    results.put({key: [value for outcome in outcomes for value in outcome[key]] for key in outcomes[0]})


async def run(args: argparse.Namespace, grpc_url: str, budget: Budget) -> dict[str, object]:
    """The three phases against the server at `grpc_url`; returns the report."""
    image = ordinary_image()
    phases: dict[str, LoadResult] = {}
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds gRPC state
    stop, results = context.Event(), context.Queue()
    async with grpcaio.InferenceServerClient(grpc_url) as client:
        call = ensemble_call(client, image, args.ensemble)
        print(TABLE_HEADER)
        phases["baseline"] = await measure("baseline", call, args.clients, duration_s=args.duration, warmup=8)
        print(phases["baseline"].row(), flush=True)
        abusers = context.Process(target=costly_clients,
                                  args=(grpc_url, args.ensemble, budget, args.abusers, stop, results))  # fmt: skip
        abusers.start()
        await asyncio.sleep(5.0)  # the costly requests are in the server before timing starts
        phases["with_costly_client"] = await measure("with costly client", call, args.clients, duration_s=args.duration)
        stop.set()
        outcome = await asyncio.to_thread(results.get, True, 600)
        abusers.join(timeout=30)
        print(phases["with_costly_client"].row(), flush=True)
        phases["baseline_after"] = await measure("baseline after", call, args.clients, duration_s=args.duration)
        print(phases["baseline_after"].row(), flush=True)
    base = phases["baseline"]
    ratios = {name: result.p99_ms / base.p99_ms for name, result in phases.items()}
    costly_ms = np.asarray(outcome["latencies"]) * 1000.0
    items = costliest_items(budget)
    return {
        "phases": {name: asdict(result) for name, result in phases.items()},
        "p99_ratio_to_baseline": ratios,
        "costly_requests": {
            "items": len(items), "bytes": sum(map(len, items)), "answered": len(costly_ms),
            "refused_busy": len(outcome["refused"]), "first_refusal": next(iter(outcome["refused"]), None),
            "p50_ms": float(np.median(costly_ms)) if len(costly_ms) else None,
            "max_ms": float(costly_ms.max()) if len(costly_ms) else None,
            "errors": outcome["errors"],
        },
    }  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m iqaguard.bench.expensive_load", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="127.0.0.1:8001", help="gRPC host:port of a running server")
    parser.add_argument("--http-url", default="127.0.0.1:8000", help="its HTTP host:port (health, model config)")
    parser.add_argument("--repository", type=Path, default=default_repository(),
                        help="served when no server is ready at --http-url (default: %(default)s)")  # fmt: skip
    parser.add_argument("--ensemble", default=ENSEMBLE, help="the set's ensemble (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=2, help="ordinary closed-loop clients (default: %(default)s)")
    parser.add_argument("--abusers", type=int, default=1, help="clients sending the costliest request (default: 1)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=Path("reports/bench/expensive_load.json"))
    args = parser.parse_args(argv)
    require_loopback("this benchmark", args.url, args.http_url)
    if min(args.clients, args.abusers) < 1 or args.duration <= 0:
        parser.error("--clients and --abusers must be at least 1, --duration positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cli_logging()
    repository = args.repository.resolve()
    try:
        preprocessor = set_for_ensemble(repository, args.ensemble).preprocessor
    except KeyError as error:
        raise SystemExit(f"expensive_load: {error.args[0]}") from None
    with server_for(args.url, args.http_url, repository, args.json.parent / "triton.log") as endpoints:
        budget = served_budget(endpoints.http_url, preprocessor)
        items = costliest_items(budget)
        print(f"budget {budget}; costliest request: {len(items)} × {len(items[0])} bytes of noise WebP", flush=True)
        report = asyncio.run(run(args, endpoints.grpc_url, budget))
    report = {"what": __doc__, "budget": asdict(budget), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "settings": {"clients": args.clients, "abusers": args.abusers, "duration_s": args.duration}, **report}
    ratio = report["p99_ratio_to_baseline"]["with_costly_client"]  # type: ignore[index]
    print(f"ordinary p99 with the costly client: {ratio:.2f}× the baseline (target < 2×)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    errors = report["costly_requests"]["errors"] or any(p["errors"] for p in report["phases"].values())  # type: ignore[index,union-attr]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
