"""A batched TorchScript runner that follows the LibTorch backend's config conventions.

Naming rules, as in Triton's LibTorch backend: inputs named `<name>__<index>` are passed to
forward() in index order, otherwise config input names must match forward()'s argument names;
outputs named `<name>__<index>` take element <index> of forward()'s tuple (a lone tensor is index 0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

_INDEXED_NAME = re.compile(r"^(?P<stem>.+)__(?P<index>\d+)$")


class RunnerConfigError(ValueError):
    """The model config does not fit the TorchScript module."""


class InvalidInputError(ValueError):
    """A request's input breaks a rule the model states: the client's mistake, not a server fault."""


def check_input(name: str, array: np.ndarray, max_item_elements: int = 0) -> None:
    """Refuse empty dimensions, items over `max_item_elements` (0: no limit) and non-finite floats."""
    shape = "x".join(str(d) for d in array.shape)
    if 0 in array.shape[1:]:
        raise InvalidInputError(f"input {name} has an empty dimension (shape {shape})")
    per_item = int(np.prod(array.shape[1:], dtype=np.int64))
    if max_item_elements and per_item > max_item_elements:
        raise InvalidInputError(
            f"input {name} has {per_item} elements per item (shape {shape}); MAX_ITEM_ELEMENTS is {max_item_elements}"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInputError(f"input {name} holds NaN or infinite values; only finite values are accepted")


def indexed_name(name: str) -> int | None:
    """Return <index> of a `<name>__<index>` tensor name, or None."""
    match = _INDEXED_NAME.match(name)
    return int(match["index"]) if match else None


def forward_argument_names(module: torch.jit.ScriptModule) -> list[str]:
    """forward()'s argument names, without `self`."""
    return [argument.name for argument in module.forward.schema.arguments[1:]]


def order_inputs(config_names: Sequence[str], forward_names: Sequence[str]) -> list[str]:
    """Config input names in the order forward() takes them."""
    indices = [indexed_name(name) for name in config_names]
    if all(index is not None for index in indices):
        if sorted(indices) != list(range(len(indices))):  # type: ignore[type-var]
            raise RunnerConfigError(f"input indices must be 0..{len(indices) - 1}, got {config_names}")
        return [name for _, name in sorted(zip(indices, config_names, strict=True))]
    missing = set(config_names) - set(forward_names)
    if missing:
        raise RunnerConfigError(
            f"inputs {sorted(missing)} match neither `<name>__<index>` nor forward() arguments {forward_names}"
        )
    if len(config_names) != len(forward_names):
        raise RunnerConfigError(f"config declares {len(config_names)} inputs, forward() takes {len(forward_names)}")
    return sorted(config_names, key=list(forward_names).index)


def output_positions(config_names: Sequence[str]) -> dict[str, int]:
    """Map each config output name to its element of forward()'s result."""
    positions = {}
    for name in config_names:
        index = indexed_name(name)
        if index is None:
            raise RunnerConfigError(f"output {name!r} must be named `<name>__<index>`")
        positions[name] = index
    return positions


@dataclass(frozen=True)
class OutputSpec:
    """An output as the config declares it."""

    name: str
    position: int
    is_string: bool
    dims: tuple[int, ...]


def _to_numpy(value: object, spec: OutputSpec) -> np.ndarray:
    if spec.is_string:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise RuntimeError(f"output {spec.name} is TYPE_STRING but forward() returned {type(value).__name__}")
        return np.array([item.encode("utf-8") for item in value], dtype=np.object_)
    if not isinstance(value, torch.Tensor):
        raise RuntimeError(f"output {spec.name}: forward() returned {type(value).__name__}, not a tensor")
    return value.detach().to("cpu").contiguous().numpy()


class TorchScriptRunner:
    """Loads one TorchScript module and runs many requests through it in one forward pass."""

    def __init__(
        self,
        model_path: Path,
        input_names: Sequence[str],
        outputs: Sequence[OutputSpec],
        device: torch.device,
        inference_mode: bool = True,
        max_item_elements: int = 0,
    ) -> None:
        if not model_path.is_file():
            raise FileNotFoundError(f"TorchScript file {model_path} is missing; build the model set first")
        self.device = device
        self.inference_mode = inference_mode
        self.module = torch.jit.load(str(model_path), map_location=device)
        self.module.eval()
        self.input_names = order_inputs(input_names, forward_argument_names(self.module))
        self.outputs = list(outputs)
        self.max_item_elements = max_item_elements

    def _check(self, request: dict[str, np.ndarray]) -> None:
        for name in self.input_names:
            check_input(name, request[name], self.max_item_elements)

    def _forward(self, inputs: list[np.ndarray]) -> tuple:
        tensors = [torch.from_numpy(np.ascontiguousarray(array)).to(self.device) for array in inputs]
        with torch.inference_mode(self.inference_mode):
            result = self.module(*tensors)
        return result if isinstance(result, tuple | list) and not _is_string_list(result) else (result,)

    def _run_group(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        sizes = [len(request[self.input_names[0]]) for request in requests]
        merged = [np.concatenate([request[name] for request in requests]) for name in self.input_names]
        result = self._forward(merged)
        split_points = np.cumsum(sizes)[:-1]
        per_request: list[dict[str, np.ndarray]] = [{} for _ in requests]
        for spec in self.outputs:
            if spec.position >= len(result):
                raise RuntimeError(
                    f"output {spec.name} wants element {spec.position}; forward() returned {len(result)}"
                )
            array = _to_numpy(result[spec.position], spec)
            if len(array) != sum(sizes):
                raise RuntimeError(f"output {spec.name} has batch {len(array)}, expected {sum(sizes)}")
            for slot, part in zip(per_request, np.split(array, split_points), strict=True):
                slot[spec.name] = part.reshape(len(part), *[-1 if d < 0 else d for d in spec.dims])
        return per_request

    def run(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | Exception]:
        """Run requests batched by matching trailing shapes; a failing request fails alone.

        A request whose input breaks a rule (check_input) yields InvalidInputError and is never run.
        """
        results: list[dict[str, np.ndarray] | Exception] = [RuntimeError("not run")] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            try:
                self._check(request)
            except InvalidInputError as error:
                results[index] = error
                continue
            key = tuple((request[name].shape[1:], request[name].dtype.str) for name in self.input_names)
            groups.setdefault(key, []).append(index)
        for members in groups.values():
            try:
                for index, output in zip(members, self._run_group([requests[i] for i in members]), strict=True):
                    results[index] = output
            except Exception:
                # Isolate the culprit: rerun each request of the failed group on its own.
                for index in members:
                    try:
                        results[index] = self._run_group([requests[index]])[0]
                    except Exception as error:
                        results[index] = RuntimeError(_summary(error))
        return results


def _summary(error: Exception) -> str:
    """The last line of an error: TorchScript prefixes the real message with its interpreter trace."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _is_string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
