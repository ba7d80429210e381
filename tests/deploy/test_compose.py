"""docker-compose.yml and its CPU override, validated without Docker.

The schema is the Compose specification's own JSON schema, as vendored (with its Apache-2.0 licence)
by the check-jsonschema package in the test extras; nothing is fetched at test time. On top of the
schema: the essentials the stack relies on, the effective configuration after interpolation (defaults
only, as on a host without a .env) and after merging the CPU override with Compose's merge rules.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import csv
import importlib.resources
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import pytest
import yaml
from support import ROOT
from support.compose import ComposeLoader, interpolate, load_compose, merge, schema_view, variables

COMPOSE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "docker-compose.cpu.yml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
LOCUSTFILE = ROOT / "iqaguard" / "bench" / "locustfile.py"
TRITON_PORTS = {8000, 8001, 8002}
CPU_FLAGS = {"--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0"}


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def schema_errors(schema: dict[str, Any], document: Any) -> list[str]:
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_compose(COMPOSE)


@pytest.fixture(scope="module")
def effective(raw: dict[str, Any]) -> dict[str, Any]:
    """docker-compose.yml as Compose resolves it on a host with no .env."""
    return interpolate(raw, env={})


@pytest.fixture(scope="module")
def effective_cpu(raw: dict[str, Any]) -> dict[str, Any]:
    return interpolate(merge(raw, load_compose(CPU_OVERRIDE)), env={})


def published(service: dict[str, Any]) -> dict[int, str]:
    """container port -> host binding ("[ip:]host_port") from the short port syntax."""
    result = {}
    for entry in service.get("ports", []):
        *host, container = str(entry).split(":")
        result[int(container.split("/")[0])] = ":".join(host)
    return result


def dockerfile_stages(path: Path) -> set[str]:
    return {
        cmd.value[-1]
        for cmd in dockerfile.parse_file(str(path))
        if cmd.cmd == "FROM" and "AS" in map(str.upper, cmd.value)
    }


# --- schema ---------------------------------------------------------------------------------------


def test_schema_is_the_compose_specification(compose_schema: dict[str, Any]) -> None:
    assert compose_schema["title"] == "Compose Specification"
    licence = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "licenses" / "LICENSE.compose-spec"
    assert "Apache License" in licence.read_text()


def test_compose_file_matches_the_schema(compose_schema: dict[str, Any], raw: dict[str, Any]) -> None:
    assert schema_errors(compose_schema, schema_view(raw)) == []


def test_interpolated_compose_file_matches_the_schema(compose_schema: dict[str, Any], effective: dict) -> None:
    assert schema_errors(compose_schema, effective) == []


def test_cpu_override_and_merged_stack_match_the_schema(compose_schema: dict[str, Any], effective_cpu: dict) -> None:
    assert schema_errors(compose_schema, schema_view(load_compose(CPU_OVERRIDE))) == []
    assert schema_errors(compose_schema, effective_cpu) == []


def test_schema_rejects_a_broken_service(compose_schema: dict[str, Any], effective: dict) -> None:
    """The validator is live: an unknown key and a wrongly typed GPU capability list are refused."""
    broken = copy.deepcopy(effective)
    broken["services"]["triton"]["restart_policy"] = "on-failure"
    broken["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] = "gpu"
    errors = "\n".join(schema_errors(compose_schema, broken))
    assert "'restart_policy' was unexpected" in errors
    assert "'gpu' is not of type 'array'" in errors


def test_check_jsonschema_cli_accepts_the_compose_file() -> None:
    """The command the deployment guide gives for checking the file by hand."""
    cli = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(cli), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- essentials -----------------------------------------------------------------------------------


def test_services(effective: dict[str, Any]) -> None:
    assert set(effective["services"]) == {
        "triton",
        "locust-master",
        "locust-worker",
        "locust-headless",
        "prometheus",
        "grafana",
    }


def test_every_variable_has_a_default_documented_in_env_example(raw: dict[str, Any]) -> None:
    used = variables(raw) | variables(load_compose(CPU_OVERRIDE))
    documented = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    assert set(used) == set(documented), "docker-compose variables and deploy/.env.example differ"
    for name, default in used.items():
        assert default is not None, f"${{{name}}} has no default"
        assert documented[name] == default, f"{name}: compose default {default!r}, .env.example {documented[name]!r}"


def test_triton_image_is_built_from_the_dockerfile(effective: dict[str, Any]) -> None:
    for name, service in effective["services"].items():
        if "build" not in service:
            continue
        build = service["build"]
        path = ROOT / build["context"] / build["dockerfile"]
        assert path.is_file(), f"{name}: {path} does not exist"
        assert build["target"] in dockerfile_stages(path), f"{name}: no stage {build['target']!r} in {path}"
    triton = effective["services"]["triton"]
    assert triton["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert triton["build"]["target"] == "triton"
    assert not (ROOT / "build" / "__init__.py").exists(), "build/ must not become an importable package"


def test_triton_serves_the_mounted_repository(effective: dict[str, Any]) -> None:
    triton = effective["services"]["triton"]
    command = triton["command"]
    assert command[0] == "tritonserver"
    assert "--model-repository=/models" in command
    for flag, port in (("--http-port", 8000), ("--grpc-port", 8001), ("--metrics-port", 8002)):
        assert f"{flag}={port}" in command
    (volume,) = [v for v in triton["volumes"] if v["target"] == "/models"]
    assert volume["type"] == "bind"
    assert volume["read_only"] is True
    assert (ROOT / volume["source"]).resolve() == ROOT / "model_repository"
    assert (ROOT / volume["source"] / "robust_classifier" / "config.pbtxt").is_file()


def test_triton_ports(effective: dict[str, Any]) -> None:
    ports = published(effective["services"]["triton"])
    assert set(ports) == TRITON_PORTS
    for port in TRITON_PORTS:
        assert ports[port].startswith("127.0.0.1:"), f"{port}: loopback unless TRITON_BIND/OPS_BIND says otherwise"


def test_triton_admin_apis_take_the_credential_from_the_environment(
    raw: dict[str, Any], effective: dict[str, Any]
) -> None:
    triton = effective["services"]["triton"]
    assert triton["command"][0] == "tritonserver", "the image's entrypoint adds the restricted-API flags"
    assert triton["environment"]["IQAGUARD_ADMIN_KEY"] == "", "no credential by default: admin APIs closed"
    assert raw["services"]["triton"]["environment"]["IQAGUARD_ADMIN_KEY"] == "${IQAGUARD_ADMIN_KEY:-}"
    assert not any("restricted" in arg for arg in triton["command"]), "the key must not sit in the compose file"


def test_triton_reserves_gpus(effective: dict[str, Any]) -> None:
    (device,) = effective["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert device["count"] == "all" or int(device["count"]) >= 1


def test_triton_healthcheck_probes_readiness(effective: dict[str, Any]) -> None:
    check = effective["services"]["triton"]["healthcheck"]
    # Deep readiness: a real inference (iqaguard.launcher.probe), on the image's own python3; no curl needed.
    assert check["test"][:4] == ["CMD", "python3", "-m", "iqaguard.launcher.probe"]
    assert _seconds(check["start_period"]) >= 60, "model loading needs a start period"
    assert _seconds(check["timeout"]) < _seconds(check["interval"])
    probe_timeout = float(check["test"][check["test"].index("--timeout") + 1])
    assert probe_timeout < _seconds(check["timeout"])


def test_triton_drains_within_its_stop_grace_period(effective: dict[str, Any]) -> None:
    triton = effective["services"]["triton"]
    drain = float(triton["environment"]["IQAGUARD_DRAIN_SECONDS"])
    exit_timeout = next(int(a.split("=")[1]) for a in triton["command"] if a.startswith("--exit-timeout-secs="))
    assert _seconds(triton["stop_grace_period"]) > drain + exit_timeout, "Docker would SIGKILL a draining server"


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


def test_triton_restarts_on_failure_and_has_room_for_the_python_backend(effective: dict[str, Any]) -> None:
    triton = effective["services"]["triton"]
    assert triton["restart"].startswith("on-failure")
    size = re.fullmatch(r"(\d+)([kmg])b?", triton["shm_size"].lower())
    assert size is not None
    assert int(size[1]) * {"k": 2**10, "m": 2**20, "g": 2**30}[size[2]] >= 256 * 2**20


def locustfile_interface() -> tuple[set[str], dict[str, str]]:
    """User classes the locustfile defines, and its options' environment variables (env var -> flag)."""
    tree = ast.parse(LOCUSTFILE.read_text())
    classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    env_vars = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            for keyword in node.keywords:
                if keyword.arg == "env_var" and isinstance(keyword.value, ast.Constant):
                    env_vars[keyword.value.value] = node.args[0].value
    return classes, env_vars


