"""The operator's own /metrics, scraped over HTTP while the in-process operator reconciles."""

from __future__ import annotations

import dataclasses
import socket
import urllib.request

import pytest
from clusterkit import wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_trainingjob import create, trainingjob

from conftest import OperatorRunner
from mlops_operator.kube import Kube
from mlops_operator.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_operator_metrics_are_served_while_it_runs(
    kube: Kube, namespace: str, test_settings: Settings
) -> None:
    port = free_port()
    runner = OperatorRunner(namespace, dataclasses.replace(test_settings, metrics_port=port)).start()
    try:
        create(kube, namespace, trainingjob("ok"))
        create(
            kube,
            namespace,
            trainingjob("typo", estimator={"class": "RandomForestClassifier", "params": {"n_estimatorz": 1}}),
        )
        samples = wait_for(
            lambda: (
                (s := scrape(port))
                and sample(s, "mlops_operator_active_resources", kind="TrainingJob") == 2
                and sample(s, "mlops_operator_reconciles_total", kind="TrainingJob", outcome="success") >= 2
                and s
            ),
            what="reconciles of both TrainingJobs in /metrics",
        )
        assert sample(samples, "mlops_operator_reconcile_duration_seconds_count", kind="TrainingJob") >= 2
        assert sample(samples, "mlops_operator_active_resources", kind="InferenceService") == 0
        assert (
            "mlops_operator_reconciles_total",
            frozenset({("kind", "ModelVersion"), ("outcome", "error")}),
        ) in samples
    finally:
        runner.stop()
    # The endpoint goes away with the operator (its cleanup handler shuts the server down).
    with pytest.raises(OSError):
        scrape(port)
