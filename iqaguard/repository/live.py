"""Which built version of each model set is live, kept in the repository so every server start agrees.

A set's live version is recorded in `<set ensemble>/live.json` ({"live": V, "history": [...]}: the
versions that were live, oldest first, the last one live now). What Triton loads follows from it
through a second config per model, `configs/live.pbtxt`, which the server reads instead of
config.pbtxt (tritonserver --model-config-name=live; models without one use config.pbtxt):

- each built member (teacher, student, detector of the set): its config.pbtxt with a version policy
  naming exactly the versions to load, and warmup samples of the set's input size, so a version
  answers its first request warm;
- each ensemble of the set: its config.pbtxt with every member step pinned to one version, so a
  request is answered by members of one version only, whatever is loaded beside them.

A rollout (iqaguard.operations.rollout) moves a set through these files step by step, each step a
consistent state a restarted server can load. Stdlib only, like the rest of the layout code.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iqaguard.contract import DETECTOR, IQA_DIM
from iqaguard.repository.layout import LABELS_FILE, MODEL_FILE, latest_version, read_input_size, versions
from iqaguard.repository.sets import CONFIG_FILE, ModelSet, model_sets

CONFIG_NAME = "live"  # tritonserver --model-config-name
LIVE_CONFIG = f"configs/{CONFIG_NAME}.pbtxt"
STATE_FILE = "live.json"
WARMUP_BATCH_SIZES = (1, 8)
_VERSION_POLICY = re.compile(r"^version_policy:.*$", re.MULTILINE)
_STEP_VERSION = re.compile(r'(model_name:\s*"(?P<model>[^"]+)"\s*\n\s*model_version:\s*)-?\d+')


class LiveStateError(ValueError):
    """A live version that cannot be served as asked (not built, unknown set, nothing to roll back to)."""


@dataclass
class LiveState:
    """A set's live version and the versions that were live before it (oldest first)."""

    live: int
    history: list[int] = field(default_factory=list)

    def previous(self) -> int | None:
        """The version that was live before the current one, if any."""
        earlier = [v for v in self.history if v != self.live]
        return earlier[-1] if earlier else None


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_text() == text:
        return
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


def state_path(repository: Path, model_set: ModelSet) -> Path:
    return Path(repository) / model_set.ensemble / STATE_FILE


def read_state(repository: Path, model_set: ModelSet) -> LiveState | None:
    """The set's recorded live state, or None when none was recorded yet."""
    path = state_path(repository, model_set)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return LiveState(live=int(data["live"]), history=[int(v) for v in data.get("history", [])])


def write_state(repository: Path, model_set: ModelSet, state: LiveState) -> None:
    body = {"live": state.live, "history": state.history}
    _atomic_write_text(state_path(repository, model_set), json.dumps(body, indent=2) + "\n")


def built_versions(repository: Path, model_set: ModelSet) -> list[int]:
    """Versions for which every member of the set holds a model file, ascending."""
    found = None
    for member in model_set.members:
        directory = Path(repository) / member
        complete = {v for v in versions(directory) if (directory / str(v) / MODEL_FILE).is_file()}
        found = complete if found is None else found & complete
    return sorted(found or ())


def live_version(repository: Path, model_set: ModelSet) -> int | None:
    """The recorded live version, else (nothing recorded) the newest built one, as config.pbtxt would serve."""
    state = read_state(repository, model_set)
    if state is not None:
        return state.live
    newest = [latest_version(Path(repository) / member) for member in model_set.members]
    return None if None in newest else min(v for v in newest if v is not None)


def protected_versions(repository: Path, model_set: ModelSet) -> set[int]:
    """Versions a prune must keep: the live one and the one a rollback would return to."""
    state = read_state(repository, model_set)
    if state is None:
        return set()
    previous = state.previous()
    return {state.live} | ({previous} if previous is not None else set())


def _warmup_block(inputs: dict[str, list[int]]) -> str:
    samples = []
    for batch in WARMUP_BATCH_SIZES:
        tensors = " ".join(
            f'inputs {{ key: "{name}" value: {{ data_type: TYPE_FP32 dims: {dims} zero_data: true }} }}'
            for name, dims in inputs.items()
        )
        samples.append(f'  {{ name: "iqaguard_warmup_batch_{batch}" batch_size: {batch} {tensors} }}')
    return "model_warmup [\n" + ",\n".join(samples) + "\n]\n"


def _warmup_inputs(repository: Path, model_set: ModelSet, member: str) -> dict[str, list[int]]:
    if member == model_set.model(DETECTOR):
        labels = (Path(repository) / model_set.ensemble / LABELS_FILE).read_text().splitlines()
        classes = len([label for label in labels if label.strip()])
        return {"IQA__0": [IQA_DIM], "TEACHER_LOGITS__1": [classes], "STUDENT_LOGITS__2": [classes]}
    height, width = read_input_size(Path(repository) / model_set.preprocessor)
    return {"PIXELS__0": [3, height, width]}


