"""The checked-in model configs parse with Triton's schema and the ensemble is wired right.

The same checker runs on deliberately broken copies to prove each class of mistake is caught.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from support import ROOT
from tritonclient.grpc import model_config_pb2 as mc

from iqaguard import contract
from iqaguard.repository import layout
from iqaguard.repository.check import check_repository, load_config, load_repository, main
from iqaguard.repository.sets import CHECKED_IN_MODELS, model_sets

REPOSITORY = ROOT / "model_repository"
MEMBERS = (contract.PREPROCESSOR, contract.TEACHER, contract.STUDENT, contract.DETECTOR, contract.MONITOR)


def test_checked_in_configs_are_consistent() -> None:
    problems = check_repository(REPOSITORY)
    assert problems == [], "\n".join(map(str, problems))


def test_repository_holds_exactly_the_contract_models() -> None:
    configs, problems = load_repository(REPOSITORY)
    assert problems == []
    generated = {model for model_set in model_sets(REPOSITORY) for model in model_set.generated}  # other built sets
    assert set(configs) - generated == {contract.ENSEMBLE, *MEMBERS} == set(CHECKED_IN_MODELS)


def test_ensemble_interface_matches_the_contract() -> None:
    ensemble = load_config(REPOSITORY / contract.ENSEMBLE / "config.pbtxt")
    declared = {t.name: (mc.DataType.Name(t.data_type), list(t.dims)) for t in ensemble.input}
    assert declared == {contract.INPUT_IMAGE: ("TYPE_STRING", [1])}
    outputs = {t.name: t for t in ensemble.output}
    assert {name: (mc.DataType.Name(t.data_type), list(t.dims)) for name, t in outputs.items()} == {
        contract.OUTPUT_PROBS: ("TYPE_FP32", [-1]),
        contract.OUTPUT_QUALITY: ("TYPE_FP32", [1]),
        contract.OUTPUT_SUSPICION: ("TYPE_FP32", [1]),
        contract.OUTPUT_VERDICT: ("TYPE_STRING", [1]),
    }
    # The classification extension (class_count top-k with names) needs the label file on PROBS.
    assert outputs[contract.OUTPUT_PROBS].label_filename == layout.LABELS_FILE
    detector = load_config(REPOSITORY / contract.DETECTOR / "config.pbtxt")
    iqa = next(t for t in detector.input if t.name.startswith("IQA"))
    assert list(iqa.dims) == [contract.IQA_DIM]


@pytest.mark.parametrize("member", MEMBERS)
def test_members_batch_and_never_force_a_gpu(member: str) -> None:
    """Batched as the design says; no KIND_GPU, so the same repository loads on the CPU-only stack."""
    config = load_config(REPOSITORY / member / "config.pbtxt")
    assert config.max_batch_size > 0
    assert config.HasField("dynamic_batching")
    assert all(group.kind != mc.ModelInstanceGroup.KIND_GPU for group in config.instance_group)


def test_version_directories_of_checked_in_models_are_tracked() -> None:
    """A fresh clone (CI, `docker compose up` on a new host) needs these directories to exist."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "model_repository"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for model in (contract.ENSEMBLE, contract.PREPROCESSOR):
        assert any(path.startswith(f"model_repository/{model}/1/") for path in tracked), model


# --- the checker catches what it should -------------------------------------------------------------


