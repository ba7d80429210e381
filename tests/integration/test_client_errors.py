"""Client mistakes are INVALID_ARGUMENT naming the tensor and the rule, sent to the ensemble or a member."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support.images import encode, png_header_claiming
from tritonclient.utils import InferenceServerException

from iqaguard.contract import ENSEMBLE
from iqaguard.launcher.process import TritonServer

pytestmark = pytest.mark.integration
INVALID = "StatusCode.INVALID_ARGUMENT"


def _refusal(client: grpcclient.InferenceServerClient, model: str, tensor: grpcclient.InferInput) -> str:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [tensor])
    assert caught.value.status() == INVALID, caught.value
    return caught.value.message()


def _pixels(array: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("PIXELS__0", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


def _images(items: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("IMAGE", [len(items), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(items, dtype=np.object_).reshape(-1, 1))
    return tensor


@pytest.mark.parametrize("model", ["teacher", "student"])
@pytest.mark.parametrize(
    ("pixels", "rule"),
    [
        (np.full((1, 3, 16, 16), np.nan, np.float32), "NaN or infinite"),
        (np.full((2, 3, 16, 16), -np.inf, np.float32), "NaN or infinite"),
        (np.zeros((1, 3, 1024, 1024), np.float32), "MAX_ITEM_ELEMENTS is 786432"),
        (np.zeros((1, 3, 0, 16), np.float32), "empty dimension"),
    ],
    ids=["nan", "inf", "too large", "empty"],
)
def test_members_refuse_inputs_breaking_their_rules(
    triton_server: TritonServer, model: str, pixels: np.ndarray, rule: str
) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    message = _refusal(client, model, _pixels(pixels))
    assert model in message and "PIXELS__0" in message and rule in message, message
    good = client.infer(model, [_pixels(np.full((1, 3, 16, 16), 0.5, np.float32))])
    assert np.isfinite(good.as_numpy("LOGITS__0")).all()


def test_ensemble_refuses_requests_over_budget_and_bad_images(triton_server: TritonServer, photo: np.ndarray) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    small = encode(photo[:32, :32], "PNG")
    assert "max_request_items is 16" in _refusal(client, ENSEMBLE, _images([small] * 17))
    claimed = _refusal(client, ENSEMBLE, _images([png_header_claiming(6000, 6000)] * 2))
    assert "IMAGE" in claimed and "max_request_pixels is 48000000" in claimed
    assert "invalid image" in _refusal(client, ENSEMBLE, _images([b"junk"]))
    assert client.infer(ENSEMBLE, [_images([small] * 16)]).as_numpy("PROBS").shape == (16, 10)
