"""The guard's alert rules: Prometheus' own tools accept them and their unit tests pass; every deployment
loads the same rules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support import ROOT

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml"
EXPECTED_ALERTS = {"GuardRejectionRateHigh", "GuardAdversarialSpike", "GuardInvalidInputSpike", "GuardSetNotReady",
                   "TritonDown", "GuardLatencyP99High"}  # fmt: skip
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (`make setup`)")


def _alerts() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_is_there_with_a_delay_a_severity_and_a_summary() -> None:
    alerts = _alerts()
    assert {rule["alert"] for rule in alerts} == EXPECTED_ALERTS
    for rule in alerts:
        assert rule.get("for"), f"{rule['alert']}: no `for` (a single scrape would page someone)"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_rejection_alert_uses_the_builds_own_rate() -> None:
    (rule,) = [r for r in _alerts() if r["alert"] == "GuardRejectionRateHigh"]
    assert "iqaguard_calibrated_rejection_rate" in rule["expr"] and rule["for"] == "10m"


@needs_promtool
def test_promtool_checks_and_unit_tests_pass() -> None:
    checked = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(["promtool", "test", "rules", ALERTS_TEST.name], cwd=PROMETHEUS_DIR,
                            capture_output=True, text=True)  # fmt: skip
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    tested_alerts = {t["alertname"] for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
                     for t in case["alert_rule_test"]}  # fmt: skip
    assert tested_alerts == EXPECTED_ALERTS, "every alert has a unit test"


@needs_promtool
def test_a_rule_that_never_fires_fails_the_unit_tests(tmp_path: Path) -> None:
    broken = ALERTS.read_text().replace("clamp_min(3 * max by (set)", "clamp_min(30 * max by (set)")
    assert broken != ALERTS.read_text()
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
    tested = subprocess.run(["promtool", "test", "rules", ALERTS_TEST.name], cwd=tmp_path,
                            capture_output=True, text=True)  # fmt: skip
    assert tested.returncode != 0 and "GuardRejectionRateHigh" in tested.stdout + tested.stderr


@needs_promtool
def test_prometheus_config_loads_the_rules(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(PROMETHEUS_DIR / name, tmp_path / name)
    checked = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                             capture_output=True, text=True)  # fmt: skip
    assert checked.returncode == 0 and "16 rules found" in checked.stdout, checked.stdout + checked.stderr
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_kubernetes_carries_the_same_rules() -> None:
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["namespace"] == "iqaguard"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
