"""The operator's own metrics: what a reconcile pass, a failure and a retraining trigger
record, the active-resource gauge, and the port setting."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from prometheus_client import generate_latest

from mlops_operator.__main__ import _parser
from mlops_operator.kube import KubeError
from mlops_operator.metrics import OperatorMetrics
from mlops_operator.reconcile.context import Context
from mlops_operator.reconcile.controller import Controller, Kind
from mlops_operator.settings import Settings
from mlops_operator.store import Store, StoreKube


def value(m: OperatorMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_a_pass_records_duration_and_outcome() -> None:
    m = OperatorMetrics()
    m.observe("TrainingJob", 0.02)
    m.observe("TrainingJob", 0.3, error="api_409")
    m.observe("TrainingJob", 0.1, error="ValueError")
    assert value(m, "mlops_operator_reconciles_total", kind="TrainingJob", outcome="success") == 1
    assert value(m, "mlops_operator_reconciles_total", kind="TrainingJob", outcome="error") == 2
    assert value(m, "mlops_operator_reconcile_errors_total", kind="TrainingJob", error="api_409") == 1
    assert value(m, "mlops_operator_reconcile_errors_total", kind="TrainingJob", error="ValueError") == 1
    assert value(m, "mlops_operator_reconcile_duration_seconds_count", kind="TrainingJob") == 3
    assert value(m, "mlops_operator_reconcile_duration_seconds_bucket", kind="TrainingJob", le="0.025") == 1


def test_every_kind_starts_at_zero() -> None:
    m = OperatorMetrics()
    for kind in ("TrainingJob", "ModelVersion", "InferenceService"):
        assert value(m, "mlops_operator_reconciles_total", kind=kind, outcome="success") == 0
        assert value(m, "mlops_operator_active_resources", kind=kind) == 0


def test_retraining_and_canary_counters_name_their_inference_service() -> None:
    m = OperatorMetrics()
    m.triggered("ml", "iris", "drift")
    m.triggered("ml", "iris", "drift")
    m.triggered("ml", "wine", "schedule")
    m.retraining_done("ml", "iris", "failed")
    m.canary_decided("ml", "iris", "rollback")
    isvc = {"namespace": "ml", "inference_service": "iris"}
    assert value(m, "mlops_operator_retraining_triggers_total", **isvc, trigger="drift") == 2
    assert (
        value(
            m,
            "mlops_operator_retraining_triggers_total",
            namespace="ml",
            inference_service="wine",
            trigger="schedule",
        )
        == 1
    )
    assert value(m, "mlops_operator_retraining_runs_finished_total", **isvc, outcome="failed") == 1
    assert value(m, "mlops_operator_retraining_runs_finished_total", **isvc, outcome="succeeded") is None
    assert value(m, "mlops_operator_canary_decisions_total", **isvc, decision="rollback") == 1


def test_active_resources_are_read_at_scrape_time() -> None:
    m = OperatorMetrics()
    counts = {"InferenceService": 2}
    m.track_active(lambda kind: counts.get(kind, 0))
    assert value(m, "mlops_operator_active_resources", kind="InferenceService") == 2
    counts["InferenceService"] = 5
    assert b'mlops_operator_active_resources{kind="InferenceService"} 5.0' in generate_latest(m.registry)


def test_each_operator_has_its_own_registry() -> None:
    a, b = OperatorMetrics(), OperatorMetrics()
    a.triggered("ml", "iris", "manual")
    assert (
        value(
            b,
            "mlops_operator_retraining_triggers_total",
            namespace="ml",
            inference_service="iris",
            trigger="manual",
        )
        is None
    )


async def test_reconcile_passes_record_outcomes_and_the_active_gauge_counts_held_objects() -> None:
    store = Store()
    ctx = Context(kube=StoreKube(None, store), settings=Settings(resync_seconds=0.01), store=store)  # type: ignore[arg-type]
    ctx.metrics.track_active(ctx.active)
    body = {"kind": "ModelVersion", "metadata": {"namespace": "ns", "name": "mv", "resourceVersion": "1"}}
    store.put("ModelVersion", body)
    seen: list[float | None] = []
    outcomes = iter([KubeError(409, "Conflict", ""), RuntimeError("boom"), None, None])
    four = asyncio.Event()

    async def reconcile(c: Context, obj: Mapping[str, Any]) -> bool:
        seen.append(value(c.metrics, "mlops_operator_active_resources", kind="ModelVersion"))
        if len(seen) == 4:
            four.set()
        error = next(outcomes, None)
        if error is not None:
            raise error
        return True

    controller = ctx.controller = Controller(ctx, {"ModelVersion": Kind(reconcile)}, workers=1)
    controller.start()
    try:
        ctx.kick("ModelVersion", "ns", "mv")  # errors retry after 1 s, then 2 s; successes resync
        await asyncio.wait_for(four.wait(), timeout=30)
    finally:
        await controller.stop()
    store.drop("ModelVersion", body)
    m = ctx.metrics
    assert seen[0] == 1  # the object counts as active while the store holds it
    assert value(m, "mlops_operator_active_resources", kind="ModelVersion") == 0  # and not after
    assert value(m, "mlops_operator_reconciles_total", kind="ModelVersion", outcome="success") >= 2  # type: ignore[operator]
    assert value(m, "mlops_operator_reconciles_total", kind="ModelVersion", outcome="error") == 2
    assert value(m, "mlops_operator_reconcile_errors_total", kind="ModelVersion", error="api_409") == 1
    assert value(m, "mlops_operator_reconcile_errors_total", kind="ModelVersion", error="RuntimeError") == 1


def test_metrics_port_is_off_unless_configured() -> None:
    assert Settings().metrics_port == 0
    assert Settings.from_env({}).metrics_port == 0
    assert Settings.from_env({"MLOPS_METRICS_PORT": "9090"}).metrics_port == 9090
    assert _parser().parse_args([]).metrics_port is None
    assert _parser().parse_args(["--metrics-port", "9191"]).metrics_port == 9191


def test_priority_random_differs_per_process() -> None:
    values = {_parser().parse_args(["--priority=random"]).priority for _ in range(5)}
    assert len(values) > 1 and all(v > 0 for v in values)
    assert _parser().parse_args(["--priority", "7"]).priority == 7


class _EventsOnly:
    """The one call `act` makes for Event steps."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def event(self, body: Mapping[str, Any], reason: str, message: str, kind: str) -> None:
        self.events.append(reason)