def test_locust_drives_triton_over_grpc(effective: dict[str, Any]) -> None:
    services = effective["services"]
    classes, env_vars = locustfile_interface()
    assert env_vars["IQAGUARD_GRPC_URL"] == "--grpc-url"
    for name in ("locust-master", "locust-worker", "locust-headless"):
        service = services[name]
        assert service["build"]["target"] == "loadgen"
        environment = service["environment"]
        assert environment["IQAGUARD_GRPC_URL"] == "triton:8001", "the triton service's gRPC port, in-network"
        assert set(environment) <= set(env_vars), f"{name}: variables the locustfile does not read"
        # gRPC only: the positional user class is the locustfile's gRPC user.
        user_classes = [arg for arg in service["command"] if not arg.startswith("-")]
        assert user_classes[-1:] == ["TritonGrpcUser"] and "TritonGrpcUser" in classes, name
    for name in ("locust-master", "locust-headless"):
        assert services[name]["depends_on"]["triton"]["condition"] == "service_healthy"
    worker = services["locust-worker"]["command"]
    assert "--worker" in worker and worker[worker.index("--master-host") + 1] == "locust-master"
    assert "--master" in services["locust-master"]["command"]
    assert 8089 in published(services["locust-master"])
    assert services["locust-worker"]["deploy"]["replicas"] >= 1


