"""Triton Python-based backend `pytorch`: serves `platform: "pytorch_libtorch"` TorchScript models.

Copied into the embedded server's backend directory as `pytorch/model.py` by the launcher; the
logic lives in iqaguard.in_triton.torchscript_runner. Honours the LibTorch backend's parameters
INFERENCE_MODE, DISABLE_OPTIMIZED_EXECUTION, INTRA_OP_THREAD_COUNT and INTER_OP_THREAD_COUNT, and
iqaguard's MAX_ITEM_ELEMENTS (stock LibTorch ignores it). Inputs that break a rule (empty dimension,
over MAX_ITEM_ELEMENTS, NaN/Inf) fail their own request with INVALID_ARG; other failures are INTERNAL.
"""

import json
from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils

from iqaguard.in_triton.busy import busy
from iqaguard.in_triton.torchscript_runner import InvalidInputError, OutputSpec, TorchScriptRunner, output_positions


def _parameter(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def _device(args: dict) -> torch.device:
    if args.get("model_instance_kind") == "GPU":
        return torch.device("cuda", int(args.get("model_instance_device_id", 0)))
    return torch.device("cpu")


class TritonPythonModel:
    """One model instance: a TorchScript module on the device Triton assigned."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.name = config["name"]
        if any(item["data_type"] == "TYPE_STRING" for item in config["input"]):
            raise pb_utils.TritonModelException(f"{self.name}: TYPE_STRING inputs are not supported")
        if _parameter(config, "DISABLE_OPTIMIZED_EXECUTION", "false").lower() == "true":
            torch._C._set_graph_executor_optimize(False)
        intra = int(_parameter(config, "INTRA_OP_THREAD_COUNT", "0"))
        if intra > 0:
            torch.set_num_threads(intra)
        inter = int(_parameter(config, "INTER_OP_THREAD_COUNT", "0"))
        if inter > 0:
            torch.set_num_interop_threads(inter)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        filename = config.get("default_model_filename") or "model.pt"
        positions = output_positions([item["name"] for item in config["output"]])
        outputs = [
            OutputSpec(
                name=item["name"],
                position=positions[item["name"]],
                is_string=item["data_type"] == "TYPE_STRING",
                dims=tuple(int(d) for d in item["dims"]),
            )
            for item in config["output"]
        ]
        self.runner = TorchScriptRunner(
            model_path=version_dir / filename,
            input_names=[item["name"] for item in config["input"]],
            outputs=outputs,
            device=_device(args),
            inference_mode=_parameter(config, "INFERENCE_MODE", "true").lower() == "true",
            max_item_elements=int(_parameter(config, "MAX_ITEM_ELEMENTS", "0")),
        )

    def execute(self, requests: list) -> list:
        with busy():
            return self._execute(requests)

    def _execute(self, requests: list) -> list:
        batch = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.runner.input_names}
            for request in requests
        ]
        responses = []
        for result in self.runner.run(batch):
            if isinstance(result, Exception):
                invalid = isinstance(result, InvalidInputError)
                code = pb_utils.TritonError.INVALID_ARG if invalid else pb_utils.TritonError.INTERNAL
                error = pb_utils.TritonError(f"{self.name}: {result}", code)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            else:
                tensors = [pb_utils.Tensor(name, array) for name, array in result.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
