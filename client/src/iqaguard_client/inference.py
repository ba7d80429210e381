"""Build one ensemble request for tritonclient (gRPC or HTTP, sync or asyncio) and size its response."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from iqaguard_client.contract import ENSEMBLE_OUTPUTS, INPUT_IMAGE, OUTPUT_PROBS
from iqaguard_client.results import ClassificationError

DEFAULT_TOP_K = 5

# What a failed call can raise, across tritonclient.grpc (InferenceServerException only),
# tritonclient.http (plus socket errors from geventhttpclient) and the aio clients (plus aiohttp's).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (InferenceServerException, OSError, asyncio.TimeoutError)
try:
    import aiohttp

    TRANSPORT_ERRORS += (aiohttp.ClientError,)
except ImportError:  # pragma: no cover - aiohttp comes with tritonclient[http]
    pass


def transport(protocol: str, asynchronous: bool) -> ModuleType:
    """The tritonclient module for a protocol: tritonclient.grpc, .grpc.aio, .http or .http.aio."""
    if protocol == "grpc":
        if asynchronous:
            import tritonclient.grpc.aio as module
        else:
            import tritonclient.grpc as module
    elif protocol == "http":
        if asynchronous:
            import tritonclient.http.aio as module
        else:
            import tritonclient.http as module
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    return module


def ensemble_request(module: ModuleType, data: bytes, top_k: int) -> tuple[list[Any], list[Any]]:
    """Inputs and requested outputs for one image: IMAGE [1,1] BYTES; PROBS as the top-k named classes."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    image = module.InferInput(INPUT_IMAGE, [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[bytes(data)]], dtype=np.object_))
    outputs = [
        module.InferRequestedOutput(name, class_count=top_k if name == OUTPUT_PROBS else 0)
        for name in ENSEMBLE_OUTPUTS
    ]
    return [image], outputs


def response_size(result: Any) -> int:
    """Bytes of the server's answer: the protobuf message (gRPC), or JSON header + binary outputs (HTTP)."""
    response = result.get_response()
    if hasattr(response, "ByteSize"):
        return int(response.ByteSize())
    binary = sum(
        int(output.get("parameters", {}).get("binary_data_size", 0)) for output in response.get("outputs", [])
    )
    return len(json.dumps(response, separators=(",", ":"))) + binary


def read_image(path: Path, name: str) -> bytes:
    """Read an image file's bytes; an unreadable file becomes a ClassificationError naming it."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise ClassificationError(name, f"cannot read file: {error.strerror or error}", status="local") from None
