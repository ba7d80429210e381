"""The TorchScript runner's naming rules, batching and failure isolation, without a server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.fixture_models import fixture_modules

from iqaguard.in_triton.torchscript_runner import (
    InvalidInputError,
    OutputSpec,
    RunnerConfigError,
    TorchScriptRunner,
    order_inputs,
    output_positions,
)


class Picky(torch.nn.Module):
    """Fails on inputs above 100, so one request can poison a batched forward."""

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        if bool((first > 100).any()):
            raise RuntimeError("value above 100")
        total = first.sum(1, keepdim=True) + second.sum(1, keepdim=True)
        return total, ["big" if bool(value > 0) else "small" for value in total[:, 0]]


def test_indexed_inputs_are_ordered_by_index() -> None:
    assert order_inputs(["B__1", "A__0", "C__2"], ["x", "y", "z"]) == ["A__0", "B__1", "C__2"]


def test_named_inputs_follow_forward_arguments() -> None:
    assert order_inputs(["second", "first"], ["first", "second"]) == ["first", "second"]


@pytest.mark.parametrize(
    ("names", "forward"),
    [(["A__0", "B__2"], ["a", "b"]), (["nope"], ["first"]), (["first"], ["first", "second"])],
)
def test_bad_input_names_are_refused(names: list[str], forward: list[str]) -> None:
    with pytest.raises(RunnerConfigError):
        order_inputs(names, forward)


def test_outputs_need_indexed_names() -> None:
    assert output_positions(["PROBS__1", "LOGITS__0"]) == {"PROBS__1": 1, "LOGITS__0": 0}
    with pytest.raises(RunnerConfigError):
        output_positions(["PROBS"])


def _teacher_runner(tmp_path: Path) -> tuple[TorchScriptRunner, torch.jit.ScriptModule]:
    module = fixture_modules()["teacher"]
    path = tmp_path / "model.pt"
    torch.jit.save(module, str(path))
    outputs = [OutputSpec("LOGITS__0", 0, False, (-1,)), OutputSpec("PROBS__1", 1, False, (-1,))]
    return TorchScriptRunner(path, ["PIXELS__0"], outputs, torch.device("cpu")), torch.jit.load(str(path))


def test_mixed_batch_equals_in_process_forward(tmp_path: Path) -> None:
    runner, reference = _teacher_runner(tmp_path)
    rng = np.random.default_rng(0)
    requests = [{"PIXELS__0": rng.random((size, 3, 32, 32), dtype=np.float32)} for size in (1, 3, 2, 5)]
    requests.append({"PIXELS__0": rng.random((2, 3, 40, 24), dtype=np.float32)})  # other shape: own group
    results = runner.run(requests)
    for request, result in zip(requests, results, strict=True):
        assert isinstance(result, dict)
        with torch.no_grad():
            logits, probs = reference(torch.from_numpy(request["PIXELS__0"]))
        np.testing.assert_allclose(result["LOGITS__0"], logits.numpy(), atol=1e-5)
        np.testing.assert_allclose(result["PROBS__1"], probs.numpy(), atol=1e-5)
        assert result["PROBS__1"].shape == (len(request["PIXELS__0"]), 10)


def test_failing_request_fails_alone_and_strings_are_split(tmp_path: Path) -> None:
    path = tmp_path / "picky.pt"
    torch.jit.save(torch.jit.script(Picky()), str(path))
    outputs = [OutputSpec("TOTAL__0", 0, False, (1,)), OutputSpec("LABEL__1", 1, True, (1,))]
    runner = TorchScriptRunner(path, ["second", "first"], outputs, torch.device("cpu"))
    good = {"first": np.ones((2, 4), np.float32), "second": np.zeros((2, 4), np.float32)}
    bad = {"first": np.full((1, 4), 1000, np.float32), "second": np.zeros((1, 4), np.float32)}
    negative = {"first": -np.ones((3, 4), np.float32), "second": np.zeros((3, 4), np.float32)}
    results = runner.run([good, bad, negative])
    assert isinstance(results[1], RuntimeError) and "value above 100" in str(results[1])
    assert results[0]["TOTAL__0"].tolist() == [[4.0], [4.0]]
    assert results[0]["LABEL__1"].tolist() == [[b"big"], [b"big"]]
    assert results[2]["LABEL__1"].shape == (3, 1) and results[2]["LABEL__1"][0, 0] == b"small"


def test_missing_model_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="build the model set"):
        TorchScriptRunner(tmp_path / "model.pt", ["PIXELS__0"], [], torch.device("cpu"))


@pytest.mark.parametrize(
    ("pixels", "rule"),
    [
        (np.full((1, 3, 8, 8), np.nan, np.float32), "NaN or infinite"),
        (np.full((1, 3, 8, 8), np.inf, np.float32), "NaN or infinite"),
        (np.zeros((1, 3, 0, 8), np.float32), "empty dimension"),
        (np.zeros((1, 3, 64, 64), np.float32), "MAX_ITEM_ELEMENTS is 3072"),
    ],
)
def test_inputs_breaking_a_rule_are_refused_before_forward(tmp_path: Path, pixels: np.ndarray, rule: str) -> None:
    runner, _ = _teacher_runner(tmp_path)
    runner.max_item_elements = 3 * 32 * 32
    good = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    results = runner.run([{"PIXELS__0": good}, {"PIXELS__0": pixels}, {"PIXELS__0": good}])
    assert isinstance(results[1], InvalidInputError) and rule in str(results[1]) and "PIXELS__0" in str(results[1])
    assert not isinstance(results[0], Exception) and not isinstance(results[2], Exception)
    assert np.isfinite(results[0]["PROBS__1"]).all()
