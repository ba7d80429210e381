"""Deep readiness: one tiny real inference through an ensemble, over HTTP, stdlib only.

Triton's /v2/health/ready stays 200 when a Python-backend stub has died; this check does not: it
sends an 8×8 PNG through every step of the ensemble. The embedded launcher's watchdog and the
container probes (`python3 -m iqaguard.launcher.probe`, Kubernetes exec probes, compose healthcheck)
use it. Python 3.10-compatible: it runs on the NGC image's interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import urllib.error
import urllib.request
import zlib

DEFAULT_MODEL = "robust_classifier"
DRAIN_MARKER = "/tmp/iqaguard-draining"  # written by iqaguard.launcher.drain while the server drains
DRAIN_MARKER_ENV = "IQAGUARD_DRAIN_MARKER"  # where to look instead


def tiny_png(size: int = 8) -> bytes:
    """A size×size mid-grey RGB PNG, built without any imaging library."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    rows = b"".join(b"\x00" + b"\x80" * (3 * size) for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _request_body(image: bytes) -> tuple[bytes, int]:
    header = {
        "inputs": [
            {"name": "IMAGE", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 4 + len(image)}}
        ],
        "outputs": [{"name": "VERDICT", "parameters": {"binary_data": False}}],
    }
    encoded = json.dumps(header).encode()
    return encoded + struct.pack("<I", len(image)) + image, len(encoded)


def server_ready(http_url: str, timeout_s: float = 2.0) -> bool:
    """Whether Triton answers /v2/health/ready with 200 at http_url (host:port, no scheme)."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def model_ready(http_url: str, model: str, timeout_s: float = 5.0) -> bool:
    """Whether Triton says `model` is loaded and ready (200 from /v2/models/<model>/ready); an unloaded model
    (e.g. a set an operator took off the server) is not. A model whose stub died still says ready."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/ready", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def deep_ready(http_url: str, model: str = DEFAULT_MODEL, timeout_s: float = 10.0) -> str | None:
    """None when `model` at http_url (host:port) answers a real inference, else why it did not."""
    body, header_length = _request_body(tiny_png())
    request = urllib.request.Request(
        f"http://{http_url}/v2/models/{model}/infer",
        data=body,
        method="POST",
        headers={"Inference-Header-Content-Length": str(header_length), "Content-Type": "application/octet-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        return f"{model}: HTTP {error.code}: {error.read().decode(errors='replace')[:300]}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        return f"{model}: {error}"
    verdicts = [o.get("data") for o in answer.get("outputs", []) if o.get("name") == "VERDICT"]
    return None if verdicts and verdicts[0] else f"{model}: no VERDICT in the answer"


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every model answers; 1 (and why, on stderr) otherwise."""
    parser = argparse.ArgumentParser(prog="python3 -m iqaguard.launcher.probe", description=__doc__)
    parser.add_argument("--url", default="127.0.0.1:8000", help="Triton's HTTP host:port (default: %(default)s)")
    parser.add_argument("--model", action="append", help=f"ensemble to probe; repeatable (default: {DEFAULT_MODEL})")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per inference (default: %(default)s)")
    parser.add_argument(
        "--drain-marker", default=os.environ.get(DRAIN_MARKER_ENV) or DRAIN_MARKER,
        help="not ready while this file exists (default: $IQAGUARD_DRAIN_MARKER, else %(default)s)",
    )
    args = parser.parse_args(argv)
    if os.path.exists(args.drain_marker):
        print("not ready: draining", file=sys.stderr)
        return 1
    problems = [p for m in args.model or [DEFAULT_MODEL] if (p := deep_ready(args.url, m, args.timeout))]
    for problem in problems:
        print(f"not ready: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
