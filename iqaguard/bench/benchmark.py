"""Served ensemble vs served teacher alone vs the same pipeline in-process, over a concurrency sweep.

    python -m iqaguard.bench.benchmark             # `make bench`: imagenet profile, 224×224, random weights

What is compared, at each concurrency level c (closed loop: c requests in flight, one image each),
for the model set --ensemble serves (robust_classifier: the default set; robust_classifier_<set>):
- ensemble   gRPC robust_classifier requests (encoded JPEG in; the four outputs back), served by the
             embedded Triton with the repository's configs (dynamic batching on every member).
- teacher    gRPC requests to the served teacher alone: the same image already decoded and resized
             to PIXELS__0 [1,3,H,W] float32 (no decode, no BRISQUE, no student, no detector).
- inprocess  the same pipeline in this Python process (iqaguard.bench.inprocess: the server's Preprocessor
             code and the same TorchScript files, torch.inference_mode), one image per call, called
             from c threads; no batching across requests, no RPC, no extra processes. Each stage runs
             at most as many calls at once as the server runs instances of it (read from the server:
             e.g. 2 preprocessors, 1 teacher, 1 student, 1 detector), so both sides have the same
             executors; torch's intra-op thread count is the library default in both (recorded, with
             the OMP_* environment, which the embedded server inherits from this process).
The levels run in turn, and within a level the three targets run back to back so that a change in
background load on a shared machine hits all three alike. Ratios are of throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc.aio as grpcaio
from PIL import Image

from iqaguard.bench.inprocess import InProcessPipeline
from iqaguard.bench.loadgen import (
    TABLE_HEADER,
    LoadResult,
    add_run_options,
    amount,
    ensemble_call,
    measure,
    teacher_call,
)
from iqaguard.bench.speed_repository import DEFAULT_BENCH_REPOSITORY, speed_repository
from iqaguard.contract import BUILT_MEMBERS, ENSEMBLE, PREPROCESSOR, TEACHER
from iqaguard.imaging import bytes_to_pixels
from iqaguard.launcher.embedded import Endpoints, embedded_server
from iqaguard.launcher.process import server_ready
from iqaguard.log import cli_logging
from iqaguard.repository.layout import latest_version, model_file, read_input_size
from iqaguard.repository.manifest import artifact_meta
from iqaguard.repository.sets import ModelSet, set_for_ensemble

TARGETS = ("ensemble", "teacher", "inprocess")
RATIO_TARGETS = {"ensemble/inprocess": 0.9, "ensemble/teacher": 0.85}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")
DEFAULT_JSON = Path("reports") / "bench" / "benchmark.json"  # under the working directory


def sample_jpeg() -> bytes:
    """The request payload: scikit-image's chelsea photo (451×300) as a quality-90 JPEG."""
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def conditions(repository: Path, image: bytes, size: tuple[int, int], model_set: ModelSet) -> dict[str, object]:
    """What the figures depend on: machine, load, libraries, threads, models, payload."""
    members = {}
    for name in model_set.members:
        version = latest_version(repository / name)
        if version is not None:
            members[name] = {"version": version, **artifact_meta(model_file(repository, name, version))}
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cuda": torch.cuda.is_available(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_intra_op_threads_in_process": torch.get_num_threads(),
        "thread_environment": {key: os.environ.get(key) for key in THREAD_VARIABLES},
        "repository": str(repository),
        "ensemble": model_set.ensembles[0],
        "members": members,
        "input_size": list(size),
        "payload": {"format": "JPEG q90", "bytes": len(image), "source": "skimage.data.chelsea 451x300"},
    }


def ratios(results: list[LoadResult]) -> dict[str, dict[str, float]]:
    """Throughput ratios per concurrency level and at each target's best level ("peak")."""
    by_level: dict[int, dict[str, float]] = {}
    for result in results:
        by_level.setdefault(result.concurrency, {})[result.target] = result.throughput
    out: dict[str, dict[str, float]] = {}
    for name in RATIO_TARGETS:
        top, bottom = name.split("/")
        levels = {str(c): t[top] / t[bottom] for c, t in sorted(by_level.items()) if t.get(bottom) and top in t}
        peaks = {target: max((t.get(target, 0.0) for t in by_level.values()), default=0.0) for target in (top, bottom)}
        if peaks[bottom] > 0:
            levels["peak"] = peaks[top] / peaks[bottom]
        out[name] = levels
    return out


def print_ratios(table: dict[str, dict[str, float]]) -> None:
    """Print each ratio per level and at peak throughput, against its target."""
    for name, levels in table.items():
        cells = "  ".join(f"c={level} {value:.3f}" for level, value in levels.items() if level != "peak")
        print(f"{name:<19} {cells}")
        if "peak" in levels:
            target, peak = RATIO_TARGETS[name], levels["peak"]
            status = "meets" if peak >= target else "BELOW"
            print(f"{'':<19} at peak throughput: {peak:.3f} ({status} target >= {target})")