def test_locust_commands_parse_with_locusts_own_parser(effective: dict[str, Any]) -> None:
    """Locust's argument parser accepts each service's command (in a subprocess: importing locust
    monkey-patches the standard library for gevent, which must not happen inside the test session)."""
    commands = {
        name: effective["services"][name]["command"] for name in ("locust-master", "locust-worker", "locust-headless")
    }
    script = (
        "import json, sys\n"
        "from locust.argument_parser import get_parser\n"
        "out = {}\n"
        "for name, args in json.loads(sys.argv[1]).items():\n"
        "    o = get_parser().parse_args(['-f', sys.argv[2], *args])\n"
        "    out[name] = [o.user_classes, o.headless, o.num_users, o.master, o.worker, o.master_host]\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(commands), str(LOCUSTFILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    assert parsed["locust-master"] == [["TritonGrpcUser"], False, None, True, False, "127.0.0.1"]
    assert parsed["locust-worker"] == [["TritonGrpcUser"], False, None, False, True, "locust-master"]
    assert parsed["locust-headless"] == [["TritonGrpcUser"], True, 32, False, False, "127.0.0.1"]


@pytest.mark.integration
@pytest.mark.slow
def test_headless_profile_runs_against_a_real_server(effective: dict[str, Any], triton_server, tmp_path: Path) -> None:
    """The headless service's exact command line (shorter, report into tmp) against the embedded server."""
    command = list(effective["services"]["locust-headless"]["command"])
    for flag, value in (("--users", "2"), ("--spawn-rate", "2"), ("--run-time", "4s")):
        command[command.index(flag) + 1] = value
    command[command.index("--csv") + 1] = str(tmp_path / "locust")
    command[command.index("--html") + 1] = str(tmp_path / "locust.html")
    environment = dict(os.environ, **effective["services"]["locust-headless"]["environment"])
    environment["IQAGUARD_GRPC_URL"] = triton_server.grpc_url  # the embedded server instead of triton:8001
    log = tmp_path / "locust.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *command],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,  # its own process group, stopped below whatever happens
        )
        try:
            returncode = process.wait(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    assert returncode == 0, log.read_text()[-4000:]
    with (tmp_path / "locust_stats.csv").open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0
    assert all(row["Type"] == "gRPC" for name, row in rows.items() if name != "Aggregated")
    assert (tmp_path / "locust.html").stat().st_size > 0


def test_locustfile_in_the_image_exists() -> None:
    instructions = dockerfile.parse_file(str(ROOT / "deploy" / "docker" / "Dockerfile"))
    entrypoint = next(c for c in instructions if c.cmd == "ENTRYPOINT" and c.value[0] == "locust")
    locustfile = entrypoint.value[entrypoint.value.index("-f") + 1]
    assert locustfile.startswith("/opt/iqaguard/")
    assert (ROOT / locustfile.removeprefix("/opt/iqaguard/")).is_file(), f"{locustfile} is not in the repository"


def test_headless_profile(effective: dict[str, Any]) -> None:
    headless = effective["services"]["locust-headless"]
    assert headless["profiles"] == ["headless"]
    command = headless["command"]
    assert "--headless" in command
    for flag in ("--users", "--spawn-rate", "--run-time", "--stop-timeout", "--csv", "--html"):
        assert flag in command, flag
    assert int(command[command.index("--users") + 1]) > 0


@pytest.mark.parametrize("service", ["locust-headless", "locust-master"])
def test_a_stopped_run_lets_requests_in_flight_finish(effective: dict[str, Any], service: str) -> None:
    """Cancelling in-flight gRPC requests can crash Triton 24.10 (upstream #7840), so runs end gracefully."""
    command = [str(part) for part in effective["services"][service]["command"]]
    assert float(command[command.index("--stop-timeout") + 1]) >= 10
    # The interactive services stay out of the profile, so `up` without it gives the web UI.
    assert "profiles" not in effective["services"]["locust-master"]


def test_prometheus_mounts_the_checked_in_config(effective: dict[str, Any]) -> None:
    prometheus = effective["services"]["prometheus"]
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    target = config_flag.split("=", 1)[1]
    (mount,) = [v for v in prometheus["volumes"] if v.split(":")[1] == target]
    source = ROOT / mount.split(":")[0]
    assert source == ROOT / "deploy" / "prometheus" / "prometheus.yml"
    assert source.is_file()
    assert mount.endswith(":ro")


def test_bind_mount_sources_exist(effective: dict[str, Any]) -> None:
    outputs = {"./reports"}  # written by the headless run; Docker creates it
    for name, service in effective["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith(".") and source not in outputs:
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"


def test_dependencies_and_named_volumes_exist(effective: dict[str, Any]) -> None:
    services = effective["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in effective["volumes"], f"{name}: undeclared volume {source}"


def test_operator_ports_are_loopback_by_default(effective: dict[str, Any]) -> None:
    for name in ("locust-master", "prometheus", "grafana"):
        for binding in published(effective["services"][name]).values():
            assert binding.startswith("127.0.0.1:"), f"{name} publishes {binding}"


# --- the CPU-only override --------------------------------------------------------------------------


def test_cpu_override_removes_the_gpu_reservation(effective_cpu: dict[str, Any]) -> None:
    triton = effective_cpu["services"]["triton"]
    reservations = triton.get("deploy", {}).get("resources", {}).get("reservations", {})
    assert "devices" not in reservations
    assert "gpu" not in json.dumps(triton.get("deploy", {})).lower()


def test_cpu_override_keeps_everything_else(effective: dict[str, Any], effective_cpu: dict[str, Any]) -> None:
    gpu, cpu = effective["services"]["triton"], effective_cpu["services"]["triton"]
    assert cpu["command"] == gpu["command"] + sorted(CPU_FLAGS, key=cpu["command"].index)
    assert set(cpu["command"]) - set(gpu["command"]) == CPU_FLAGS
    for key in ("build", "image", "ports", "volumes", "healthcheck", "restart", "shm_size"):
        assert cpu[key] == gpu[key], key
    assert {k: v for k, v in effective_cpu["services"].items() if k != "triton"} == {
        k: v for k, v in effective["services"].items() if k != "triton"
    }


def test_merge_helper_follows_compose_rules() -> None:
    """The merge used above: sequences append, commands replace, !reset removes."""
    base = {"services": {"a": {"command": ["x"], "dns": ["1.1.1.1"], "deploy": {"replicas": 2}}}}
    override = yaml.load(
        "services:\n  a:\n    command: [y]\n    dns: [8.8.8.8]\n    deploy: !reset {}\n", Loader=ComposeLoader
    )
    assert merge(base, override) == {"services": {"a": {"command": ["y"], "dns": ["1.1.1.1", "8.8.8.8"]}}}
