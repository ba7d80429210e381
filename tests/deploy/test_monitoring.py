"""Prometheus, Grafana and autoscaling queries: they parse, point at Triton, and use real metric names.

PromQL is parsed with promql-parser (Prometheus' grammar); the metric names it selects are checked
against the metrics the real Triton 2.51 server (the embedded one, same release as the container)
exposes, so a renamed or misspelt metric fails here rather than as an empty Grafana panel or an HPA
that never scales.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import promql_parser
import pytest
import tritonclient.http as httpclient
import yaml
from support import ROOT
from support.images import encode
from tritonclient.utils import InferenceServerException

from iqaguard.contract import ENSEMBLE, PREPROCESSOR
from iqaguard.operations.prometheus_text import family_total, scrape

PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "iqaguard-triton.json"
ADAPTER = ROOT / "deploy" / "k8s" / "monitoring" / "prometheus-adapter-values.yaml"
HPA = ROOT / "deploy" / "k8s" / "hpa.yaml"

# Triton's per-model and server metrics (metrics.md of the 24.10 docs); the embedded server confirms the
# non-GPU ones in test_every_queried_metric_exists_on_the_real_server. GPU metrics need a GPU to appear.
TRITON_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count",
    "nv_inference_request_summary_us",
    "nv_cpu_utilization",
    "nv_cpu_memory_used_bytes",
    "nv_cpu_memory_total_bytes",
}
# The guard's own metrics (iqaguard.in_triton.guard_metrics), on the same endpoint.
GUARD_METRICS = {
    "iqaguard_verdicts_total", "iqaguard_invalid_inputs_total", "iqaguard_suspicion_bucket", "iqaguard_quality_bucket",
    "iqaguard_calibrated_rejection_rate", "iqaguard_set_live_version", "iqaguard_probe_flags_total",
}  # fmt: skip
GPU_METRICS = {"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes", "nv_gpu_power_usage"}


def selected_metrics(expression: str) -> set[str]:
    """Metric names a PromQL expression selects (parse errors raise)."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expression), pre_visit=visit)
    return names


def grafana_to_promql(expression: str) -> str:
    """Replace Grafana's variables by values Prometheus would see."""
    return expression.replace("$__rate_interval", "1m").replace("$model", ".*").replace("$set", ".*")


def adapter_to_promql(template: str) -> str:
    """Fill prometheus-adapter's Go-template placeholders the way the adapter does for one pod."""
    return (
        template.replace("<<.LabelMatchers>>", 'namespace="iqaguard",pod="iqaguard-triton-0"')
        .replace("<<.GroupBy>>", "pod")
        .replace("<<.Series>>", "nv_inference_request_success")
    )


def graph_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's panels that query something (rows only group them)."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in graph_panels(dashboard) for target in panel["targets"]]


def adapter_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(ADAPTER.read_text())["rules"]["custom"]


# --- Prometheus -----------------------------------------------------------------------------------