async def test_act_counts_the_canary_decision_its_event_closes() -> None:
    from mlops_operator.reconcile import inferenceservice as r

    kube = _EventsOnly()
    ctx = Context(kube=kube, settings=Settings())  # type: ignore[arg-type]
    isvc = {"kind": "InferenceService", "metadata": {"namespace": "ml", "name": "iris"}}
    seen = r.Observed(versions={})
    steps = [
        r.Event("CanaryRolledBack", "Rolled back iris-v2", warning=True),
        r.Event("RolledOut", "Serving iris-v1"),
    ]
    await r.act(ctx, isvc, steps, seen)
    assert kube.events == ["CanaryRolledBack", "RolledOut"]
    isvc_labels = {"namespace": "ml", "inference_service": "iris"}
    assert (
        value(ctx.metrics, "mlops_operator_canary_decisions_total", **isvc_labels, decision="rollback") == 1
    )
    assert (
        value(ctx.metrics, "mlops_operator_canary_decisions_total", **isvc_labels, decision="promote") is None
    )


def test_scrape_failures_count_by_reason() -> None:
    m = OperatorMetrics()
    m.scrape_failed("timeout")
    m.scrape_failed("timeout")
    m.scrape_failed("malformed")
    assert value(m, "mlops_operator_scrape_failures_total", reason="timeout") == 2
    assert value(m, "mlops_operator_scrape_failures_total", reason="malformed") == 1
