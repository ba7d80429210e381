"""deploy/k8s: validated offline against the Kubernetes JSON schemas, then checked for the essentials.

Schemas: the kubernetes-validate package (test extras) bundles the OpenAPI-derived JSON schemas of
Kubernetes 1.25-1.37 and validates strictly (unknown fields are errors) with no network access.
It has no schemas for CRDs, so the prometheus-operator ServiceMonitor is checked by hand.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support import ROOT

K8S = ROOT / "deploy" / "k8s"
NAMESPACE = "iqaguard"
# Oldest and newest supported minor releases plus one in between: the manifests use only stable APIs.
KUBERNETES_VERSIONS = ("1.27", "1.31", kubernetes_validate.latest_version())
CRD_KINDS = {"ServiceMonitor"}


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def base_manifests() -> list[dict[str, Any]]:
    return [doc for name in kustomization()["resources"] for doc in load_documents(K8S / name)]


def all_manifests() -> list[dict[str, Any]]:
    return base_manifests() + load_documents(K8S / "monitoring" / "servicemonitor.yaml")


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in all_manifests() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment() -> dict[str, Any]:
    return one("Deployment", "iqaguard-triton")


def triton_container() -> dict[str, Any]:
    (container,) = [c for c in deployment()["spec"]["template"]["spec"]["containers"] if c["name"] == "triton"]
    return container


def subset(labels: dict[str, str], of: dict[str, str]) -> bool:
    return all(of.get(k) == v for k, v in labels.items())


# --- schema ---------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert kustomization()["namespace"] == NAMESPACE


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    checked = []
    for document in all_manifests():
        if document["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(document, version, strict=True)
        checked.append(document["kind"])
    assert sorted(checked) == sorted(
        ["Namespace", "ConfigMap", "Deployment", "Service", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    )


def test_schema_validation_is_strict_and_offline() -> None:
    """A misspelt probe and a non-numeric port are refused; CRDs are indeed outside the bundled schemas."""
    broken = copy.deepcopy(deployment())
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    broken = copy.deepcopy(deployment())
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError, match="not of type 'integer'"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(one("ServiceMonitor"), KUBERNETES_VERSIONS[-1], strict=True)


def test_every_object_is_namespaced_and_labelled_consistently() -> None:
    for document in all_manifests():
        metadata = document["metadata"]
        if document["kind"] == "Namespace":
            assert metadata["name"] == NAMESPACE
            continue
        assert metadata["namespace"] == NAMESPACE, f"{document['kind']} {metadata['name']}"
        assert metadata["labels"]["app.kubernetes.io/part-of"] == "iqaguard"


# --- the Deployment ---------------------------------------------------------------------------------


def test_selectors_match_the_pod_template() -> None:
    spec = deployment()["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert set(spec["selector"]) == {"matchLabels"}
    assert subset(spec["selector"]["matchLabels"], pod_labels)
    services = [d for d in base_manifests() if d["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"iqaguard-triton", "iqaguard-triton-grpc"}
    for service in services:
        assert subset(service["spec"]["selector"], pod_labels), service["metadata"]["name"]
    assert subset(one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    for constraint in spec["template"]["spec"]["topologySpreadConstraints"]:
        assert subset(constraint["labelSelector"]["matchLabels"], pod_labels)
    # And the selector is specific: it would not match some other app's pods in the namespace.
    assert "app.kubernetes.io/component" in spec["selector"]["matchLabels"]


def test_gpu_resources() -> None:
    resources = triton_container()["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    # Extended resources cannot be overcommitted: a request, if given, must equal the limit.
    assert (
        resources["requests"].get("nvidia.com/gpu", resources["limits"]["nvidia.com/gpu"])
        == (resources["limits"]["nvidia.com/gpu"])
    )
    assert "memory" in resources["limits"] and "memory" in resources["requests"]
    tolerations = deployment()["spec"]["template"]["spec"]["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)


def test_ports() -> None:
    ports = {p["name"]: p["containerPort"] for p in triton_container()["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    args = triton_container()["args"]
    for flag, port in (("--http-port", 8000), ("--grpc-port", 8001), ("--metrics-port", 8002)):
        assert f"{flag}={port}" in args
    for service in (d for d in base_manifests() if d["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (
                f"{service['metadata']['name']}: unknown targetPort {port['targetPort']}"
            )
            assert port["port"] == ports[port["targetPort"]]
    clusterip = one("Service", "iqaguard-triton")["spec"]
    assert {p["name"] for p in clusterip["ports"]} == {"http", "grpc", "metrics"}
    headless = one("Service", "iqaguard-triton-grpc")["spec"]
    assert headless["clusterIP"] == "None", "client-side gRPC balancing needs one DNS record per pod"
    assert [p["name"] for p in headless["ports"]] == ["grpc"]


def test_probes_use_tritons_health_endpoints_and_the_deep_probe() -> None:
    container = triton_container()
    named_ports = {p["name"] for p in container["ports"]}
    for probe, path in {"startupProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live"}.items():
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path, probe
        assert http_get["port"] == "http" and "http" in named_ports, probe
    # Readiness: a real inference through the ensemble (a dead stub leaves /v2/health/ready at 200).
    readiness = container["readinessProbe"]
    command = readiness["exec"]["command"]
    assert command[:3] == ["python3", "-m", "iqaguard.launcher.probe"]
    assert float(command[command.index("--timeout") + 1]) < readiness["timeoutSeconds"]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model loading from a bucket takes minutes"
    assert container["livenessProbe"]["timeoutSeconds"] < container["livenessProbe"]["periodSeconds"]


def test_model_repository_comes_from_the_configmap() -> None:
    container = triton_container()
    args = container["args"]
    assert args[0] == "tritonserver"
    assert "--model-repository=$(MODEL_REPOSITORY)" in args
    env = {e["name"]: e for e in container["env"]}
    reference = env["MODEL_REPOSITORY"]["valueFrom"]["configMapKeyRef"]
    configmap = one("ConfigMap", reference["name"])
    location = configmap["data"][reference["key"]]
    assert location.startswith(("s3://", "gs://", "az://", "/")), location
    # Every $(VAR) in the args is defined in `env`, or Kubernetes passes the text through literally.
    for arg in args:
        if "$(" in arg:
            assert arg.split("$(", 1)[1].split(")", 1)[0] in env, arg
    store = container["envFrom"][0]["secretRef"]
    assert store["optional"] is True, "workload identity setups have no credentials Secret"


def test_shared_memory_and_graceful_shutdown() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    container = triton_container()
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    assert volumes[mount["name"]]["emptyDir"]["medium"] == "Memory"
    exit_timeout = next(int(a.split("=")[1]) for a in container["args"] if a.startswith("--exit-timeout-secs="))
    drain = float({e["name"]: e for e in container["env"]}["IQAGUARD_DRAIN_SECONDS"]["value"])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep", "the Services drop the pod before SIGTERM starts the drain"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain + exit_timeout


def test_admin_credential_comes_from_an_optional_secret() -> None:
    env = {e["name"]: e for e in triton_container()["env"]}
    reference = env["IQAGUARD_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    assert reference["optional"] is True, "without the Secret the admin APIs are closed, and the pod still starts"
    assert not any("restricted" in arg for arg in triton_container()["args"]), "the image's entrypoint adds them"


def test_image_matches_compose_and_kustomization() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image = triton_container()["image"]
    assert image == compose["services"]["triton"]["image"]
    name, tag = image.rsplit(":", 1)
    (entry,) = [i for i in kustomization()["images"] if i["name"] == name]
    assert entry.get("newTag", tag) == tag


# --- autoscaling and disruption ---------------------------------------------------------------------


def test_hpa_targets_the_deployment_on_custom_metrics() -> None:
    hpa = one("HorizontalPodAutoscaler")["spec"]
    target = deployment()
    assert hpa["scaleTargetRef"] == {
        "apiVersion": target["apiVersion"],
        "kind": target["kind"],
        "name": target["metadata"]["name"],
    }
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert target["spec"]["replicas"] == hpa["minReplicas"]
    kinds = {m["type"] for m in hpa["metrics"]}
    assert kinds == {"Pods"}, "scale on Triton's own signals (queue time, request rate), not CPU"
    names = {m["pods"]["metric"]["name"] for m in hpa["metrics"]}
    assert "triton_queue_time_us_per_request" in names
    scale_down = hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
    assert scale_down >= hpa["behavior"]["scaleUp"]["stabilizationWindowSeconds"]


def test_disruption_budget_leaves_room_to_drain() -> None:
    pdb = one("PodDisruptionBudget")["spec"]
    assert 1 <= pdb["minAvailable"] < one("HorizontalPodAutoscaler")["spec"]["minReplicas"]


def test_servicemonitor_scrapes_the_metrics_port() -> None:
    monitor = one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert spec["namespaceSelector"]["matchNames"] == [NAMESPACE]
    selected = [
        s
        for s in base_manifests()
        if s["kind"] == "Service" and subset(spec["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert selected
    (endpoint,) = spec["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert any(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected)
