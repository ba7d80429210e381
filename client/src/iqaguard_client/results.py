"""The typed answer for one image, and the errors that name the image they belong to."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tritonclient.utils import InferenceServerException

from iqaguard_client.contract import (
    OUTPUT_PROBS,
    OUTPUT_QUALITY,
    OUTPUT_SUSPICION,
    OUTPUT_VERDICT,
    VERDICT_ACCEPT,
    VERDICTS,
)


@dataclass(frozen=True)
class Label:
    """One of the top-k classes: name (from the server's label file), index in the logits, probability."""

    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class Classification:
    """The ensemble's answer for one image.

    top_k: best classes first. quality: BRISQUE score (~0 pristine … 100+ very poor). suspicion:
    the detector's probability that the classifier's answer is unreliable. verdict: "accept",
    "low_quality" or "adversarial".
    """

    image: str
    top_k: tuple[Label, ...]
    quality: float
    suspicion: float
    verdict: str

    @property
    def accepted(self) -> bool:
        """Whether the detector trusts the classifier's answer."""
        return self.verdict == VERDICT_ACCEPT

    @property
    def label(self) -> str:
        """The most probable class."""
        return self.top_k[0].label

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's --json record)."""
        return {"image": self.image, "ok": True, **{k: v for k, v in asdict(self).items() if k != "image"}}


class ClassificationError(Exception):
    """An image that got no answer. `image` names it; `status` is the transport's code, when any."""

    def __init__(self, image: str, message: str, status: str | None = None) -> None:
        super().__init__(f"{image}: {message}")
        self.image = image
        self.message = message
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's --json record for a failed image)."""
        return {"image": self.image, "ok": False, "error": self.message, "status": self.status}


class ImageRejectedError(ClassificationError):
    """The server refused the image itself (undecodable, truncated, too large, …)."""


class ServerUnavailableError(ClassificationError):
    """The server could not be reached or was not ready, after the configured retries."""


class ResponseError(ClassificationError):
    """The server answered, but not in the shape the ensemble's contract promises."""


_REJECTED_STATUSES = {"StatusCode.INVALID_ARGUMENT", "400"}


def error_for(image: str, error: BaseException, unavailable: bool, attempts: int = 1) -> ClassificationError:
    """Wrap a transport error as the ClassificationError subclass that says what went wrong with `image`."""
    if isinstance(error, InferenceServerException):
        message, status = str(error.message() or error), error.status()
    else:
        message, status = f"{type(error).__name__}: {error}".rstrip(": "), None
    if unavailable:
        tried = f" (after {attempts} attempts)" if attempts > 1 else ""
        return ServerUnavailableError(image, f"server unavailable{tried}: {message}", status)
    if status in _REJECTED_STATUSES:
        return ImageRejectedError(image, message, status)
    return ClassificationError(image, message, status)


def _decode(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def parse_top_k(entries: Any) -> tuple[Label, ...]:
    """Parse the classification extension's "probability:index[:label]" strings, best first."""
    labels = []
    for entry in entries:
        parts = _decode(entry).split(":", 2)
        probability, index = float(parts[0]), int(parts[1])
        labels.append(Label(label=parts[2] if len(parts) == 3 else str(index), index=index, probability=probability))
    return tuple(sorted(labels, key=lambda item: item.probability, reverse=True))


def parse_result(image: str, result: Any) -> Classification:
    """Turn a tritonclient InferResult (gRPC or HTTP) of the ensemble into a Classification."""
    try:
        probs = result.as_numpy(OUTPUT_PROBS)
        quality = result.as_numpy(OUTPUT_QUALITY)
        suspicion = result.as_numpy(OUTPUT_SUSPICION)
        verdict = result.as_numpy(OUTPUT_VERDICT)
        if probs is None or quality is None or suspicion is None or verdict is None:
            raise ValueError("an output is missing")
        answer = Classification(
            image=image,
            top_k=parse_top_k(probs.reshape(-1)),
            quality=float(quality.reshape(-1)[0]),
            suspicion=float(suspicion.reshape(-1)[0]),
            verdict=_decode(verdict.reshape(-1)[0]),
        )
    except (ValueError, IndexError, TypeError) as error:
        raise ResponseError(image, f"malformed response from the server: {error}") from error
    if answer.verdict not in VERDICTS or not answer.top_k:
        raise ResponseError(image, f"malformed response: verdict {answer.verdict!r}, {len(answer.top_k)} labels")
    return answer
