"""The operator's own Prometheus metrics (not the serving pods'; those are scraped into status).

One `OperatorMetrics` per operator process, in its own registry (so several in-process
operators in tests never share counters), passed through the reconcile Context. Label values
are bounded: kinds, outcomes, error classes, trigger and decision names; the retraining and
canary counters also name their InferenceService (`namespace`, `inference_service`: one series
per service and value, as kube-state-metrics does), so alerts and the dashboard can say which.
Served over HTTP only when a metrics port is configured (`--metrics-port`, MLOPS_METRICS_PORT).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

KINDS: Final = ("TrainingJob", "ModelVersion", "InferenceService")
# Reconcile passes are API round trips plus small computations: 5 ms to a minute.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconciles = Counter(
            "mlops_operator_reconciles",
            "Reconcile passes by kind and outcome (success, error).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mlops_operator_reconcile_duration_seconds",
            "Wall time of one reconcile pass.",
            ["kind"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "mlops_operator_reconcile_errors",
            "Failed reconcile passes by kind and error (api_<HTTP status> or the exception class).",
            ["kind", "error"],
            registry=self.registry,
        )
        self.retraining = Counter(
            "mlops_operator_retraining_triggers",
            "Retraining TrainingJobs created, by InferenceService and trigger (drift, accuracy, schedule, manual).",
            ["namespace", "inference_service", "trigger"],
            registry=self.registry,
        )
        self.retraining_finished = Counter(
            "mlops_operator_retraining_runs_finished",
            "Retraining TrainingJobs that finished, by InferenceService and outcome (succeeded, failed).",
            ["namespace", "inference_service", "outcome"],
            registry=self.registry,
        )
        self.canary = Counter(
            "mlops_operator_canary_decisions",
            "Canary analyses decided, by InferenceService and decision (promote, rollback).",
            ["namespace", "inference_service", "decision"],
            registry=self.registry,
        )
        self.scrape_failures = Counter(
            "mlops_operator_scrape_failures",
            "Serving pod /metrics scrapes that failed, by reason (connect, timeout, status, too_large, malformed).",
            ["reason"],
            registry=self.registry,
        )
        self.active = Gauge(
            "mlops_operator_active_resources",
            "Resources of each kind with a running reconcile loop in this replica.",
            ["kind"],
            registry=self.registry,
        )
        for kind in KINDS:  # present from the start, so dashboards see zeros, not gaps
            self.reconciles.labels(kind, "success")
            self.reconciles.labels(kind, "error")
            self.active.labels(kind).set(0)

    def observe(self, kind: str, seconds: float, error: str | None = None) -> None:
        """Record one reconcile pass: its duration and outcome (`error` names the failure)."""
        self.duration.labels(kind).observe(seconds)
        self.reconciles.labels(kind, "error" if error else "success").inc()
        if error:
            self.errors.labels(kind, error).inc()

    def triggered(self, namespace: str, name: str, trigger: str) -> None:
        """A retraining TrainingJob was created (count only what was created)."""
        self.retraining.labels(namespace, name, trigger).inc()

    def retraining_done(self, namespace: str, name: str, outcome: str) -> None:
        """A retraining TrainingJob of InferenceService `name` reached Succeeded or Failed."""
        self.retraining_finished.labels(namespace, name, outcome).inc()

    def canary_decided(self, namespace: str, name: str, decision: str) -> None:
        """A canary was promoted or rolled back."""
        self.canary.labels(namespace, name, decision).inc()

    def scrape_failed(self, reason: str) -> None:
        self.scrape_failures.labels(reason).inc()

    def track_active(self, count: Callable[[str], int]) -> None:
        """Read the active-resource gauge from `count(kind)` at scrape time."""
        for kind in KINDS:
            self.active.labels(kind).set_function(functools.partial(count, kind))
