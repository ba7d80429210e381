"""Thin clients for the robust_classifier ensemble: sync and asyncio, gRPC and HTTP, one typed result per image.

    from iqaguard_client import Classifier, ConnectionSettings
    with Classifier(ConnectionSettings(protocol="grpc", url="127.0.0.1:8001")) as classifier:
        answer = classifier.classify(open("cat.jpg", "rb").read(), "cat.jpg")
        print(answer.label, answer.verdict, answer.quality, answer.suspicion)

Names are imported on first use, so `iqaguard_client.contract` alone (what the server side and
the Triton image import) loads neither tritonclient nor aiohttp.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AsyncClassifier": "async_client",
    "Classification": "results",
    "ClassificationError": "results",
    "Classifier": "sync_client",
    "ConnectionSettings": "connection",
    "ImageRejectedError": "results",
    "Label": "results",
    "Reply": "sync_client",
    "ResponseError": "results",
    "RetryPolicy": "connection",
    "ServerUnavailableError": "results",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
