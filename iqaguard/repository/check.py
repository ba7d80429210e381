"""Static checks of a Triton model repository, before any server sees it.

Every ``<model>/config.pbtxt`` is parsed with Triton's own protobuf schema (``model_config_pb2`` from
tritonclient) and checked the way Triton checks it at load time: tensor declarations, batching limits,
and, for ensembles, the tensor wiring between steps (every step input is an ensemble input or another
step's output, every ensemble output is written, no tensor is produced twice or left unused, and data
types and shapes agree between producer and consumer, with -1 as a wildcard and the batch dimension
taken into account). A broken config then fails in CI or in the launcher, not in production. It also
checks the model-set naming rule (iqaguard.repository.set_check): every directory belongs to a set,
and each set's generated models are the checked-in ones renamed for it.

Usage: ``python -m iqaguard.repository.check [MODEL_REPOSITORY]`` (exit status 1 on any problem).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from iqaguard.repository.set_check import check_sets

CONFIG_FILE = "config.pbtxt"
ENSEMBLE_PLATFORM = "ensemble"
WILDCARD = -1
_UNREACHABLE = "can never be computed (it depends on a tensor nothing produces, or on itself)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one model's configuration."""

    model: str
    message: str

    def __str__(self) -> str:
        return f"{self.model}: {self.message}"


@dataclass(frozen=True)
class _Tensor:
    """What one side of an ensemble connection declares for a tensor."""

    origin: str  # human-readable: which model / which tensor declared it
    data_type: int
    dims: tuple[int, ...]
    batching: bool

    @property
    def full_dims(self) -> tuple[int, ...]:
        return ((WILDCARD,) if self.batching else ()) + self.dims

    def describe(self) -> str:
        dims = ",".join(str(d) for d in self.full_dims)
        return f"{mc.DataType.Name(self.data_type)} [{dims}] ({self.origin})"


def load_config(path: Path) -> mc.ModelConfig:
    """Parse one ``config.pbtxt`` strictly (unknown fields and bad enums are errors, as in Triton)."""
    config = mc.ModelConfig()
    text_format.Parse(Path(path).read_text(), config)
    return config


def load_repository(root: Path) -> tuple[dict[str, mc.ModelConfig], list[Problem]]:
    """Parse every model directory under ``root``; returns the configs that parsed and the problems."""
    root = Path(root)
    configs: dict[str, mc.ModelConfig] = {}
    problems: list[Problem] = []
    if not root.is_dir():
        return configs, [Problem(str(root), "model repository directory does not exist")]
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        name = model_dir.name
        if name.startswith("."):
            problems.append(Problem(name, "hidden directory: Triton loads every directory as a model, hidden "
                                          "ones too (a leftover of an interrupted copy?); remove it"))  # fmt: skip
            continue
        path = model_dir / CONFIG_FILE
        if not path.is_file():
            problems.append(Problem(name, f"no {CONFIG_FILE} (Triton treats every directory as a model)"))
            continue
        try:
            config = load_config(path)
        except text_format.ParseError as exc:
            problems.append(Problem(name, f"{CONFIG_FILE} does not parse as a Triton ModelConfig: {exc}"))
            continue
        if config.name and config.name != name:
            problems.append(Problem(name, f"config name {config.name!r} differs from its directory {name!r}"))
        configs[name] = config
    return configs, problems


def check_model(name: str, config: mc.ModelConfig) -> list[Problem]:
    """Checks Triton applies to any single model: declared tensors and batching limits."""
    problems: list[Problem] = []
    if not (config.platform or config.backend):
        problems.append(Problem(name, "neither 'platform' nor 'backend' is set"))
    if config.max_batch_size < 0:
        problems.append(Problem(name, "max_batch_size must be >= 0"))
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for tensor in tensors:
            label = f"{kind} {tensor.name or '<unnamed>'}"
            if not tensor.name:
                problems.append(Problem(name, f"an {kind} has no name"))
            elif tensor.name in seen:
                problems.append(Problem(name, f"{label} is declared twice"))
            seen.add(tensor.name)
            if tensor.data_type == mc.TYPE_INVALID:
                problems.append(Problem(name, f"{label} has no data_type"))
            if not tensor.dims:
                problems.append(Problem(name, f"{label} has no dims"))
            if any(d < 1 and d != WILDCARD for d in tensor.dims):
                problems.append(Problem(name, f"{label} has a dimension that is neither >= 1 nor -1"))
    if config.HasField("dynamic_batching"):
        if config.max_batch_size == 0:
            problems.append(Problem(name, "dynamic_batching needs max_batch_size > 0"))
        too_big = [s for s in config.dynamic_batching.preferred_batch_size if s > config.max_batch_size]
        if too_big and config.max_batch_size > 0:
            problems.append(
                Problem(name, f"preferred_batch_size {too_big} exceeds max_batch_size {config.max_batch_size}")
            )
    return problems