def member_config(text: str, load: Sequence[int], warmup_inputs: dict[str, list[int]]) -> str:
    """A member's config.pbtxt text loading exactly the versions `load`, with warmup samples."""
    if not load:
        raise LiveStateError("a member must load at least one version")
    policy = f"version_policy: {{ specific: {{ versions: [ {', '.join(str(v) for v in sorted(set(load)))} ] }} }}"
    text, count = _VERSION_POLICY.subn(policy, text)
    if count > 1:
        raise LiveStateError(f"expected at most one version_policy line, found {count}")
    if count == 0:
        text = text.rstrip("\n") + "\n" + policy + "\n"
    header = "# Written by iqaguard.repository.live from config.pbtxt: the live versions and warmup.\n"
    return header + text.rstrip("\n") + "\n" + _warmup_block(warmup_inputs)


def ensemble_config(text: str, members: Sequence[str], version: int) -> str:
    """An ensemble's config.pbtxt text with each step calling one of `members` pinned to `version`."""
    pinned: list[str] = []

    def pin(match: re.Match[str]) -> str:
        if match.group("model") not in members:
            return match.group(0)
        pinned.append(match.group("model"))
        return f"{match.group(1)}{version}"

    result = _STEP_VERSION.sub(pin, text)
    if sorted(pinned) != sorted(members):
        raise LiveStateError(f"expected one step per member {sorted(members)}, pinned {sorted(pinned)}")
    header = "# Written by iqaguard.repository.live from config.pbtxt: every member pinned to the live version.\n"
    return header + result


def write_member_configs(repository: Path, model_set: ModelSet, load: Sequence[int]) -> list[str]:
    """Make each member of the set load exactly the versions `load`; return the members' names."""
    repository = Path(repository)
    missing = sorted(set(load) - set(built_versions(repository, model_set)))
    if missing:
        raise LiveStateError(f"set {model_set.name}: version(s) {missing} are not built (every member needs them)")
    for member in model_set.members:
        text = (repository / member / CONFIG_FILE).read_text()
        config = member_config(text, load, _warmup_inputs(repository, model_set, member))
        _atomic_write_text(repository / member / LIVE_CONFIG, config)
    return list(model_set.members)


def write_ensemble_configs(repository: Path, model_set: ModelSet, version: int) -> list[str]:
    """Pin every ensemble of the set to `version`; return the ensembles' names."""
    repository = Path(repository)
    for ensemble in model_set.ensembles:
        text = (repository / ensemble / CONFIG_FILE).read_text()
        _atomic_write_text(repository / ensemble / LIVE_CONFIG, ensemble_config(text, model_set.members, version))
    return list(model_set.ensembles)


def make_live(repository: Path, model_set: ModelSet, version: int, history: Sequence[int] | None = None) -> LiveState:
    """Record `version` as the set's live one and write the configs that serve it alone (no server involved)."""
    state = read_state(repository, model_set)
    earlier = list(history) if history is not None else (state.history if state else [])
    write_member_configs(repository, model_set, [version])
    write_ensemble_configs(repository, model_set, version)
    new_state = LiveState(live=version, history=[*(v for v in earlier if v != version), version][-20:])
    write_state(repository, model_set, new_state)
    return new_state


def refresh(repository: Path) -> dict[str, int]:
    """Rewrite every built set's live configs from its state (recording the newest built version where
    none is recorded yet), e.g. after a config.pbtxt changed; return {set: live version}.

    Raises LiveStateError when a recorded live version is no longer built (deleted by hand).
    """
    live = {}
    for model_set in model_sets(Path(repository)):
        built = built_versions(repository, model_set)
        if not built:
            continue
        state = read_state(repository, model_set)
        version = state.live if state else built[-1]
        if version not in built:
            raise LiveStateError(
                f"set {model_set.describe()}: its live version {version} is not built (built: {built}); "
                f"make a built one live: iqaguard-models rollout {model_set.name} --version N --offline"
            )
        make_live(repository, model_set, version, state.history if state else None)
        live[model_set.name or model_set.ensemble] = version
    return live


__all__ = [
    "CONFIG_NAME", "LIVE_CONFIG", "STATE_FILE", "LiveState", "LiveStateError", "built_versions",
    "ensemble_config", "live_version", "make_live", "member_config", "protected_versions", "read_state", "refresh",
    "write_ensemble_configs", "write_member_configs", "write_state",
]  # fmt: skip
