"""Thin clients for the robust_classifier ensemble: sync and asyncio, gRPC and HTTP, one typed result per image.

    from client import Classifier, ConnectionSettings
    with Classifier(ConnectionSettings(protocol="grpc", url="127.0.0.1:8001")) as classifier:
        answer = classifier.classify(open("cat.jpg", "rb").read(), "cat.jpg")
        print(answer.label, answer.verdict, answer.quality, answer.suspicion)
"""

from client.async_client import AsyncClassifier
from client.connection import ConnectionSettings, RetryPolicy
from client.results import (
    Classification,
    ClassificationError,
    ImageRejectedError,
    Label,
    ResponseError,
    ServerUnavailableError,
)
from client.sync_client import Classifier, Reply

__all__ = [
    "AsyncClassifier",
    "Classification",
    "ClassificationError",
    "Classifier",
    "ConnectionSettings",
    "ImageRejectedError",
    "Label",
    "Reply",
    "ResponseError",
    "RetryPolicy",
    "ServerUnavailableError",
]
