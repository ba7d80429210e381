"""Model sets side by side in one repository: set names, each set's model names, which sets are built.

The *default* set fills the checked-in slots (iqa_preprocess, teacher, student, detector,
robust_classifier) and is served by `robust_classifier` and by `robust_classifier_<name>`. Any other
set S has its own models, generated from the checked-in configs (iqaguard.repository.render):

    iqa_preprocess_S  teacher_S  student_S  detector_S  guard_monitor_S  robust_classifier_S

so every set S is called as `robust_classifier_S`, with the tensor contract of `robust_classifier`.
Which set is the default is recorded by the repository itself: the one `robust_classifier_<name>`
whose steps call the checked-in members (not models suffixed _<name>). The repository check
(iqaguard.repository.set_check) enforces the naming rule. Stdlib only: the launcher and the bench
tools read it without tritonclient.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iqaguard.contract import BUILT_MEMBERS, ENSEMBLE, MONITOR, PREPROCESSOR

CONFIG_FILE = "config.pbtxt"
DEFAULT_SET = "fashion"  # the set `robust_classifier` serves unless a build says otherwise (--as-default)
SET_NAME_RULE = "1-32 characters: a lowercase letter, then lowercase letters or digits"
_SET_NAME = re.compile(r"[a-z][a-z0-9]{0,31}")
_STEP_MODEL = re.compile(r'model_name:\s*"([^"]*)"')
CHECKED_IN_MODELS = (PREPROCESSOR, *BUILT_MEMBERS, MONITOR, ENSEMBLE)  # the default set's slots; every set has these
ENSEMBLE_PREFIX = f"{ENSEMBLE}_"


class SetNameError(ValueError):
    """A set name that breaks the naming rule."""


class SetConflictError(ValueError):
    """A set cannot be written as asked (e.g. its name is taken by the default set, or the reverse)."""


def check_set_name(name: str) -> str:
    """`name` when it follows the rule (so `<model>_<name>` is a valid, unambiguous model name), else raise."""
    if not isinstance(name, str) or not _SET_NAME.fullmatch(name):
        raise SetNameError(f"invalid model set name {name!r}: {SET_NAME_RULE}")
    return name


def set_ensemble(name: str) -> str:
    """The ensemble that serves set `name`: robust_classifier_<name>."""
    return f"{ENSEMBLE_PREFIX}{check_set_name(name)}"


@dataclass(frozen=True)
class ModelSet:
    """One model set: its name and whether it fills the checked-in (unsuffixed) slots.

    `name` is None only for a default set built before sets had names (no robust_classifier_<name>).
    """

    name: str | None
    default: bool = False

    def __post_init__(self) -> None:
        if self.name is None:
            if not self.default:
                raise SetNameError("only the default set may be unnamed")
        else:
            check_set_name(self.name)

    def model(self, base: str) -> str:
        """This set's name for the checked-in model `base` (e.g. teacher -> teacher_natural)."""
        if base not in CHECKED_IN_MODELS:
            raise KeyError(f"{base!r} is not one of a set's models {CHECKED_IN_MODELS}")
        return base if self.default else f"{base}_{self.name}"

    @property
    def ensemble(self) -> str:
        """The ensemble named after the set (robust_classifier for an unnamed default set)."""
        return set_ensemble(self.name) if self.name else ENSEMBLE

    @property
    def ensembles(self) -> tuple[str, ...]:
        """Every ensemble serving this set: the default set has robust_classifier too."""
        if not self.default:
            return (self.ensemble,)
        return (ENSEMBLE, self.ensemble) if self.name else (ENSEMBLE,)

    @property
    def preprocessor(self) -> str:
        return self.model(PREPROCESSOR)

    @property
    def monitor(self) -> str:
        """The set's guard_monitor (metrics and audit log; not versioned, like the preprocessor)."""
        return self.model(MONITOR)

    @property
    def members(self) -> tuple[str, ...]:
        """The built TorchScript members (teacher, student, detector) under this set's names."""
        return tuple(self.model(base) for base in BUILT_MEMBERS)

    @property
    def generated(self) -> dict[str, str]:
        """Models rendered from a checked-in config, as {model directory: checked-in model it copies}."""
        if self.default:
            return {self.ensemble: ENSEMBLE} if self.name else {}
        return {self.model(base): base for base in CHECKED_IN_MODELS}

    @property
    def models(self) -> tuple[str, ...]:
        """Every model directory of this set (for the default set: the checked-in ones and its named ensemble)."""
        return tuple(dict.fromkeys((*(self.model(base) for base in CHECKED_IN_MODELS), *self.ensembles)))

    def describe(self) -> str:
        """E.g. "fashion (default: robust_classifier, robust_classifier_fashion)"."""
        kind = "default: " if self.default else ""
        text = f"{self.name or '(unnamed)'} ({kind}{', '.join(self.ensembles)})"
        if self.name is None:
            text += " built before sets had names: `python -m iqaguard.repository.sets name <set>` names it"
        return text