class BrokenCopy:
    """A copy of the checked-in configs (no artifacts) in a temporary directory, edited by text."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for config in (REPOSITORY / name / "config.pbtxt" for name in CHECKED_IN_MODELS):  # never a built set's
            target = root / config.parent.name / "config.pbtxt"
            target.parent.mkdir()
            shutil.copy(config, target)

    def __call__(self, model: str, old: str, new: str) -> Path:
        path = self.root / model / "config.pbtxt"
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} should occur once in {model}/config.pbtxt"
        path.write_text(text.replace(old, new))
        return self.root


@pytest.fixture()
def broken(tmp_path: Path) -> BrokenCopy:
    copy = BrokenCopy(tmp_path)
    assert check_repository(tmp_path) == [], "the unedited copy must be clean"
    return copy


def messages(repository: Path) -> str:
    problems = check_repository(repository)
    assert problems, "the checker accepted a broken repository"
    return "\n".join(map(str, problems))


def test_catches_a_misspelt_ensemble_tensor(broken: BrokenCopy) -> None:
    repo = broken(
        contract.ENSEMBLE, 'value: "student_logits" }\n      output_map', 'value: "student_logit" }\n      output_map'
    )
    found = messages(repo)
    assert "'student_logit' read by step 3 (detector) is neither an ensemble input nor written" in found
    assert "'student_logits' written by step 2 (student) is never used" in found


def test_catches_a_wrong_member_input_name(broken: BrokenCopy) -> None:
    found = messages(broken(contract.ENSEMBLE, 'key: "IQA__0"', 'key: "IQA_0"'))
    assert "input_map key 'IQA_0' is not an input of detector" in found
    assert "input IQA__0 of detector is not mapped" in found


def test_catches_a_wrong_member_output_name(broken: BrokenCopy) -> None:
    found = messages(broken(contract.ENSEMBLE, 'key: "PROBS__1"', 'key: "PROBS__2"'))
    assert "output_map key 'PROBS__2' is not an output of teacher" in found


def test_catches_a_dtype_mismatch_between_producer_and_consumer(broken: BrokenCopy) -> None:
    found = messages(
        broken(contract.DETECTOR, 'name: "IQA__0" data_type: TYPE_FP32', 'name: "IQA__0" data_type: TYPE_FP16')
    )
    assert "ensemble tensor 'iqa': data type mismatch" in found
    assert "TYPE_FP32" in found and "TYPE_FP16" in found


def test_catches_a_dtype_mismatch_on_an_ensemble_output(broken: BrokenCopy) -> None:
    found = messages(
        broken(contract.ENSEMBLE, '{ name: "VERDICT" data_type: TYPE_STRING', '{ name: "VERDICT" data_type: TYPE_FP32')
    )
    assert "ensemble tensor 'VERDICT': data type mismatch" in found


def test_catches_a_shape_mismatch(broken: BrokenCopy) -> None:
    found = messages(broken(contract.DETECTOR, "dims: [ 37 ]", "dims: [ 36 ]"))
    assert "ensemble tensor 'iqa': shape mismatch" in found
    assert "[-1,37]" in found and "[-1,36]" in found


def test_catches_a_rank_mismatch(broken: BrokenCopy) -> None:
    found = messages(broken(contract.STUDENT, "dims: [ 3, -1, -1 ]", "dims: [ 3, -1 ]"))
    assert "ensemble tensor 'pixels': shape mismatch" in found


def test_catches_a_missing_producer(broken: BrokenCopy) -> None:
    """Drop the preprocessing step: nothing writes pixels/iqa/quality and IMAGE goes unused."""
    path = broken.root / contract.ENSEMBLE / "config.pbtxt"
    config = load_config(path)
    assert config.ensemble_scheduling.step[0].model_name == contract.PREPROCESSOR
    del config.ensemble_scheduling.step[0]
    path.write_text(str(config))
    found = messages(broken.root)
    assert "ensemble tensor 'pixels' read by step 0 (teacher), step 1 (student) is neither" in found
    assert "ensemble tensor 'iqa' read by step 2 (detector) is neither" in found
    assert "ensemble tensor 'quality' read by step 3 (guard_monitor) is neither" in found
    assert "ensemble input 'IMAGE' is not used by any step" in found
    assert "ensemble output 'QUALITY' can never be computed" in found
    assert "ensemble output 'SUSPICION' can never be computed" in found


def test_catches_an_ensemble_output_nobody_writes(broken: BrokenCopy) -> None:
    found = messages(broken(contract.ENSEMBLE, 'value: "VERDICT"', 'value: "VERDICTS"'))
    assert "ensemble output 'VERDICT' is not written by any step" in found
    assert "'VERDICTS' written by step 4 (guard_monitor) is never used" in found


def test_catches_a_tensor_written_twice(broken: BrokenCopy) -> None:
    found = messages(broken(contract.ENSEMBLE, 'value: "student_logits" }\n    }', 'value: "teacher_logits" }\n    }'))
    assert "ensemble tensor 'teacher_logits' is already written by step 1" in found


def test_catches_a_cycle(broken: BrokenCopy) -> None:
    found = messages(
        broken(
            contract.ENSEMBLE,
            'key: "TEACHER_LOGITS__1" value: "teacher_logits"',
            'key: "TEACHER_LOGITS__1" value: "SUSPICION"',
        )
    )
    assert "ensemble output 'SUSPICION' can never be computed" in found


def test_catches_an_unknown_member(broken: BrokenCopy) -> None:
    found = messages(broken(contract.ENSEMBLE, 'model_name: "student"', 'model_name: "studnet"'))
    assert "model 'studnet' is not in the repository" in found


def test_an_unknown_member_is_reported_also_beside_a_generated_set(broken: BrokenCopy) -> None:
    extra = broken.root / f"{contract.ENSEMBLE}_extra"
    extra.mkdir()
    text = (broken.root / contract.ENSEMBLE / "config.pbtxt").read_text()
    (extra / "config.pbtxt").write_text(text.replace(f'name: "{contract.ENSEMBLE}"', f'name: "{extra.name}"', 1))
    found = messages(broken(contract.ENSEMBLE, 'model_name: "student"', 'model_name: "studnet"'))
    assert "model 'studnet' is not in the repository" in found, "reported, not a crash while rendering the set"


def test_catches_a_batch_size_the_members_cannot_take(broken: BrokenCopy) -> None:
    found = messages(broken(contract.ENSEMBLE, "max_batch_size: 64", "max_batch_size: 128"))
    assert "ensemble max_batch_size 128 exceeds the member's 64" in found


def test_catches_a_preferred_batch_size_above_the_maximum(broken: BrokenCopy) -> None:
    found = messages(broken(contract.TEACHER, "max_batch_size: 64", "max_batch_size: 16"))
    assert "preferred_batch_size [32] exceeds max_batch_size 16" in found


def test_catches_an_unknown_field(broken: BrokenCopy) -> None:
    found = messages(broken(contract.TEACHER, "max_batch_size: 64", "max_batchsize: 64"))
    assert "teacher: config.pbtxt does not parse as a Triton ModelConfig" in found


def test_catches_a_name_that_differs_from_its_directory(broken: BrokenCopy) -> None:
    found = messages(broken(contract.TEACHER, 'name: "teacher"', 'name: "teacher2"'))
    assert "config name 'teacher2' differs from its directory 'teacher'" in found


def test_command_line_exit_status(broken: BrokenCopy, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(broken.root)]) == 0  # the checked-in configs (the working repository may hold built sets)
    assert "6 model configs OK" in capsys.readouterr().out
    assert main([str(broken(contract.DETECTOR, "dims: [ 37 ]", "dims: [ 36 ]"))]) == 1
    assert "shape mismatch" in capsys.readouterr().err
