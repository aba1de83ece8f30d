"""manifests/monitoring (issue #21): the kustomize Component renders beside the base install, its
monitors select what the operator really labels, and the dashboard covers what the issue lists.
promtool itself (rules, alert tests, query syntax) runs in `make lint` (tests/monitoring/promtool.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_manifests import MANIFESTS, kubectl_binary

from mlops_operator.build.common import labels
from mlops_operator.build.inferenceservice import COMPONENT, MONITORING_PORT_NAME


def render_with_monitoring(tmp_path: Path) -> list[dict[str, Any]]:
    binary = kubectl_binary()
    if binary is None:
        pytest.skip("no kubectl: set MLOPS_KUBECTL or put kubectl on PATH")
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes no absolute paths: relative ones, out of the root (hence the flag).
                "resources": [os.path.relpath(MANIFESTS / "base", tmp_path)],
                "components": [os.path.relpath(MANIFESTS / "monitoring", tmp_path)],
            }
        )
    )
    out = subprocess.run(
        [binary, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_the_component_adds_monitors_rules_and_the_dashboard(tmp_path: Path) -> None:
    docs = render_with_monitoring(tmp_path)
    by_kind = {d["kind"]: d for d in docs}
    assert {"PodMonitor", "ServiceMonitor", "PrometheusRule", "Deployment"} <= by_kind.keys()
    dashboards = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 1
    json.loads(dashboards[0]["data"]["mlops-inferenceservice.json"])


def test_the_pod_monitor_selects_the_serving_pods_the_builder_labels(tmp_path: Path) -> None:
    (pm,) = [d for d in render_with_monitoring(tmp_path) if d["kind"] == "PodMonitor"]
    pod_labels = labels(COMPONENT, "iris", "iris")
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == [MONITORING_PORT_NAME]


def test_the_service_monitor_selects_the_operators_metrics_service(tmp_path: Path) -> None:
    docs = render_with_monitoring(tmp_path)
    (sm,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    services = [
        d
        for d in docs
        if d["kind"] == "Service"
        and sm["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in services] == ["mlops-operator-metrics"]
    assert {p["name"] for p in services[0]["spec"]["ports"]} >= {e["port"] for e in sm["spec"]["endpoints"]}


def test_the_alerts_cover_what_the_issue_lists() -> None:
    rule = yaml.safe_load((MANIFESTS / "monitoring" / "prometheusrule.yaml").read_text())
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {
        "MlopsInferenceDriftHigh",
        "MlopsInferenceAccuracyLow",
        "MlopsInferenceErrorRateHigh",
        "MlopsCanaryRolledBack",
        "MlopsRetrainingFailed",
        "MlopsOperatorDown",
        "MlopsInferenceScrapeFailing",
    }


def test_the_dashboard_has_a_panel_per_signal_filtered_by_its_inference_service() -> None:
    doc = json.loads((MANIFESTS / "monitoring" / "dashboard.json").read_text())
    exprs = {p["title"]: p["targets"][0]["expr"] for p in doc["panels"]}
    for metric in (
        "mlops_requests_total",
        "mlops_request_duration_seconds_bucket",
        "mlops_drift_psi",
        "mlops:feedback_accuracy:weighted",
        "mlops_model_info",
        "mlops_operator_retraining_triggers_total",
    ):
        assert any(metric in e for e in exprs.values()), metric
    assert all('inference_service="$inference_service"' in e for e in exprs.values()), exprs
