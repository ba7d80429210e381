"""Compose files as Compose reads them: YAML tags (`!reset`, `!override`), interpolation, merge rules.

Enough of the Compose specification to check docker-compose.yml and its overrides without Docker.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml


class Reset:
    """`!reset`: remove the attribute from the merged model."""


class Override:
    """`!override`: replace the attribute instead of merging it."""

    def __init__(self, value: Any) -> None:
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus Compose's `!reset` / `!override` tags."""


def _construct_any(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())
ComposeLoader.add_constructor("!override", lambda loader, node: Override(_construct_any(loader, node)))


def load_compose(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return yaml.load(handle, Loader=ComposeLoader)


def schema_view(node: Any) -> Any:
    """What the schema sees: `!override` unwrapped, `!reset` attributes dropped."""
    if isinstance(node, dict):
        return {k: schema_view(v) for k, v in node.items() if not isinstance(v, Reset)}
    if isinstance(node, list):
        return [schema_view(v) for v in node]
    return node.value if isinstance(node, Override) else node


# Compose replaces these sequences instead of appending to them.
_REPLACED_SEQUENCES = {("command",), ("entrypoint",), ("healthcheck", "test")}


def merge(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """Compose's merge: mappings merge, sequences append (except commands), scalars replace."""
    if isinstance(override, Override):
        return copy.deepcopy(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = copy.deepcopy(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge(merged[key], value, (*path, key))
            else:
                merged[key] = schema_view(value)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        if path[-2:] in _REPLACED_SEQUENCES or path[-1:] in _REPLACED_SEQUENCES:
            return copy.deepcopy(override)
        return copy.deepcopy(base) + copy.deepcopy(override)
    return copy.deepcopy(override)


_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def variables(node: Any) -> dict[str, str | None]:
    """Every `${NAME...}` used, with its default (None when it has none)."""
    found: dict[str, str | None] = {}
    if isinstance(node, dict):
        for value in node.values():
            found.update(variables(value))
    elif isinstance(node, list):
        for value in node:
            found.update(variables(value))
    elif isinstance(node, str):
        for match in _VARIABLE.finditer(node):
            if match["name"]:
                found[match["name"]] = match["arg"] if match["op"] in (":-", "-") else None
    return found


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution; an unset variable without a default is an error here."""
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        if value is None:
            raise AssertionError(f"${{{name}}} has no default: the stack would need a .env to start")
        return value

    return _VARIABLE.sub(substitute, node)
