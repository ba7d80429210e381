"""Triton Python-backend glue for iqa_preprocess; the work itself is iqaguard.in_triton.preprocess."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from iqaguard.in_triton.busy import busy
from iqaguard.in_triton.guard_metrics import InvalidInputMetrics
from iqaguard.in_triton.large_requests import LargeRequestGate, RequestRefused, slot_directory
from iqaguard.in_triton.preprocess import Preprocessor, RequestBudget
from iqaguard.repository.layout import read_input_size
from iqaguard.repository.sets import set_label


class TritonPythonModel:
    """Decode, validate, resize and score each request's images; bad requests fail alone."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.preprocessor = Preprocessor(
            size=read_input_size(args["model_repository"]),
            max_pixels=int(params["max_pixels"]),
            max_bytes=int(params["max_bytes"]),
            budget=RequestBudget(
                max_items=int(params["max_request_items"]),
                max_bytes=int(params["max_request_bytes"]),
                max_pixels=int(params["max_request_pixels"]),
            ),
            large=LargeRequestGate(
                slot_directory(args["model_name"]),
                max_large=int(params["max_concurrent_large_requests"]),
                large_pixels=int(params["large_request_pixels"]),
            ),
        )
        self.invalid_inputs = InvalidInputMetrics(pb_utils, set_label(args["model_repository"], args["model_name"]))

    def execute(self, requests: list) -> list:
        with busy():
            return self._execute(requests)

    def _execute(self, requests: list) -> list:
        batches = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "IMAGE")
            batches.append([bytes(item) for item in tensor.as_numpy().reshape(-1)])
        responses = []
        for result in self.preprocessor.run(batches):
            if isinstance(result, RequestRefused):
                error = pb_utils.TritonError(str(result), pb_utils.TritonError.UNAVAILABLE)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            if isinstance(result, Exception):
                self.invalid_inputs.record(getattr(result, "kind", "undecodable"))
                error = pb_utils.TritonError(str(result), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("PIXELS", result.pixels),
                        pb_utils.Tensor("IQA", np.ascontiguousarray(result.iqa, dtype=np.float32)),
                        pb_utils.Tensor("QUALITY", np.ascontiguousarray(result.quality, dtype=np.float32)),
                        pb_utils.Tensor("SIGNATURE", result.signature),
                    ]
                )
            )
        return responses