def step_models(config_text: str) -> list[str]:
    """The model_name of each ensemble step in a config.pbtxt's text, in order."""
    return _STEP_MODEL.findall(config_text)


def set_ensembles(repository: Path) -> dict[str, bool]:
    """{set name: whether it is the default set} for each robust_classifier_<name> directory with a config.

    A robust_classifier_<name> whose steps call models suffixed _<name> serves the suffixed set <name>;
    any other serves the default set. Directories whose suffix breaks the naming rule are left to the check.
    """
    found: dict[str, bool] = {}
    for config in sorted(Path(repository).glob(f"{ENSEMBLE_PREFIX}*/{CONFIG_FILE}")):
        name = config.parent.name.removeprefix(ENSEMBLE_PREFIX)
        if not _SET_NAME.fullmatch(name):
            continue
        found[name] = not any(model.endswith(f"_{name}") for model in step_models(config.read_text()))
    return found


def default_set(repository: Path) -> ModelSet:
    """The set in the checked-in slots: named by its robust_classifier_<name> (the first, if the check fails)."""
    names = [name for name, is_default in set_ensembles(repository).items() if is_default]
    return ModelSet(names[0] if names else None, default=True)


def model_sets(repository: Path) -> list[ModelSet]:
    """Every set the repository declares: the default set first, then the others by name."""
    others = [ModelSet(name) for name, is_default in set_ensembles(repository).items() if not is_default]
    return [default_set(repository), *others]


def set_label(model_dir: str | Path, model_name: str) -> str:
    """The set a model serves, for metric labels and logs, from inside that model (its directory and name):
    `<base>_<set>` serves <set>; a checked-in model serves the default set ("default" when it is unnamed)."""
    for base in CHECKED_IN_MODELS:
        suffix = model_name.removeprefix(f"{base}_")
        if suffix != model_name and _SET_NAME.fullmatch(suffix):
            return suffix
    return default_set(Path(model_dir).parent).name or "default"


def set_for_ensemble(repository: Path, ensemble: str) -> ModelSet:
    """The set an ensemble serves; raise KeyError naming the ensembles there are."""
    sets = model_sets(repository)
    for model_set in sets:
        if ensemble in model_set.ensembles:
            return model_set
    served = ", ".join(e for s in sets for e in s.ensembles)
    raise KeyError(f"{repository} has no ensemble {ensemble!r}; it has {served}")


def target_set(repository: Path, name: str, as_default: bool | None = None) -> ModelSet:
    """Where a build of set `name` goes.

    as_default True: into the checked-in slots (replacing the default set there); False: as a suffixed
    set; None: into the checked-in slots when `name` is already the default set, or when no default
    set is named yet and `name` is DEFAULT_SET, else suffixed. Raises SetNameError or SetConflictError.
    """
    check_set_name(name)
    current = default_set(repository)
    suffixed = {n for n, is_default in set_ensembles(repository).items() if not is_default}
    if as_default is None:
        as_default = name == current.name or (current.name is None and name == DEFAULT_SET)
    if as_default and name in suffixed:
        raise SetConflictError(
            f"set {name!r} is built as a separate set ({set_ensemble(name)}); remove it first "
            f"(python -m iqaguard.repository.sets remove {name}) to make it the default set"
        )
    if not as_default and name == current.name:
        raise SetConflictError(
            f"set {name!r} is the default set (robust_classifier); build it with --as-default, or under another name"
        )
    return ModelSet(name, default=as_default)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m iqaguard.repository.sets [list | remove NAME | name NAME] [--repository DIR]`."""
    parser = argparse.ArgumentParser(
        prog="python -m iqaguard.repository.sets", description=__doc__.splitlines()[0],
        epilog="list: the sets and their ensembles; remove NAME: take a set out (not the default set); "
        "name NAME: give a default set built before sets had names its robust_classifier_NAME",
    )  # fmt: skip
    parser.add_argument("action", choices=("list", "remove", "name"), nargs="?", default="list")
    parser.add_argument("name", nargs="?", help="the set to remove or name")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    args = parser.parse_args(argv)
    if args.action == "list":
        for model_set in model_sets(args.repository):
            print(model_set.describe())
        return 0
    from iqaguard.repository.writer import name_default_set, remove_set  # writing needs more than naming

    if not args.name:
        parser.error(f"{args.action} needs the set's NAME")
    try:
        if args.action == "name":
            print(f"wrote {name_default_set(args.repository, args.name)}")
        else:
            removed = remove_set(args.repository, args.name)
            print(f"removed {', '.join(path.name for path in removed)} from {args.repository}")
    except (KeyError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
