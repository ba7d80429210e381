"""The repository check's part about model sets (naming rule in iqaguard.repository.sets).

- every model directory belongs to a set: one of the checked-in six, or `<model>_S` beside `robust_classifier_S`;
- set names follow the rule, and at most one `robust_classifier_<name>` names the default set;
- every model a set needs exists, and each generated config is exactly the checked-in one rendered for
  its set: same tensors, batching and limits, and each `robust_classifier_S` calls only set S's members
  with the wiring of `robust_classifier`; the preprocessor's model.py is the checked-in one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from iqaguard.repository.render import PYTHON_MODEL, render_config
from iqaguard.repository.sets import (
    CHECKED_IN_MODELS,
    CONFIG_FILE,
    ENSEMBLE_PREFIX,
    SET_NAME_RULE,
    ModelSet,
    SetNameError,
    check_set_name,
    model_sets,
    set_ensemble,
    set_ensembles,
)


def _differences(expected: mc.ModelConfig, actual: mc.ModelConfig) -> str:
    """What differs between two configs, for a person: the steps' models first, then the fields."""
    calls = [step.model_name for step in expected.ensemble_scheduling.step]
    called = [step.model_name for step in actual.ensemble_scheduling.step]
    if calls != called:
        return f"its steps call {called}, expected {calls}"
    want = {field.name: value for field, value in expected.ListFields()}
    have = {field.name: value for field, value in actual.ListFields()}
    fields = sorted(name for name in want.keys() | have.keys() if want.get(name) != have.get(name))
    return f"these fields differ: {', '.join(fields)}"


def _orphan_message(name: str) -> str:
    for base in CHECKED_IN_MODELS:
        suffix = name.removeprefix(f"{base}_")
        if suffix != name:
            try:
                check_set_name(suffix)
            except SetNameError:
                break
            return (
                f"a model of set {suffix!r}, which has no {set_ensemble(suffix)} (an interrupted build?): rebuild "
                f"the set, or remove it with `python -m iqaguard.repository.sets remove {suffix}`"
            )
    return (
        "not a model of any set (a set's models are the checked-in six, "
        "or <model>_<set> beside robust_classifier_<set>)"
    )


def _generated(root: Path, model_set: ModelSet, configs: Mapping[str, mc.ModelConfig]) -> list[tuple[str, str]]:
    problems = []
    for model, base in model_set.generated.items():
        source = root / base / CONFIG_FILE
        if not source.is_file():
            continue  # reported as a missing checked-in config
        if model not in configs:
            if not (root / model).is_dir():
                problems.append((model, f"missing: set {model_set.name!r} needs it (rebuild the set)"))
            continue  # a directory without a parsable config is reported by load_repository
        try:
            rendered = render_config(source.read_text(), model, model_set)
        except (KeyError, ValueError):
            continue  # the checked-in config names no member of a set (or no name): reported for that config
        expected = mc.ModelConfig()
        text_format.Parse(rendered, expected)
        if expected != configs[model]:
            problems.append((model, f"differs from {base}/{CONFIG_FILE} rendered for set {model_set.name!r}: "
                                            f"{_differences(expected, configs[model])}"))  # fmt: skip
        code = root / base / PYTHON_MODEL
        copy = root / model / PYTHON_MODEL
        if code.is_file() and (not copy.is_file() or copy.read_bytes() != code.read_bytes()):
            problems.append((model, f"{PYTHON_MODEL} is not a copy of {base}/{PYTHON_MODEL} (rebuild the set)"))
    return problems


def check_sets(root: Path, configs: Mapping[str, mc.ModelConfig]) -> list[tuple[str, str]]:
    """(model, message) for each way the repository breaks the set naming rule; empty when it keeps it."""
    root = Path(root)
    problems = []
    for name in sorted(configs):
        suffix = name.removeprefix(ENSEMBLE_PREFIX)
        if suffix != name:
            try:
                check_set_name(suffix)
            except SetNameError:
                problems.append((name, f"{suffix!r} is not a valid set name ({SET_NAME_RULE})"))
    defaults = sorted(set_ensemble(name) for name, is_default in set_ensembles(root).items() if is_default)
    if len(defaults) > 1:
        problems.append((defaults[1], f"{', '.join(defaults)} all name the default set; keep one"))
    sets = model_sets(root)
    owned = {model for model_set in sets for model in model_set.models}
    for name in sorted(configs):
        if name not in owned and not name.startswith(ENSEMBLE_PREFIX):
            problems.append((name, _orphan_message(name)))
    for model_set in sets:
        problems.extend(_generated(root, model_set, configs))
    return problems
