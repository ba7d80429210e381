"""Locust load test of a robust_classifier ensemble over gRPC and HTTP (tritonclient under gevent).

    locust -f iqaguard/bench/locustfile.py --headless -u 8 -r 8 -t 30s \\
        --grpc-url 127.0.0.1:8001 --http-url 127.0.0.1:8000 --csv reports/locust/run --html reports/locust/run.html

`python -m iqaguard.bench.loadtest` (`make loadtest`) wraps this and starts an embedded server if none runs.
Each request is one image from the pool (see iqaguard.bench.image_pool), reported to Locust as
request_type "gRPC" or "HTTP" and name "<ensemble> [<kind>]"; a verdict of low_quality or
adversarial is a successful answer, an error (or an unexpected response) a failure.

Knobs (Locust options, or the environment variables in brackets):
  --ensemble NAME [IQAGUARD_ENSEMBLE]           the ensemble called: robust_classifier (default) or
                                                robust_classifier_<set> for another model set
  --pool-dir DIR [IQAGUARD_POOL_DIR]            clean/ distorted/ adversarial/ images (default: the samples of
                                                the ensemble's set's build in --model-repository, else a
                                                synthetic pool)
  --model-repository DIR [IQAGUARD_REPOSITORY]  the served repository, whose build's samples are the default pool
  --kind-weights C,D,A [IQAGUARD_KIND_WEIGHTS]  how often each kind is sent (default 6,3,1)
  --grpc-weight N, --http-weight N              share of users per protocol (default 1 each); run only one
                                                protocol by naming its class: `locust ... TritonGrpcUser`
  --wait-min S, --wait-max S                    think time between a user's requests (default 0, 0)
  --top-k K, --request-timeout S, --retries N   client settings (retries default 0: failures show up)
  --invalid-share F [IQAGUARD_INVALID_SHARE]    share of requests sending a bad input (truncated, not an
                                                image, empty; default 0), named "<ensemble> [invalid]": a
                                                success when the server refuses it as the client's mistake
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

# Importing locust patches the standard library for gevent. gRPC's gevent support must be switched
# on after that patching and before any gRPC channel exists (grpc.experimental.gevent docs).
from locust import User, events, task
from locust.env import Environment

import grpc.experimental.gevent as grpc_gevent  # isort: skip

grpc_gevent.init_gevent()

from iqaguard_client.connection import ConnectionSettings, RetryPolicy  # noqa: E402
from iqaguard_client.results import ClassificationError, ImageRejectedError  # noqa: E402
from iqaguard_client.sync_client import Classifier  # noqa: E402

from iqaguard.bench.image_pool import ImagePool, PoolImage, image_pool, kind_weights  # noqa: E402
from iqaguard.contract import ENSEMBLE  # noqa: E402
from iqaguard.repository.layout import default_repository  # noqa: E402

log = logging.getLogger(__name__)
_pool: ImagePool | None = None


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    group = parser.add_argument_group("iqaguard")
    group.add_argument("--grpc-url", default="127.0.0.1:8001", env_var="IQAGUARD_GRPC_URL", help="gRPC host:port")
    group.add_argument("--http-url", default="127.0.0.1:8000", env_var="IQAGUARD_HTTP_URL", help="HTTP host:port")
    group.add_argument(
        "--ensemble", default=ENSEMBLE, env_var="IQAGUARD_ENSEMBLE",
        help=f"the ensemble to call: {ENSEMBLE} or {ENSEMBLE}_<set> (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--pool-dir", default="", env_var="IQAGUARD_POOL_DIR",
        help="folder with clean/, distorted/, adversarial/ images (default: the held-out samples of the build in "
             "--model-repository, else a synthetic pool)",
    )  # fmt: skip
    group.add_argument(
        "--model-repository", default=str(default_repository()), env_var="IQAGUARD_REPOSITORY",
        help="the served model repository; its teacher's latest manifest names the build's sample folder",
    )  # fmt: skip
    group.add_argument(
        "--kind-weights", default="6,3,1", env_var="IQAGUARD_KIND_WEIGHTS",
        help="relative frequency of clean,distorted,adversarial images",
    )  # fmt: skip
    group.add_argument("--grpc-weight", type=int, default=1, env_var="IQAGUARD_GRPC_WEIGHT", help="gRPC users' share")
    group.add_argument("--http-weight", type=int, default=1, env_var="IQAGUARD_HTTP_WEIGHT", help="HTTP users' share")
    group.add_argument("--wait-min", type=float, default=0.0, env_var="IQAGUARD_WAIT_MIN", help="seconds")
    group.add_argument("--wait-max", type=float, default=0.0, env_var="IQAGUARD_WAIT_MAX", help="seconds")
    group.add_argument("--top-k", type=int, default=5, env_var="IQAGUARD_TOP_K")
    group.add_argument(
        "--invalid-share", type=float, default=0.0, env_var="IQAGUARD_INVALID_SHARE",
        help="share of requests that send a bad input, expected to be refused (default: 0)",
    )  # fmt: skip
    group.add_argument("--request-timeout", type=float, default=60.0, env_var="IQAGUARD_REQUEST_TIMEOUT")
    group.add_argument("--retries", type=int, default=0, env_var="IQAGUARD_RETRIES", help="on UNAVAILABLE only")


@events.init.add_listener
def _configure(environment: Environment, **_kwargs: object) -> None:
    global _pool
    options = environment.parsed_options
    if options is None:  # imported as a library, not run by locust
        return
    kind_weights(options.kind_weights)
    if options.wait_max < options.wait_min or options.wait_min < 0:
        raise ValueError("--wait-min must be >= 0 and <= --wait-max")
    if options.grpc_weight < 1 or options.http_weight < 1:
        raise ValueError("user weights must be >= 1; to run one protocol only, name its user class")
    TritonGrpcUser.weight, TritonHttpUser.weight = options.grpc_weight, options.http_weight
    _pool = image_pool(options.pool_dir or None, repository=options.model_repository, ensemble=options.ensemble)
    log.info("iqaguard locust: image pool: %s", _pool.describe())


class TritonUser(User):
    """One simulated client: its own connection, one image per request, events reported to Locust."""

    abstract = True
    protocol = "grpc"
    request_type = "gRPC"

    def wait_time(self) -> float:
        options = self.environment.parsed_options
        return random.uniform(options.wait_min, options.wait_max)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.weights = kind_weights(options.kind_weights)
        self.rng = random.Random()
        settings = ConnectionSettings(
            protocol=self.protocol,  # type: ignore[arg-type]
            url=options.grpc_url if self.protocol == "grpc" else options.http_url,
            timeout_s=options.request_timeout,
            retry=RetryPolicy(retries=options.retries),
        )
        self.classifier = Classifier(settings, top_k=options.top_k, model=options.ensemble)

    def on_stop(self) -> None:
        self.classifier.close()

    @task
    def classify(self) -> None:
        if _pool is None:
            raise RuntimeError("image pool not loaded: run this file with locust")
        if self.rng.random() < self.environment.parsed_options.invalid_share:
            self.send_invalid(_pool.pick(self.weights, self.rng))
            return
        image = _pool.pick(self.weights, self.rng)
        started = time.perf_counter()
        exception: Exception | None = None
        response_length, context = 0, {"image": image.name}
        try:
            reply = self.classifier.classify_reply(image.data, image.name)
            response_length = reply.response_bytes
            context["verdict"] = reply.result.verdict
        except ClassificationError as error:
            exception = error
        self.report(image.kind, started, response_length, exception, context)


    def send_invalid(self, image: PoolImage) -> None:
        """Send a bad input made from `image`; only a refusal as the client's mistake counts as success."""
        kind, data = self.rng.choice(invalid_inputs(image.data))
        started = time.perf_counter()
        exception: Exception | None = None
        try:
            self.classifier.classify_reply(data, f"{kind} {image.name}")
            exception = AssertionError(f"a bad input ({kind}) was answered instead of refused")
        except ImageRejectedError:
            pass  # refused as asked: INVALID_ARGUMENT naming the rule
        except ClassificationError as error:
            exception = error
        self.report("invalid", started, 0, exception, {"image": image.name, "invalid": kind})

    def report(
        self, kind: str, started: float, response_length: int, exception: Exception | None, context: dict
    ) -> None:
        """One request to Locust, named `<ensemble> [<kind>]`, timed from `started` (perf_counter)."""
        events.request.fire(
            request_type=self.request_type,
            name=f"{self.environment.parsed_options.ensemble} [{kind}]",
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=response_length,
            exception=exception,
            context=context,
        )


def invalid_inputs(data: bytes) -> list[tuple[str, bytes]]:
    """Bad inputs a careless client sends: a truncated file, bytes that are no image, nothing."""
    return [("truncated", data[: max(1, len(data) // 3)]), ("not an image", b"%PDF-1.4 " + data[:64]), ("empty", b"")]


class TritonGrpcUser(TritonUser):
    """Calls the ensemble with tritonclient.grpc (gevent-enabled gRPC)."""

    protocol = "grpc"
    request_type = "gRPC"


class TritonHttpUser(TritonUser):
    """Calls the ensemble with tritonclient.http (geventhttpclient)."""

    protocol = "http"
    request_type = "HTTP"
