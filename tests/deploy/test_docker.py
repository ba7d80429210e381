"""deploy/docker/Dockerfile, parsed with BuildKit's own parser (the `dockerfile` package), and what it installs.

The images cannot be built here (no Docker engine), so what a build would find out late is checked
early: the pinned Triton release is the one the embedded server runs, every COPY source exists and is
in the build context, and the pinned requirements cover everything the code running in each image
imports (transitively through iqaguard), in versions pyproject.toml allows, on the image's Python.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import sys
import tomllib
import urllib.request
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path

import dockerfile
import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from support import ROOT

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "docker" / "Dockerfile.dockerignore"
TRITON_REQUIREMENTS = ROOT / "deploy" / "docker" / "requirements-triton.txt"
LOADGEN_REQUIREMENTS = ROOT / "deploy" / "docker" / "requirements-loadgen.txt"
PYTHON_BACKEND_MODEL = ROOT / "model_repository" / "iqa_preprocess" / "1" / "model.py"
LOCUSTFILE = ROOT / "iqaguard" / "bench" / "locustfile.py"
CONTAINER_ENTRYPOINT = ROOT / "iqaguard" / "launcher" / "container.py"
FIRST_PARTY = ("iqaguard", "iqaguard_client")  # the project and its thin client distribution
SOURCE_ROOTS = (ROOT, ROOT / "client" / "src")  # where their packages live in the checkout
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
# Triton server version -> NGC container release (Triton release notes). The embedded server reports the
# former; the Dockerfile pins the latter. Bumping nvidia-pytriton means adding a row and moving the image.
NGC_RELEASE_OF = {"2.51.0": "24.10"}
IMAGE_PYTHON = (3, 10)  # Ubuntu 22.04's python3 in the 24.10 image
# Names Python 3.11 added that 3.10 lacks, which a py311-targeted linter may introduce (e.g. datetime.UTC).
PY311_ONLY = {
    ("datetime", "UTC"),
    ("enum", "StrEnum"),
    ("typing", "Self"),
    ("typing", "LiteralString"),
    ("typing", "Never"),
    ("typing", "assert_never"),
    ("typing", "reveal_type"),
    ("typing", "Required"),
    ("typing", "NotRequired"),
    ("typing", "TypeVarTuple"),
    ("typing", "Unpack"),
    ("asyncio", "TaskGroup"),
    ("asyncio", "timeout"),
    ("tomllib", None),
}


def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def stages() -> dict[str, list[dockerfile.Command]]:
    """Stage name -> its instructions."""
    result: dict[str, list[dockerfile.Command]] = {}
    current: list[dockerfile.Command] | None = None
    for command in instructions():
        if command.cmd == "FROM":
            assert [v.upper() for v in command.value[1:2]] == ["AS"], f"unnamed stage: {command.original}"
            current = result.setdefault(command.value[2], [])
        elif current is not None:
            current.append(command)
    return result


def build_args() -> dict[str, str]:
    return dict(c.value[0].split("=", 1) for c in instructions() if c.cmd == "ARG" and "=" in c.value[0])


def pinned(path: Path) -> dict[str, Requirement]:
    requirements = [
        Requirement(line.split("#")[0].strip()) for line in path.read_text().splitlines() if line.split("#")[0].strip()
    ]
    return {canonicalize_name(r.name): r for r in requirements}


def pyproject_ranges() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        declared += extra
    return {canonicalize_name(Requirement(d).name): Requirement(d) for d in declared}


# --- import closure --------------------------------------------------------------------------------


def _module_file(module: str) -> Path | None:
    """The repository file of a first-party module (a package's __init__.py for packages)."""
    for root in SOURCE_ROOTS:
        base = root.joinpath(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _imports(path: Path) -> Iterable[tuple[str, str | None]]:
    """(module, imported name or None) for every import statement in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the file's package
                package = path.relative_to(ROOT).parent.parts
                package = package[: len(package) - (node.level - 1)]
                module = ".".join((*package, module) if module else package)
            for alias in node.names:
                yield module, alias.name


def import_closure(entry: Path, first_party: tuple[str, ...]) -> tuple[set[Path], set[str]]:
    """Files reached from `entry` through first-party imports, and the third-party top-level modules."""
    files: set[Path] = set()
    third_party: set[str] = set()
    pending = [entry]
    while pending:
        path = pending.pop()
        if path in files:
            continue
        files.add(path)
        for module, name in _imports(path):
            top = module.split(".")[0]
            if top not in first_party:
                if top not in sys.stdlib_module_names:
                    third_party.add(top)
                continue
            parts = module.split(".")
            # Importing a.b.c runs a/__init__.py and a/b/__init__.py too; `from a import b` may name a module.
            targets = [".".join(parts[: i + 1]) for i in range(len(parts))]
            if name:
                targets.append(f"{module}.{name}")
            for target in targets:
                found = _module_file(target)
                if found is not None:
                    pending.append(found)
                elif target != f"{module}.{name}":
                    raise AssertionError(f"{path}: imports {target}, which is not in the repository")
    return files, third_party


def distributions_for(modules: set[str], provided: set[str]) -> dict[str, set[str]]:
    """Top-level module -> the installed distributions that provide it (from this environment)."""
    owners = importlib.metadata.packages_distributions()
    result = {}
    for module in modules - provided:
        assert module in owners, f"{module} is imported but no installed distribution provides it"
        result[module] = {canonicalize_name(d) for d in owners[module]}
    return result


def installed_dependency_closure(requirements: Iterable[Requirement]) -> set[str]:
    """The requirements plus everything they pull in, per the installed metadata (extras honoured)."""
    seen: set[str] = set()
    pending = [(r, set(r.extras)) for r in requirements]
    while pending:
        requirement, extras = pending.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.requires(requirement.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here, so nothing under test can be importing it
        for line in requires:
            dependency = Requirement(line)
            marker = dependency.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in extras | {""}):
                pending.append((dependency, set(dependency.extras)))
    return {key.split("[")[0] for key in seen}


# --- the Triton image ------------------------------------------------------------------------------


def test_stages() -> None:
    assert set(stages()) == {"triton", "triton-baked", "loadgen"}
    froms = {c.value[2]: c.value[0] for c in instructions() if c.cmd == "FROM"}
    assert froms["triton"] == "${TRITON_IMAGE}"
    assert froms["triton-baked"] == "triton"
    assert build_args()["TRITON_IMAGE"] == TRITON_IMAGE


@pytest.mark.integration
def test_image_release_matches_the_embedded_server(triton_server) -> None:
    """The NGC release pinned here is the one whose server the embedded tests run (same Python backend)."""
    with urllib.request.urlopen(f"http://{triton_server.http_url}/v2", timeout=10) as response:
        version = json.load(response)["version"]
    assert version in NGC_RELEASE_OF, f"embedded Triton {version}: add its NGC release to NGC_RELEASE_OF"
    assert build_args()["TRITON_IMAGE"] == f"nvcr.io/nvidia/tritonserver:{NGC_RELEASE_OF[version]}-py3"


def test_build_directory_is_not_a_package() -> None:
    assert not (ROOT / "build" / "__init__.py").exists()


def test_copy_sources_exist_and_are_in_the_build_context() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and line[0] != "#"]
    assert patterns[0] == "*", "the context is an allow-list"

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            if fnmatch(path, body) or path.startswith(body + "/"):
                keep = negated
        return keep

    copies = [c for c in instructions() if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)]
    assert copies
    for command in copies:
        for source in command.value[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert included(source), f"COPY {source}: excluded by {DOCKERIGNORE.name}"
    assert not included(".venv") and not included("model_repository/teacher/1/__pycache__")


def test_triton_stage_serves_models_from_a_mount() -> None:
    triton = stages()["triton"]
    cmd = next(c for c in triton if c.cmd == "CMD")
    assert cmd.value[0] == "tritonserver" and "--model-repository=/models" in cmd.value
    assert {"8000", "8001", "8002"} <= {v for c in triton if c.cmd == "EXPOSE" for v in c.value}
    health = next(c for c in triton if c.cmd == "HEALTHCHECK")
    assert "iqaguard.launcher.probe" in " ".join(health.value), "deep readiness: one real inference"
    baked = stages()["triton-baked"]
    assert [c.value for c in baked if c.cmd == "COPY"] == [("model_repository", "/models")]


def test_triton_entrypoint_closes_the_admin_apis_with_the_images_python_alone() -> None:
    """The entrypoint (restricted-API flags, /dev/shm cleanup) runs before anything is installed but stdlib."""
    entrypoint = next(c for c in stages()["triton"] if c.cmd == "ENTRYPOINT")
    assert list(entrypoint.value) == ["python3", "-m", "iqaguard.launcher.container"]
    files, third_party = import_closure(CONTAINER_ENTRYPOINT, first_party=FIRST_PARTY)
    assert not third_party, f"the entrypoint must be stdlib-only: {third_party}"
    for path in files:
        ast.parse(path.read_text(), filename=str(path), feature_version=IMAGE_PYTHON)


def test_triton_requirements_are_pinned_and_within_pyproject() -> None:
    requirements = pinned(TRITON_REQUIREMENTS)
    ranges = pyproject_ranges()
    for name, requirement in requirements.items():
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{name}: pin an exact version in the image"
        assert ranges[name].specifier.contains(spec.version), f"{name}=={spec.version} outside pyproject's range"
    assert requirements["numpy"].specifier.contains("1.26.4") and not requirements["numpy"].specifier.contains("2.0")
    install = next(c for c in stages()["triton"] if c.cmd == "RUN" and "requirements-triton.txt" in c.value[0])
    assert "pip install -r" in install.value[0]


def test_triton_requirements_cover_the_python_backend_imports() -> None:
    """Everything iqa_preprocess's model.py imports, through iqaguard, is pinned (and nothing heavy)."""
    _, third_party = import_closure(PYTHON_BACKEND_MODEL, first_party=FIRST_PARTY)
    owners = distributions_for(third_party, provided={"triton_python_backend_utils"})
    allowed = installed_dependency_closure(pinned(TRITON_REQUIREMENTS).values())
    missing = {module: dists for module, dists in owners.items() if not dists & allowed}
    assert not missing, f"imported by the Python backend but not in {TRITON_REQUIREMENTS.name}: {missing}"
    assert "torch" not in third_party, "the Python backend must not need torch (the image does not ship it)"


def test_triton_image_smoke_imports_what_the_python_backend_imports() -> None:
    """The build's `python3 -c "import ..."` check imports the module model.py delegates to."""
    run = next(c for c in stages()["triton"] if c.cmd == "RUN" and "pip install --no-deps" in c.value[0])
    smoke = run.value[0].split('python3 -c "import ', 1)[1].split('"', 1)[0]
    assert smoke in {module for module, _ in _imports(PYTHON_BACKEND_MODEL)}


def test_python_backend_code_runs_on_the_images_python() -> None:
    """The 24.10 image has Python 3.10: no 3.11-only syntax or names anywhere model.py reaches."""
    files, _ = import_closure(PYTHON_BACKEND_MODEL, first_party=FIRST_PARTY)
    assert any(f.is_relative_to(ROOT / "iqaguard" / "iqa") for f in files), "closure should reach iqaguard.iqa"
    for path in files:
        source = path.read_text()
        ast.parse(source, filename=str(path), feature_version=IMAGE_PYTHON)
        for module, name in _imports(path):
            assert (module, name) not in PY311_ONLY and (module, None) not in PY311_ONLY, f"{path}: {module}.{name}"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert (node.value.id, node.attr) not in PY311_ONLY, (
                    f"{path}:{node.lineno}: {node.value.id}.{node.attr}"
                )
    requires_python = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert requires_python.contains("3.10.12"), "pip in the image refuses iqaguard if requires-python excludes 3.10"


# --- the load generator image ----------------------------------------------------------------------


def test_loadgen_requirements_are_pinned_and_within_pyproject() -> None:
    requirements = pinned(LOADGEN_REQUIREMENTS)
    ranges = pyproject_ranges()
    assert {"locust", "tritonclient"} <= set(requirements)
    assert {"grpc", "http"} <= requirements["tritonclient"].extras
    for name, requirement in requirements.items():
        (spec,) = requirement.specifier
        assert spec.operator == "==", name
        assert ranges[name].specifier.contains(spec.version), f"{name}=={spec.version} outside pyproject's range"


def test_loadgen_requirements_cover_the_locustfile_imports() -> None:
    _, third_party = import_closure(LOCUSTFILE, first_party=FIRST_PARTY)
    owners = distributions_for(third_party, provided=set())
    allowed = installed_dependency_closure(pinned(LOADGEN_REQUIREMENTS).values())
    missing = {module: dists for module, dists in owners.items() if not dists & allowed}
    assert not missing, f"imported by iqaguard/bench/locustfile.py but not in {LOADGEN_REQUIREMENTS.name}: {missing}"


def test_loadgen_python_matches_the_project() -> None:
    base = build_args()["LOADGEN_BASE_IMAGE"]
    assert base.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}-"), base


def test_marker_helper_honours_extras() -> None:
    """installed_dependency_closure follows extras: tritonclient[grpc] brings grpcio, plain tritonclient not."""
    with_grpc = installed_dependency_closure([Requirement("tritonclient[grpc]")])
    assert "grpcio" in with_grpc
    assert "grpcio" not in installed_dependency_closure([Requirement("tritonclient")])
    assert Marker('extra == "grpc"').evaluate({"extra": "grpc"})