def test_prometheus_scrapes_triton_metrics_port() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "triton"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == ["triton:8002"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "--metrics-port=8002" in compose["services"]["triton"]["command"]
    # Triton refreshes interval-based metrics every 2 s; scraping faster only repeats values.
    assert re.fullmatch(r"\d+s", config["global"]["scrape_interval"])
    assert int(config["global"]["scrape_interval"][:-1]) >= 2


def test_prometheus_config_has_only_known_top_level_keys() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert set(config) <= {"global", "scrape_configs", "rule_files", "alerting", "remote_write", "remote_read"}
    for job in config["scrape_configs"]:
        assert set(job) <= {"job_name", "metrics_path", "static_configs", "scrape_interval", "scheme"}
        assert len({j["job_name"] for j in config["scrape_configs"]}) == len(config["scrape_configs"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_accepts_the_config_and_every_query(tmp_path: Path) -> None:
    """Prometheus' own checker, where installed: the scrape config, and each query as a recording rule."""
    result = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    queries = [grafana_to_promql(e) for e in dashboard_expressions()]
    queries += [adapter_to_promql(rule["metricsQuery"]) for rule in adapter_rules()]
    rules = {
        "groups": [
            {"name": "iqaguard", "rules": [{"record": f"iqaguard:q{i}", "expr": q} for i, q in enumerate(queries)]}
        ]
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(queries)} rules found" in result.stdout


# --- Grafana --------------------------------------------------------------------------------------


def test_grafana_datasource_and_dashboard_provisioning() -> None:
    (datasource,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "iqaguard.yml").read_text())["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in compose["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = compose["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"

    dashboard = json.loads(DASHBOARD.read_text())
    uids = {panel["datasource"]["uid"] for panel in graph_panels(dashboard)}
    uids |= {t["datasource"]["uid"] for panel in graph_panels(dashboard) for t in panel["targets"]}
    uids |= {v["datasource"]["uid"] for v in dashboard["templating"]["list"]}
    assert uids == {datasource["uid"]}


def test_dashboard_layout() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            assert grid["h"] == 1 and grid["w"] == 24 and not panel["collapsed"], panel["title"]
            continue
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_guard_panels_sit_under_the_guard_row() -> None:
    """Everything after the "Guard" row is about the guard (or the ensembles it answers for)."""
    panels = sorted(json.loads(DASHBOARD.read_text())["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    (row,) = [p for p in panels if p["type"] == "row"]
    assert row["title"] == "Guard"
    below = panels[panels.index(row) + 1 :]
    above = panels[: panels.index(row)]
    assert all(p["gridPos"]["y"] > row["gridPos"]["y"] for p in below)
    guard = {name for p in below for t in p["targets"] for name in selected_metrics(grafana_to_promql(t["expr"]))}
    assert guard >= GUARD_METRICS | {"nv_inference_request_summary_us"}
    assert not any("iqaguard_" in t["expr"] for p in above for t in p["targets"])


def test_dashboard_queries_parse_and_use_triton_metrics() -> None:
    used: set[str] = set()
    for expression in dashboard_expressions():
        names = selected_metrics(grafana_to_promql(expression))
        assert names, expression
        used |= names
    assert used <= TRITON_METRICS | GPU_METRICS | GUARD_METRICS, used - TRITON_METRICS - GPU_METRICS - GUARD_METRICS
    assert used >= GUARD_METRICS, "every guard metric has a panel"
    # Throughput, latency, queue time, failures/rejections and batching are all on the dashboard.
    assert {
        "nv_inference_request_success",
        "nv_inference_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_request_failure",
        "nv_inference_exec_count",
    } <= used


def test_dashboard_shows_failures_by_reason() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    failures = [
        t["expr"] for p in graph_panels(dashboard) for t in p["targets"] if "nv_inference_request_failure" in t["expr"]
    ]
    assert any(re.search(r"by \(model, reason\)", e) for e in failures)


def test_promql_check_is_live() -> None:
    with pytest.raises(ValueError):
        selected_metrics("sum(rate(nv_inference_count[1m])")
    assert selected_metrics("rate(nv_inference_count[1m]) / rate(nv_inference_exec_count[1m])") == {
        "nv_inference_count",
        "nv_inference_exec_count",
    }


# --- autoscaling ----------------------------------------------------------------------------------


def test_adapter_rules_parse_and_use_triton_metrics() -> None:
    rules = adapter_rules()
    assert rules
    for rule in rules:
        series = rule["seriesQuery"].strip("'")
        assert selected_metrics(series) <= TRITON_METRICS
        assert selected_metrics(adapter_to_promql(rule["metricsQuery"])) <= TRITON_METRICS
        assert re.fullmatch(rule["name"]["matches"], next(iter(selected_metrics(series))))
        assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"
        assert rule["resources"]["overrides"]["namespace"]["resource"] == "namespace"


def test_queue_time_metric_excludes_the_ensembles() -> None:
    """Ensemble schedulers do not queue; averaging them in would dilute the members' queue time. Every set's
    ensemble counts as a request (robust_classifier and robust_classifier_<set>)."""
    rules = {r["name"]["as"]: r for r in adapter_rules()}
    assert f'model!~"{ENSEMBLE}.*"' in rules["triton_queue_time_us_per_request"]["metricsQuery"]
    assert f'model=~"{ENSEMBLE}(_.+)?"' in rules["triton_ensemble_requests_per_second"]["metricsQuery"]


def test_hpa_metrics_are_served_by_the_adapter() -> None:
    hpa = yaml.safe_load(HPA.read_text())
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    served = {rule["name"]["as"] for rule in adapter_rules()}
    assert wanted and wanted <= served


# --- against the real server ----------------------------------------------------------------------


@pytest.mark.integration
def test_every_queried_metric_exists_on_the_real_server(triton_server) -> None:
    exposed = {key.split("{")[0] for key in scrape(triton_server.metrics_url)}
    queried = {name for e in dashboard_expressions() for name in selected_metrics(grafana_to_promql(e))}
    for rule in adapter_rules():
        queried |= selected_metrics(adapter_to_promql(rule["metricsQuery"]))
    missing = (queried - GPU_METRICS) - exposed
    assert not missing, f"queried but not exposed by Triton: {missing}"
    assert TRITON_METRICS - {"nv_cpu_memory_used_bytes", "nv_cpu_utilization", "nv_cpu_memory_total_bytes"} <= exposed
    assert exposed >= GUARD_METRICS


@pytest.mark.integration
def test_a_rejected_image_counts_as_an_ensemble_failure(triton_server, photo: np.ndarray) -> None:
    """What the dashboard's failure panels rely on (and their descriptions say), on the real server."""
    client = httpclient.InferenceServerClient(triton_server.http_url)

    def send(data: bytes) -> None:
        tensor = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        client.infer(ENSEMBLE, [tensor])

    before = scrape(triton_server.metrics_url)
    send(encode(photo, "JPEG", quality=90))
    with pytest.raises(InferenceServerException):
        send(b"this is not an image")
    client.close()
    deadline = time.monotonic() + 10
    while True:
        after = scrape(triton_server.metrics_url)
        failed = family_total(after, "nv_inference_request_failure", model=ENSEMBLE) - family_total(
            before, "nv_inference_request_failure", model=ENSEMBLE
        )
        if failed or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert family_total(after, "nv_inference_request_success", model=ENSEMBLE) > family_total(
        before, "nv_inference_request_success", model=ENSEMBLE
    )
    assert failed == 2, "Triton 2.51 counts a failed ensemble request twice; update the dashboard text if not"
    member_failed = family_total(after, "nv_inference_request_failure", model=PREPROCESSOR) - family_total(
        before, "nv_inference_request_failure", model=PREPROCESSOR
    )
    assert member_failed == 0, "the per-request error is counted against the ensemble, not the member"
