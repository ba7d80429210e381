"""The black-box attacker's only access: the served ensemble over gRPC, as any client has it."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image

from iqaguard.contract import INPUT_IMAGE, OUTPUT_PROBS, OUTPUT_SUSPICION, OUTPUT_VERDICT
from iqaguard.redteam.square import Answer

ITEMS_PER_REQUEST = 16  # the preprocessor's max_request_items


def png(image: np.ndarray) -> bytes:
    """A uint8 [H,W,3] image as PNG (lossless: the server sees exactly these pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


class ServedOracle:
    """Sends images to an ensemble (16 per request, a few requests at once) and counts the queries."""

    def __init__(self, url: str, ensemble: str, concurrency: int = 4) -> None:
        self.url, self.ensemble = url, ensemble
        self.queries = 0
        self._clients = [grpcclient.InferenceServerClient(url) for _ in range(concurrency)]
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="oracle")

    def _send(self, client: grpcclient.InferenceServerClient, images: np.ndarray) -> list[Answer]:
        tensor = grpcclient.InferInput(INPUT_IMAGE, [len(images), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([png(image) for image in images], dtype=np.object_).reshape(-1, 1))
        result = client.infer(self.ensemble, [tensor], client_timeout=120)
        probs, suspicion = result.as_numpy(OUTPUT_PROBS), result.as_numpy(OUTPUT_SUSPICION)
        verdicts = result.as_numpy(OUTPUT_VERDICT)
        return [Answer(probs[i], float(suspicion[i, 0]), verdicts[i, 0].decode()) for i in range(len(images))]

    def __call__(self, images: np.ndarray) -> list[Answer]:
        chunks = [images[i : i + ITEMS_PER_REQUEST] for i in range(0, len(images), ITEMS_PER_REQUEST)]
        futures = [self._pool.submit(self._send, self._clients[i % len(self._clients)], chunk)
                   for i, chunk in enumerate(chunks)]  # fmt: skip
        answers = [answer for future in futures for answer in future.result()]
        self.queries += len(images)
        return answers

    def close(self) -> None:
        self._pool.shutdown()
        for client in self._clients:
            client.close()