def _dims_match(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(x == y or WILDCARD in (x, y) for x, y in zip(a, b, strict=True))


def _consistent(known: _Tensor, other: _Tensor) -> str | None:
    """Triton's rule: same dtype; shapes match with wildcards, per item or with the batch dim expanded."""
    if known.data_type != other.data_type:
        return f"data type mismatch: {known.describe()} vs {other.describe()}"
    if not (_dims_match(known.dims, other.dims) or _dims_match(known.full_dims, other.full_dims)):
        return f"shape mismatch: {known.describe()} vs {other.describe()}"
    return None


def _io_dims(tensor: mc.ModelInput | mc.ModelOutput) -> tuple[int, ...]:
    return tuple(tensor.reshape.shape) if tensor.HasField("reshape") else tuple(tensor.dims)


def check_ensemble(ensemble: mc.ModelConfig, members: Mapping[str, mc.ModelConfig]) -> list[Problem]:
    """Check one ensemble's steps and tensor wiring against its members' configs.

    ``members`` maps model names to their parsed configs (the rest of the repository).
    """
    name = ensemble.name or "<ensemble>"
    problems: list[Problem] = []

    def problem(message: str) -> None:
        problems.append(Problem(name, message))

    if ensemble.platform != ENSEMBLE_PLATFORM:
        problem(f"ensemble_scheduling is set but platform is {ensemble.platform!r}, not 'ensemble'")
    if ensemble.instance_group:
        problem("an ensemble must not declare instance_group")
    if ensemble.HasField("optimization"):
        problem("an ensemble must not declare optimization")
    if ensemble.model_warmup:
        problem("an ensemble must not declare model_warmup")
    steps = ensemble.ensemble_scheduling.step
    if not steps:
        problem("ensemble_scheduling has no steps")
        return problems

    batching = ensemble.max_batch_size > 0
    declared: dict[str, _Tensor] = {}
    for tensor in ensemble.input:
        declared[tensor.name] = _Tensor(f"ensemble input {tensor.name}", tensor.data_type, _io_dims(tensor), batching)
    for tensor in ensemble.output:
        declared[tensor.name] = _Tensor(f"ensemble output {tensor.name}", tensor.data_type, _io_dims(tensor), batching)

    producers: dict[str, int] = {}  # ensemble tensor -> index of the step writing it
    consumers: dict[str, list[int]] = {}  # ensemble tensor -> indices of the steps reading it
    for index, step in enumerate(steps):
        where = f"step {index} ({step.model_name or '<no model_name>'})"
        if not step.model_name:
            problem(f"{where}: model_name is not set")
        if not step.input_map:
            problem(f"{where}: input_map is empty")
        if not step.output_map:
            problem(f"{where}: output_map is empty")
        for value in step.input_map.values():
            consumers.setdefault(value, []).append(index)
        for value in step.output_map.values():
            if value in producers:
                problem(f"{where}: ensemble tensor {value!r} is already written by step {producers[value]}")
            else:
                producers[value] = index

        member = members.get(step.model_name)
        if member is None:
            if step.model_name:
                problem(f"{where}: model {step.model_name!r} is not in the repository")
            continue
        member_batching = member.max_batch_size > 0
        if member_batching and member.max_batch_size < ensemble.max_batch_size:
            problem(
                f"{where}: ensemble max_batch_size {ensemble.max_batch_size} exceeds the member's "
                f"{member.max_batch_size}"
            )

        member_inputs = {t.name: t for t in member.input}
        for key, value in step.input_map.items():
            if key not in member_inputs:
                problem(
                    f"{where}: input_map key {key!r} is not an input of {step.model_name} "
                    f"(it has {sorted(member_inputs)})"
                )
                continue
            tensor = member_inputs[key]
            seen = _Tensor(f"{step.model_name} input {key}", tensor.data_type, tuple(tensor.dims), member_batching)
            _register(declared, value, seen, where, problem)
        for tensor in member.input:
            if tensor.name not in step.input_map and not tensor.optional:
                problem(f"{where}: input {tensor.name} of {step.model_name} is not mapped")

        member_outputs = {t.name: t for t in member.output}
        for key, value in step.output_map.items():
            if key not in member_outputs:
                problem(
                    f"{where}: output_map key {key!r} is not an output of {step.model_name} "
                    f"(it has {sorted(member_outputs)})"
                )
                continue
            tensor = member_outputs[key]
            seen = _Tensor(f"{step.model_name} output {key}", tensor.data_type, tuple(tensor.dims), member_batching)
            _register(declared, value, seen, where, problem)

    problems.extend(Problem(name, m) for m in _data_flow(ensemble, steps, producers, consumers))
    return problems


def _register(
    declared: dict[str, _Tensor], value: str, seen: _Tensor, where: str, problem: Callable[[str], None]
) -> None:
    """Record what a step declares for ensemble tensor ``value``, or check it against an earlier record."""
    known = declared.get(value)
    if known is None:
        declared[value] = seen
        return
    mismatch = _consistent(known, seen)
    if mismatch:
        problem(f"{where}: ensemble tensor {value!r}: {mismatch}")


def _data_flow(
    ensemble: mc.ModelConfig,
    steps: Sequence[mc.ModelEnsembling.Step],
    producers: Mapping[str, int],
    consumers: Mapping[str, list[int]],
) -> list[str]:
    """Which tensors can actually be computed from the ensemble inputs, and which are dangling."""
    messages: list[str] = []
    inputs = [t.name for t in ensemble.input]
    outputs = {t.name for t in ensemble.output}
    ready = set(inputs)
    done: set[int] = set()
    changed = True
    while changed:  # fixed point: a step runs once all its inputs are ready
        changed = False
        for index, step in enumerate(steps):
            if index not in done and set(step.input_map.values()) <= ready:
                done.add(index)
                ready.update(step.output_map.values())
                changed = True

    for tensor in inputs:
        if tensor not in consumers:
            messages.append(f"ensemble input {tensor!r} is not used by any step")
        if tensor in producers:
            messages.append(f"ensemble input {tensor!r} is also written by step {producers[tensor]}")
    for tensor in sorted(outputs):
        if tensor not in producers:
            messages.append(f"ensemble output {tensor!r} is not written by any step")
        elif tensor not in ready:
            messages.append(f"ensemble output {tensor!r} {_UNREACHABLE}")
    for tensor, readers in sorted(consumers.items()):
        if tensor not in producers and tensor not in inputs:
            steps_txt = ", ".join(f"step {i} ({steps[i].model_name})" for i in readers)
            messages.append(
                f"ensemble tensor {tensor!r} read by {steps_txt} is neither an ensemble input nor written by any step"
            )
        elif tensor in producers and tensor not in ready and tensor not in outputs:
            messages.append(f"ensemble tensor {tensor!r} {_UNREACHABLE}")
    for tensor, index in sorted(producers.items()):
        if tensor not in consumers and tensor not in outputs:
            messages.append(
                f"ensemble tensor {tensor!r} written by step {index} ({steps[index].model_name}) is never used "
                "(Triton rejects unused ensemble tensors)"
            )
    return messages


def check_configs(configs: Mapping[str, mc.ModelConfig]) -> list[Problem]:
    """All per-model and ensemble checks over already-parsed configs keyed by model name."""
    problems: list[Problem] = []
    for name, config in configs.items():
        problems.extend(check_model(name, config))
        if config.HasField("ensemble_scheduling") or config.platform == ENSEMBLE_PLATFORM:
            if not config.HasField("ensemble_scheduling"):
                problems.append(Problem(name, "platform 'ensemble' needs ensemble_scheduling"))
                continue
            named = config if config.name else _with_name(config, name)
            problems.extend(check_ensemble(named, configs))
    return problems


def _with_name(config: mc.ModelConfig, name: str) -> mc.ModelConfig:
    copy = mc.ModelConfig()
    copy.CopyFrom(config)
    copy.name = name
    return copy


def check_repository(root: Path) -> list[Problem]:
    """Parse and check every model under ``root``; an empty list means Triton should accept the configs."""
    configs, problems = load_repository(root)
    sets = [Problem(model, message) for model, message in check_sets(Path(root), configs)]
    return problems + check_configs(configs) + sets


def format_problems(problems: Iterable[Problem]) -> str:
    """One problem per line, for logs and exception messages."""
    return "\n".join(f"  - {p}" for p in problems)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: check a repository, print the problems, exit 1 if there are any."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", nargs="?", default="model_repository", type=Path)
    args = parser.parse_args(argv)
    problems = check_repository(args.repository)
    if problems:
        print(f"{args.repository}: {len(problems)} problem(s)\n{format_problems(problems)}", file=sys.stderr)
        return 1
    configs, _ = load_repository(args.repository)
    print(f"{args.repository}: {len(configs)} model configs OK ({', '.join(sorted(configs))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
