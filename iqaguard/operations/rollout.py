"""Switch a model set between built versions on a running server, as a whole and without downtime.

A request is never answered by a mix of versions: each ensemble's steps are pinned to one version
(iqaguard.repository.live), and Triton swaps a reloaded ensemble atomically, the old one finishing the
requests it holds. The switch to version V from the live version L:

1. every member loads [L, V] (V warms up on its own instance; the ensembles still call L);
2. every ensemble is reloaded pinned to V (new requests use V only; requests in flight end on L);
3. after `settle_s`, every member loads [V] alone (L is unloaded once its requests are done).

Each step leaves the repository files in a state a restarted server serves consistently. If step 1
or 2 fails, the files and the server go back to L and the error is raised.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from iqaguard.operations.triton_admin import AdminError, TritonAdmin
from iqaguard.repository.live import (
    LiveState,
    LiveStateError,
    built_versions,
    make_live,
    read_state,
    write_ensemble_configs,
    write_member_configs,
    write_state,
)
from iqaguard.repository.sets import ModelSet, model_sets

log = logging.getLogger(__name__)


@dataclass
class SwitchReport:
    """What a rollout or rollback did, with the time each step took."""

    set_name: str
    from_version: int
    to_version: int
    steps_s: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in self.steps_s.items())
        return f"set {self.set_name}: v{self.from_version} -> v{self.to_version} ({steps})"


def find_set(repository: Path, name: str) -> ModelSet:
    """The built set called `name`; LiveStateError naming the sets there are."""
    sets = model_sets(Path(repository))
    for model_set in sets:
        if name in (model_set.name, model_set.ensemble):
            return model_set
    raise LiveStateError(f"no model set {name!r} in {repository}; sets: {', '.join(str(s.name) for s in sets)}")


def current_state(repository: Path, model_set: ModelSet) -> LiveState:
    """The set's live state; a set never rolled out counts its newest built version as live."""
    state = read_state(repository, model_set)
    if state is not None:
        return state
    built = built_versions(repository, model_set)
    if not built:
        raise LiveStateError(f"set {model_set.name} has no built version")
    return LiveState(live=built[-1], history=[built[-1]])


def _load_all(admin: TritonAdmin, models: list[str]) -> float:
    started = time.monotonic()
    for model in models:
        admin.load(model)
    return time.monotonic() - started


def switch(
    repository: Path, admin: TritonAdmin, model_set: ModelSet, target: int, history: list[int], settle_s: float = 2.0
) -> SwitchReport:
    """Make built version `target` live on the server (steps 1-3 above) and record `history` as the set's."""
    repository = Path(repository)
    state = current_state(repository, model_set)
    old = state.live
    if target not in built_versions(repository, model_set):
        raise LiveStateError(
            f"set {model_set.name}: version {target} is not built (built: {built_versions(repository, model_set)})"
        )
    report = SwitchReport(str(model_set.name), old, target)
    if target == old:
        log.info("set %s: v%d is live already", model_set.name, old)
        return report
    members = write_member_configs(repository, model_set, [old, target])
    try:
        report.steps_s["load new members"] = _load_all(admin, members)
        ensembles = write_ensemble_configs(repository, model_set, target)
        report.steps_s["switch ensembles"] = _load_all(admin, ensembles)
    except (AdminError, LiveStateError):
        log.error("set %s: switch to v%d failed; going back to v%d", model_set.name, target, old)
        make_live(repository, model_set, old, state.history)
        try:
            _load_all(admin, [*model_set.ensembles, *model_set.members])
        except AdminError as again:
            log.error("set %s: reloading v%d failed too: %s", model_set.name, old, again)
        raise
    write_state(repository, model_set, LiveState(live=target, history=history))
    time.sleep(settle_s)
    write_member_configs(repository, model_set, [target])
    report.steps_s["unload old members"] = _load_all(admin, members)
    return report


def rollout(
    repository: Path, admin: TritonAdmin, name: str, version: int | None = None, settle_s: float = 2.0
) -> SwitchReport:
    """Make `version` (default: the newest built) of set `name` live."""
    model_set = find_set(repository, name)
    target = version if version is not None else max(built_versions(repository, model_set), default=0)
    state = current_state(repository, model_set)
    history = [*(v for v in state.history if v != target), target][-20:]
    return switch(repository, admin, model_set, target, history, settle_s)


def rollback(repository: Path, admin: TritonAdmin, name: str, settle_s: float = 2.0) -> SwitchReport:
    """Make the version that was live before the current one live again."""
    model_set = find_set(repository, name)
    state = current_state(repository, model_set)
    previous = state.previous()
    if previous is None:
        raise LiveStateError(f"set {name}: nothing to roll back to (live v{state.live}, history {state.history})")
    history = state.history[: max(i for i, v in enumerate(state.history) if v == previous) + 1]
    return switch(repository, admin, model_set, previous, history, settle_s)


def offline_rollout(repository: Path, name: str, version: int | None = None) -> LiveState:
    """Record `version` as live in the repository files only, for the next server start."""
    model_set = find_set(repository, name)
    target = version if version is not None else max(built_versions(repository, model_set), default=0)
    if target not in built_versions(repository, model_set):
        raise LiveStateError(f"set {name}: version {target} is not built")
    state = read_state(repository, model_set)
    return make_live(repository, model_set, target, state.history if state else None)


def load_set(repository: Path, admin: TritonAdmin, name: str) -> list[str]:
    """Load a set's live version: preprocessor, members and monitor first, its ensembles last."""
    model_set = find_set(repository, name)
    state = current_state(repository, model_set)
    make_live(repository, model_set, state.live, state.history)
    models = [model_set.preprocessor, *model_set.members, model_set.monitor, *model_set.ensembles]
    _load_all(admin, models)
    return models


def unload_set(admin: TritonAdmin, repository: Path, name: str) -> list[str]:
    """Unload a set: its ensembles first (no new requests), then its other models."""
    model_set = find_set(repository, name)
    models = [*model_set.ensembles, *model_set.members, model_set.monitor, model_set.preprocessor]
    for model in models:
        admin.unload(model)
    return models