async def served_instances(client: grpcaio.InferenceServerClient, model_set: ModelSet) -> dict[str, int]:
    """How many instances the server runs of each pipeline stage of the set (its resolved instance_group
    counts), keyed by stage (iqa_preprocess, teacher, student, detector)."""
    counts = {}
    for name in (PREPROCESSOR, *BUILT_MEMBERS):
        config = (await client.get_model_config(model_set.model(name), as_json=True))["config"]
        counts[name] = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
    return counts


async def run(
    args: argparse.Namespace, endpoints: Endpoints, repository: Path, image: bytes, facts: dict[str, object],
    model_set: ModelSet,
) -> list[LoadResult]:
    loop = asyncio.get_running_loop()
    results: list[LoadResult] = []
    with ThreadPoolExecutor(max_workers=max(args.concurrency), thread_name_prefix="inprocess") as threads:
        async with grpcaio.InferenceServerClient(endpoints.grpc_url) as client:
            instances = await served_instances(client, model_set)
            facts["instances_served_and_in_process"] = instances
            pipeline = InProcessPipeline(repository, instances, model_set)
            pixels = bytes_to_pixels(image, pipeline.size)
            calls = {
                "ensemble": ensemble_call(client, image, args.ensemble),
                "teacher": teacher_call(client, pixels, model_set.model(TEACHER)),
                "inprocess": lambda: loop.run_in_executor(threads, pipeline, image),
            }
            print(TABLE_HEADER, flush=True)
            for level in args.concurrency:
                for target in args.targets:
                    warmup = max(args.warmup, level)
                    result = await measure(target, calls[target], level, warmup=warmup, **amount(args))  # type: ignore[arg-type]
                    print(result.row(), flush=True)
                    results.append(result)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m iqaguard.bench.benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--repository", type=Path,
        help=f"a built model repository (default: the random-weight imagenet speed set, {DEFAULT_BENCH_REPOSITORY})",
    )  # fmt: skip
    parser.add_argument(
        "--ensemble", default=ENSEMBLE,
        help=f"the ensemble benchmarked, {ENSEMBLE} or {ENSEMBLE}_<set>; its set's teacher and members are the "
        "other targets (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--url", help="gRPC host:port of a running server serving --repository (default: start one)")
    parser.add_argument("--http-url", help="its HTTP host:port, to check readiness (default: none checked)")
    parser.add_argument("--image", type=Path, help="encoded image sent with every request (default: chelsea JPEG)")
    parser.add_argument(
        "--targets", type=lambda text: tuple(text.split(",")), default=TARGETS,
        help="default: ensemble,teacher,inprocess",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file (default: reports/bench/...)")
    add_run_options(parser)
    args = parser.parse_args(argv)
    if unknown := set(args.targets) - set(TARGETS):
        parser.error(f"unknown targets {sorted(unknown)}; choose from {TARGETS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli_logging()
    repository = (args.repository or speed_repository()).resolve()
    image = args.image.read_bytes() if args.image else sample_jpeg()
    try:
        model_set = set_for_ensemble(repository, args.ensemble)
    except KeyError as error:
        raise SystemExit(f"benchmark: {error.args[0]}") from None
    size = read_input_size(repository / model_set.preprocessor)
    facts = conditions(repository, image, size, model_set)
    print(json.dumps(facts, indent=1), flush=True)
    if not os.environ.get("OMP_WAIT_POLICY"):
        # The server is several processes with their own OpenMP pools; spinning ones compete for the cores.
        print(
            "note: OMP_WAIT_POLICY is unset: the embedded server's backend processes default to PASSIVE, "
            "but this process's OpenMP threads spin-wait; `make bench` sets PASSIVE for both",
            flush=True,
        )
    if args.url:
        if args.http_url and not server_ready(args.http_url):
            raise SystemExit(f"no Triton server ready at {args.http_url}")
        endpoints = Endpoints(args.url, args.http_url or "")
        results = asyncio.run(run(args, endpoints, repository, image, facts, model_set))
    else:
        with embedded_server(repository, args.json.parent / "triton.log") as endpoints:
            results = asyncio.run(run(args, endpoints, repository, image, facts, model_set))
    facts["load_average_at_end"] = os.getloadavg()
    table = ratios(results)
    print()
    print_ratios(table)
    report = {
        "what": __doc__,
        "conditions": facts,
        "settings": {"concurrency": list(args.concurrency), "warmup": args.warmup, **amount(args)},
        "results": [asdict(result) for result in results],
        "ratios": table,
        "ratio_targets": RATIO_TARGETS,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    print(f"\nwrote {args.json}")
    return 1 if any(result.errors for result in results) else 0


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
