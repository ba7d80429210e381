"""Served: while the large-request slot is taken, a large request is refused alone with UNAVAILABLE (clients
retry it) and ordinary requests are answered; once the slot is free the same large request is answered."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from support.images import encode
from tritonclient.utils import InferenceServerException

from iqaguard.contract import ENSEMBLE, INPUT_IMAGE
from iqaguard.launcher.process import TritonServer

pytestmark = pytest.mark.integration


def _request(client: grpcclient.InferenceServerClient, images: list[bytes]) -> grpcclient.InferResult:
    tensor = grpcclient.InferInput(INPUT_IMAGE, [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_).reshape(-1, 1))
    return client.infer(ENSEMBLE, [tensor], client_timeout=120)


def test_a_large_request_is_refused_for_now_while_the_slot_is_taken(triton_server: TritonServer,
                                                                      photo: np.ndarray) -> None:  # fmt: skip
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    ordinary = encode(photo, "JPEG", quality=90)
    # Two 3000×2500 images claim 15 Mpx in total: over the checked-in large_request_pixels (12 Mpx).
    large = encode(Image.fromarray(photo).resize((3000, 2500)), "PNG", compress_level=1)
    slots = Path(tempfile.gettempdir()) / f"iqaguard-{os.getuid()}" / f"large-{triton_server.pid}-iqa_preprocess"
    assert slots.is_dir(), "the preprocessor's instances share their slots here"
    with open(slots / "large-0.lock", "a") as held:  # max_concurrent_large_requests is 1
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(InferenceServerException) as refused:
            _request(client, [large, large])
        assert _request(client, [ordinary]).as_numpy("PROBS").shape == (1, 10), "ordinary requests go on"
        fcntl.flock(held, fcntl.LOCK_UN)
    assert refused.value.status() == "StatusCode.UNAVAILABLE", refused.value
    assert "busy" in refused.value.message() and "retry" in refused.value.message()
    assert _request(client, [large, large]).as_numpy("PROBS").shape == (2, 10), "answered once the slot is free"
