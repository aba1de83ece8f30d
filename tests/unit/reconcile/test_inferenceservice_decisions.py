"""The InferenceService pass's pure decisions (issue #16): rollout, canary step, monitoring,
retraining, and compute_status, each on its own, table-driven with named cases."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlops_contract.api.inferenceservice import InferenceServiceSpec
from mlops_contract.timeutil import format_time
from mlops_operator.build import inferenceservice as build
from mlops_operator.monitor import scrape
from mlops_operator.monitor.promql import Sample
from mlops_operator.monitor.triggers import TriggerState
from mlops_operator.prometheus import QueryFailed
from mlops_operator.reconcile.inferenceservice import (
    Delete,
    Event,
    Facts,
    Observed,
    Rollout,
    Step,
    artifact_fetch_failure,
    canary_step,
    carried_source,
    compute_status,
    decide_rollout,
    from_prometheus,
    monitoring,
    plan_retraining,
    prometheus_query,
    retraining_status,
    scrape_due,
    service_steps,
)
from mlops_operator.serving.canary import CanaryStats
from mlops_operator.serving.resolve import Reason, Resolution
from mlops_operator.serving.verdict import Labelled
from mlops_operator.settings import Settings

SETTINGS = Settings(server_image="srv:1", pvc_root="/mnt/pvc", run_as_user=10001)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW_S = format_time(NOW)
TEMPLATE = {"data": {"source": {"uri": "builtin:iris"}}, "estimator": {"class": "RandomForestClassifier"}}
CANARY = {"trafficPercent": 50, "durationSeconds": 60, "maxErrorRate": 0.05, "minRequests": 10}


def mv(version: int, uri: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": f"iris-v{version}", "namespace": "ml"},
        "spec": {
            "model": "iris",
            "version": version,
            "artifact": {"uri": uri or f"pvc://artifacts/models/iris/run-{version}", "sha256": "ab" * 32},
        },
        "status": {"phase": "Verified", "conditions": [{"type": "GatesPassed", "status": "True"}]},
    }


def isvc(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": 2},
        "spec": {"model": "iris", "policy": {}, "replicas": 2, **spec},
        "status": status or {},
    }


def parsed(body: dict[str, Any]) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(body["spec"])


def deployed(
    version: int, track: build.Track = "stable", replicas: int = 2, ready: int | None = None
) -> dict[str, Any]:
    """A Deployment as the API server returns it once its pods run (`ready` of them ready)."""
    d = build.deployment(isvc(), parsed(isvc()), mv(version), SETTINGS, track=track, replicas=replicas)
    d["metadata"]["generation"] = 1
    n = replicas if ready is None else ready
    d["status"] = {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": n, "readyReplicas": n}
    return d


def describe(step: Step) -> str:
    """A step as one readable line: `apply Deployment/iris-predictor iris-v2 x2 ->stable`."""
    if isinstance(step, Event):
        return f"event {step.reason}{' warning' if step.warning else ''}"
    if isinstance(step, Delete):
        return f"delete {step.kind}/{step.name}{f' ->{step.reads}' if step.reads else ''}"
    m = step.manifest
    line = f"apply {m['kind']}/{m['metadata']['name']}"
    if m["kind"] == "Deployment":
        line += f" {m['spec']['template']['metadata']['labels']['mlops.dev/model-version']} x{m['spec'].get('replicas')}"
    return line + (f" ->{step.reads}" if step.reads else "")


def seen(versions: list[int], stable: int | None = None, canary: int | None = None) -> Observed:
    return Observed(
        {f"iris-v{v}": mv(v) for v in versions},
        stable=deployed(stable) if stable else None,
        canary=deployed(canary, "canary", 1) if canary else None,
    )


# --- rollout ------------------------------------------------------------------------------------

# (id, spec fields, status.canary, versions, stable runs, canary runs, steps, serving after, analyse/restarted)
ROLLOUT_CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, list[int], int | None, int | None, list[str], str | None, tuple[bool, bool]]] = [
    ("nothing-to-serve", {}, None, [], None, None, [], None, (False, False)),
    ("first-rollout", {}, None, [1], None, None, ["apply Deployment/iris-predictor iris-v1 x2 ->stable", "event RolledOut"], "iris-v1", (False, False)),
    ("served-version-gone-rolls-out-again", {}, None, [2], 1, None, ["apply Deployment/iris-predictor iris-v2 x2 ->stable", "event RolledOut"], "iris-v2", (False, False)),
    ("rolling-update", {}, None, [1, 2], 1, None, ["apply Deployment/iris-predictor iris-v2 x2 ->stable", "event RollingUpdate"], "iris-v2", (False, False)),
    ("steady-state", {}, None, [1], 1, None, ["apply Deployment/iris-predictor iris-v1 x2 ->stable"], "iris-v1", (False, False)),
    ("steady-state-drops-a-leftover-canary", {}, None, [1], 1, 1, ["apply Deployment/iris-predictor iris-v1 x2 ->stable", "delete Deployment/iris-canary ->canary"], "iris-v1", (False, False)),
    (
        "canary-starts",
        {"canary": CANARY}, None, [1, 2], 1, None,
        ["event CanaryStarted", "apply Deployment/iris-canary iris-v2 x1 ->canary", "apply Deployment/iris-predictor iris-v1 x1"],
        "iris-v1", (True, True),
    ),
    (
        "canary-continues",
        {"canary": CANARY}, {"modelVersion": "iris-v2", "phase": "Progressing", "startedAt": "2026-03-01T11:59:00Z"}, [1, 2], 1, 2,
        ["apply Deployment/iris-canary iris-v2 x1 ->canary", "apply Deployment/iris-predictor iris-v1 x1"],
        "iris-v1", (True, False),
    ),
    (
        "canary-restarts-for-a-newer-version",
        {"canary": CANARY}, {"modelVersion": "iris-v2", "phase": "Progressing", "startedAt": "2026-03-01T11:59:00Z"}, [1, 2, 3], 1, 2,
        ["event CanaryStarted", "apply Deployment/iris-canary iris-v3 x1 ->canary", "apply Deployment/iris-predictor iris-v1 x1"],
        "iris-v1", (True, True),
    ),
    (
        "rolled-back-version-not-retried",
        {"canary": CANARY}, {"modelVersion": "iris-v2", "phase": "RolledBack"}, [1, 2], 1, None,
        ["apply Deployment/iris-predictor iris-v1 x2 ->stable"],
        "iris-v1", (False, False),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "fields", "old_canary", "versions", "stable", "canary", "steps", "serving", "flags"),
    ROLLOUT_CASES,
    ids=[c[0] for c in ROLLOUT_CASES],
)
def test_decide_rollout(
    name: str,
    fields: dict[str, Any],
    old_canary: dict[str, Any] | None,
    versions: list[int],
    stable: int | None,
    canary: int | None,
    steps: list[str],
    serving: str | None,
    flags: tuple[bool, bool],
) -> None:
    body = isvc({"canary": old_canary} if old_canary else None, **fields)
    rollout = decide_rollout(body, parsed(body), seen(versions, stable, canary), SETTINGS, NOW_S)
    assert [describe(s) for s in rollout.steps] == steps
    assert rollout.serving == serving
    assert (rollout.analyse, rollout.restarted) == flags
    assert rollout.problem is None
    if flags == (True, True):
        assert rollout.canary == {
            "modelVersion": rollout.desired,
            "phase": "Progressing",
            "startedAt": NOW_S,
            "mode": "split",
        }
    elif old_canary:
        assert rollout.canary == old_canary  # kept as it was until canary_step
    else:
        assert rollout.canary is None


def test_rollout_messages_name_the_versions() -> None:
    body = isvc(canary=CANARY)
    events = [
        s
        for s in decide_rollout(body, parsed(body), seen([1, 2], 1), SETTINGS, NOW_S).steps
        if isinstance(s, Event)
    ]
    assert events[0].message == "Canary iris-v2 gets 50% of traffic for 60s"
    body = isvc()
    events = [
        s
        for s in decide_rollout(body, parsed(body), seen([1, 2], 1), SETTINGS, NOW_S).steps
        if isinstance(s, Event)
    ]
    assert events[0].message.startswith("Rolling update iris-v1 -> iris-v2: Chose iris-v2 (v2)")


def test_an_unservable_artifact_holds_the_rollout() -> None:
    body = isvc()
    observed = Observed({"iris-v1": mv(1, uri="https://example.org/model.skops")})
    rollout = decide_rollout(body, parsed(body), observed, SETTINGS, NOW_S)
    assert rollout.steps == () and rollout.serving is None and rollout.desired == "iris-v1"
    assert rollout.problem is not None and "pvc://" in rollout.problem


@pytest.mark.parametrize(
    ("fields", "hpa_left", "steps"),
    [
        ({}, False, ["apply Service/iris"]),
        ({}, True, ["apply Service/iris", "delete HorizontalPodAutoscaler/iris-predictor"]),
        ({"autoscaling": {"minReplicas": 2, "maxReplicas": 4}}, False, ["apply Service/iris", "apply HorizontalPodAutoscaler/iris-predictor"]),
    ],
    ids=["service-only", "hpa-left-is-deleted", "autoscaling-applies-an-hpa"],
)  # fmt: skip
def test_service_steps(fields: dict[str, Any], hpa_left: bool, steps: list[str]) -> None:
    body = isvc(**fields)
    assert [describe(s) for s in service_steps(body, parsed(body), hpa_left)] == steps


# --- canary step --------------------------------------------------------------------------------

# (id, seconds since start, stats, steps added, phase, serving after, reason fragment)
CANARY_CASES: list[tuple[str, float, CanaryStats, list[str], str, str, str]] = [
    ("analysing", 10, CanaryStats(20, 0), [], "Progressing", "iris-v1", "50s left"),
    (
        "promotes-after-the-duration", 61, CanaryStats(20, 0),
        ["apply Deployment/iris-predictor iris-v2 x2 ->stable", "delete Deployment/iris-canary", "event CanaryPromoted"],
        "Promoted", "iris-v2", "Healthy for 60s",
    ),
    (
        "rolls-back-on-errors", 10, CanaryStats(20, 5),
        ["delete Deployment/iris-canary", "apply Deployment/iris-predictor iris-v1 x2", "event CanaryRolledBack warning"],
        "RolledBack", "iris-v1", "exceeds maxErrorRate",
    ),
    ("waits-for-traffic", 61, CanaryStats(3, 0), [], "Progressing", "iris-v1", "waiting for traffic"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "elapsed", "stats", "steps", "phase", "serving", "fragment"),
    CANARY_CASES,
    ids=[c[0] for c in CANARY_CASES],
)
def test_canary_step(
    name: str, elapsed: float, stats: CanaryStats, steps: list[str], phase: str, serving: str, fragment: str
) -> None:
    body = isvc(canary=CANARY)
    spec = parsed(body)
    observed = seen([1, 2], 1)
    started = decide_rollout(body, spec, observed, SETTINGS, format_time(NOW - timedelta(seconds=elapsed)))
    before = [describe(s) for s in started.steps]
    after = canary_step(body, spec, started, stats, versions=observed.versions, settings=SETTINGS, now=NOW)
    assert [describe(s) for s in after.steps] == before + steps  # added after the rollout's
    assert after.serving == serving
    assert after.canary is not None
    assert after.canary["phase"] == phase
    assert after.canary["requests"] == stats.requests
    assert after.canary["errorRate"] == round(stats.errors / stats.requests, 4)
    assert fragment in after.canary["reason"]


def test_canary_status_without_requests_has_no_error_rate() -> None:
    body = isvc(canary=CANARY)
    observed = seen([1, 2], 1)
    started = decide_rollout(body, parsed(body), observed, SETTINGS, NOW_S)
    after = canary_step(
        body, parsed(body), started, CanaryStats(0, 0), versions=observed.versions, settings=SETTINGS, now=NOW
    )
    assert after.canary is not None
    assert (after.canary["requests"], after.canary["errorRate"], after.canary["latencyP95Ms"]) == (
        0,
        None,
        None,
    )


def test_split_canary_rolled_back_on_labelled_quality_writes_both_tracks() -> None:
    """Issue #22: the split canary's quality against stable, each on its own labelled rows, in
    status.canary (the shadow fields where they fit), a CanaryRolledBack warning, no ShadowVerdict."""
    body = isvc(canary={**CANARY, "minLabelled": 10})
    spec, observed = parsed(body), seen([1, 2], 1)
    started = decide_rollout(body, spec, observed, SETTINGS, format_time(NOW - timedelta(seconds=10)))
    stats = CanaryStats(
        20, 0, canary_labelled=Labelled(correct=6, incorrect=4), stable_labelled=Labelled(correct=10)
    )
    after = canary_step(body, spec, started, stats, versions=observed.versions, settings=SETTINGS, now=NOW)
    assert after.canary is not None and after.serving == "iris-v1"
    fields = (
        "phase",
        "mode",
        "verdict",
        "canaryLabelled",
        "stableLabelled",
        "championScore",
        "challengerScore",
    )
    assert [after.canary[k] for k in fields] == ["RolledBack", "split", "Worse", 10, 10, 1.0, 0.6]
    assert (after.canary["effect"], after.canary["pValue"]) == (-0.4, 0.0433)
    assert "pairs" not in after.canary
    assert after.canary["reason"].startswith("Labelled quality worse: Worse: canary accuracy 0.6 vs stable 1")
    assert describe(after.steps[-1]) == "event CanaryRolledBack warning"
    facts = Facts(after, {"iris-v1": mv(1)}, deployed(1), None, {})
    assert "ShadowVerdict" not in conditions(compute_status(body, spec, facts, NOW_S))


@pytest.mark.parametrize(
    ("stats", "written"),
    [
        (CanaryStats(5, 0), {}),
        (CanaryStats(5, 0, canary_labelled=Labelled(correct=3), stable_labelled=Labelled(incorrect=1)),
         {"canaryLabelled": 3, "stableLabelled": 1}),
    ],
    ids=["no-labels", "too-few-labels"],
)  # fmt: skip
def test_split_canary_quality_fields_before_a_verdict(stats: CanaryStats, written: dict[str, int]) -> None:
    body = isvc(canary=CANARY)
    observed = seen([1, 2], 1)
    started = decide_rollout(body, parsed(body), observed, SETTINGS, NOW_S)
    after = canary_step(
        body, parsed(body), started, stats, versions=observed.versions, settings=SETTINGS, now=NOW
    )
    assert after.canary is not None
    quality = {"verdict", "canaryLabelled", "stableLabelled", "pValue", "championScore"}
    assert {k: v for k, v in after.canary.items() if k in quality} == written
    assert ("Quality not judged" in after.canary["reason"]) == bool(written)


# --- monitoring ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serving", "last_scrape", "in_memory", "due"),
    [
        (None, None, None, False),
        ("iris-v1", None, None, True),
        ("iris-v1", NOW - timedelta(seconds=10), None, False),
        ("iris-v1", NOW - timedelta(seconds=30), None, True),
        ("iris-v1", NOW - timedelta(seconds=300), NOW - timedelta(seconds=5), False),
    ],
    ids=[
        "nothing-served",
        "never-scraped",
        "interval-not-passed",
        "interval-passed",
        "memory-paces-an-idle-service",
    ],
)
def test_scrape_due(
    serving: str | None, last_scrape: datetime | None, in_memory: datetime | None, due: bool
) -> None:
    old = {"lastScrape": format_time(last_scrape)} if last_scrape else {}
    assert scrape_due(parsed(isvc()), serving, old, in_memory, NOW) is due


def sample(pod: str, requests: float, drift: float | None = None) -> scrape.PodSample:
    return scrape.PodSample(
        pod=pod, requests=requests, drift_score=drift, window_rows=100 if drift is not None else None
    )


def test_monitoring_without_a_scrape_keeps_the_metrics() -> None:
    old = {"requests": 5, "lastScrape": "2026-03-01T11:00:00Z"}
    out = monitoring(old, None, None, NOW_S)
    assert (out.metrics, out.scraped, out.totals) == (old, None, None)


def test_monitoring_aggregates_the_pods_and_stamps_a_change() -> None:
    out = monitoring({}, [sample("a", 10, 0.1), sample("b", 30, 0.3)], None, NOW_S)
    assert out.metrics == {"requests": 40, "errorRate": 0.0, "drift": 0.2, "lastScrape": NOW_S}
    assert out.scraped is not None and out.scraped["requests"] == 40
    assert out.totals is not None and out.totals.requests == 40


def test_monitoring_leaves_unchanged_metrics_alone() -> None:
    first = monitoring({}, [sample("a", 0, 0.2)], None, "2026-03-01T11:59:00Z")
    again = monitoring(first.metrics, [sample("a", 0, 0.2)], first.totals, NOW_S)
    assert again.metrics == first.metrics  # lastScrape not moved: no status write
    assert again.scraped is not None  # but the triggers see this scrape


# --- retraining ---------------------------------------------------------------------------------


def retraining_body(
    status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    body = isvc(status, retraining={"cooldownSeconds": 0, **fields})
    body["metadata"]["annotations"] = annotations or {}
    return body


def tj(phase: str | None, mv_name: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "x"},
        "status": {k: v for k, v in (("phase", phase), ("modelVersion", mv_name)) if v},
    }


MANUAL = {"mlops.dev/retrain": "now"}
RUNNING = {"retraining": {"count": 1, "activeJobs": ["iris-retrain-1"]}}

# (id, spec.retraining fields, status, annotations, active runs read, source, fires, job, problem)
RETRAIN_CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, str] | None, dict[str, Any], dict[str, Any] | None, bool, str | None, str | None]] = [
    ("no-trigger", {"template": TEMPLATE}, None, None, {}, None, False, None, None),
    ("manual-fires", {"template": TEMPLATE}, None, MANUAL, {}, None, True, "iris-retrain-1", None),
    ("a-running-run-blocks", {"template": TEMPLATE}, RUNNING, MANUAL, {"iris-retrain-1": tj("Running")}, None, False, None, None),
    ("a-finished-run-frees-the-slot", {"template": TEMPLATE}, RUNNING, MANUAL, {"iris-retrain-1": tj("Succeeded")}, None, True, "iris-retrain-2", None),
    ("a-gone-run-frees-the-slot", {"template": TEMPLATE}, RUNNING, MANUAL, {"iris-retrain-1": None}, None, True, "iris-retrain-2", None),
    ("copies-the-source", {"fromTrainingJob": "iris-train"}, None, MANUAL, {}, {"spec": {"model": "iris", **TEMPLATE}}, True, "iris-retrain-1", None),
    # Issue #19, case 2: a trigger that cannot act is not a run; it stays pending, unconsumed.
    ("missing-source", {"fromTrainingJob": "iris-train"}, None, MANUAL, {}, None, False, None,
     "Pending (annotation mlops.dev/retrain='now') but retraining source TrainingJob iris-train not found."),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "fields", "status", "annotations", "runs", "source", "fires", "job", "problem"),
    RETRAIN_CASES,
    ids=[c[0] for c in RETRAIN_CASES],
)
def test_plan_retraining(
    name: str,
    fields: dict[str, Any],
    status: dict[str, Any] | None,
    annotations: dict[str, str] | None,
    runs: dict[str, Any],
    source: dict[str, Any] | None,
    fires: bool,
    job: str | None,
    problem: str | None,
) -> None:
    body = retraining_body(status, annotations, **fields)
    observed = Observed({"iris-v1": mv(1)}, source=source)
    plan = plan_retraining(body, parsed(body), observed, runs=runs, serving="iris-v1", scraped=None, now=NOW)
    assert plan.decision.fire is fires
    assert (plan.job["metadata"]["name"] if plan.job else None) == job
    assert plan.problem == problem
    if problem is not None:  # nothing counted, nothing consumed, no cooldown spent
        assert (plan.state.count, plan.state.last_manual, plan.state.last_triggered_at) == (0, None, None)
        assert plan.decision.pending == ("manual",)
    if plan.job is not None:
        assert plan.job["spec"]["evaluation"]["baseline"]["modelVersion"] == "iris-v1"
        assert plan.job["metadata"]["annotations"]["mlops.dev/trigger"] == "manual"
        assert plan.state.active_jobs[-1] == job


def rollout(serving: str | None, canary: dict[str, Any] | None = None) -> Rollout:
    return Rollout(Resolution(serving, Reason.LATEST, "Keeping it."), serving, serving, canary=canary)


@pytest.mark.parametrize(
    ("run", "canary", "outcome"),
    [
        (tj("Running"), None, "iris-retrain-1 is Running"),
        (tj("Succeeded", "iris-v2"), {"modelVersion": "iris-v2", "phase": "Progressing"}, "iris-retrain-1 produced iris-v2, in canary analysis"),
        (tj("Succeeded", "iris-v2"), {"modelVersion": "iris-v2", "phase": "RolledBack"}, "iris-retrain-1 produced iris-v2, not rolled out: Keeping it."),
        (tj("Succeeded", "iris-v1"), None, "iris-retrain-1 produced iris-v1, now serving"),
        (None, None, "kept from before"),
    ],
    ids=["running", "in-canary", "rolled-back", "serving", "run-gone-keeps-the-outcome"],
)  # fmt: skip
def test_retraining_status_says_what_became_of_the_last_run(
    run: dict[str, Any] | None, canary: dict[str, Any] | None, outcome: str
) -> None:
    body = retraining_body({"retraining": {"count": 1, "lastOutcome": "kept from before"}}, template=TEMPLATE)
    observed = Observed({"iris-v1": mv(1), "iris-v2": mv(2)})
    plan = plan_retraining(body, parsed(body), observed, runs={}, serving="iris-v1", scraped=None, now=NOW)
    out = retraining_status(body, plan, run, observed.versions, rollout("iris-v1", canary))
    assert out.status["lastOutcome"] == outcome
    assert out.status["count"] == 1 and out.drift_breaches == 0 and out.problem is None


def test_retraining_status_before_any_run() -> None:
    body = retraining_body(template=TEMPLATE)
    plan = plan_retraining(body, parsed(body), Observed({}), runs={}, serving=None, scraped=None, now=NOW)
    out = retraining_status(body, plan, None, {}, rollout(None))
    assert out.status == {"count": 0, "activeJobs": []}
    assert plan.state == TriggerState(last_schedule=None)


# --- compute_status -----------------------------------------------------------------------------


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_status_with_nothing_to_serve() -> None:
    body = isvc()
    none = Resolution(None, Reason.NO_CANDIDATE, "Nothing to serve: no Verified version passes its gates.")
    status = compute_status(body, parsed(body), Facts(Rollout(none, None, None), {}, None, None, {}), NOW_S)
    assert conditions(status)["Ready"] == ("False", "NoServableVersion")
    assert conditions(status)["VersionResolved"] == ("False", "NoCandidate")
    assert status["message"] == none.message
    assert "modelVersion" not in status and "traffic" not in status and "canary" not in status
    assert (status["replicas"], status["readyReplicas"], status["observedGeneration"]) == (0, 0, 2)
    assert status["url"] == "http://iris.ml.svc.cluster.local/v2/models/iris"
    assert status["grpcAddress"] == "iris.ml.svc.cluster.local:8081"
    assert status["selector"] == "mlops.dev/inference-service=iris"


# (id, stable ready replicas, spec.replicas, Ready, RolledOut, Reconciling)
READY_CASES = [
    ("serving-and-ready", 2, 2, ("True", "Serving"), ("True", "RolledOut"), "False"),
    ("rolling-out", 1, 2, ("False", "RollingOut"), ("False", "Progressing"), "True"),
    ("scaled-to-zero-is-ready", 0, 0, ("True", "Serving"), ("True", "RolledOut"), "False"),
]


@pytest.mark.parametrize(
    ("name", "ready", "replicas", "want_ready", "rolled", "reconciling"),
    READY_CASES,
    ids=[c[0] for c in READY_CASES],
)
def test_status_readiness(
    name: str,
    ready: int,
    replicas: int,
    want_ready: tuple[str, str],
    rolled: tuple[str, str],
    reconciling: str,
) -> None:
    body = isvc(replicas=replicas)
    facts = Facts(
        rollout("iris-v1"), {"iris-v1": mv(1)}, deployed(1, replicas=replicas, ready=ready), None, {}
    )
    status = compute_status(body, parsed(body), facts, NOW_S)
    assert conditions(status)["Ready"] == want_ready
    assert conditions(status)["RolledOut"] == rolled
    assert conditions(status)["Reconciling"][0] == reconciling
    assert (status["modelVersion"], status["version"], status["desiredModelVersion"]) == (
        "iris-v1",
        1,
        "iris-v1",
    )
    # Scaled to zero, the served version has no replica and so no share (as before issue #16).
    assert status["traffic"] == [
        {"modelVersion": "iris-v1", "percent": 100 if replicas else 0, "replicas": replicas}
    ]
    assert status["message"] == "serving iris-v1"


# --- an s3:// artifact the serving pods cannot fetch (issue #17) -------------------------------

TAMPERED = '{"ok":false,"reason":"BadInput","message":"s3://b/m: sha256 mismatch: model.skops has 00"}'


def fetching_pod(version: str, state: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": f"p-{version}", "labels": {"mlops.dev/model-version": version}},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {"name": build.FETCH_CONTAINER, "state": state, "lastState": last or {}, "restartCount": 1}
            ],
        },
    }


FAILED = {"terminated": {"exitCode": 2, "message": TAMPERED}}
BACKING_OFF = {"waiting": {"reason": "CrashLoopBackOff"}}
FETCH_CASES = [
    ("terminated-now", [fetching_pod("iris-v2", FAILED)], "s3://b/m: sha256 mismatch"),
    ("backing-off-after-failure", [fetching_pod("iris-v2", BACKING_OFF, FAILED)], "(exit 2)"),
    (
        "plain-text-message",
        [fetching_pod("iris-v2", {"terminated": {"exitCode": 1, "message": "boom"}})],
        ": boom",
    ),
    (
        "secret-missing",
        [
            fetching_pod(
                "iris-v2",
                {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s3" not found'}},
            )
        ],
        'cannot start its artifact fetch: secret "s3" not found',
    ),
    ("fetched-ok", [fetching_pod("iris-v2", {"terminated": {"exitCode": 0}}, FAILED)], None),
    ("still-fetching", [fetching_pod("iris-v2", {"running": {}})], None),
    ("another-versions-pod", [fetching_pod("iris-v9", FAILED)], None),
    (
        "no-init-container",
        [{"metadata": {"name": "p", "labels": {"mlops.dev/model-version": "iris-v2"}}}],
        None,
    ),
]


@pytest.mark.parametrize(("name", "pods", "found"), FETCH_CASES, ids=[c[0] for c in FETCH_CASES])
def test_artifact_fetch_failure(name: str, pods: list[dict[str, Any]], found: str | None) -> None:
    failure = artifact_fetch_failure(pods, {"iris-v1", "iris-v2"})
    if found is None:
        assert failure is None
    else:
        assert failure is not None and failure.startswith("pod p-iris-v2 cannot ") and found in failure


def test_status_says_the_artifact_could_not_be_fetched_while_the_old_pods_serve() -> None:
    body = isvc()
    failure = "pod p cannot fetch its artifact (exit 2): s3://b/m: sha256 mismatch"
    rolling = deployed(2, replicas=2)
    rolling["status"]["updatedReplicas"] = 0  # the old ReplicaSet's 2 pods are the ready ones
    facts = Facts(rollout("iris-v2"), {"iris-v2": mv(2)}, rolling, None, {}, fetch_failure=failure)
    status = compute_status(body, parsed(body), facts, NOW_S)
    rolled = next(c for c in status["conditions"] if c["type"] == "RolledOut")
    assert (rolled["status"], rolled["reason"], rolled["message"]) == (
        "False",
        "ArtifactFetchFailed",
        failure,
    )
    assert conditions(status)["Ready"][0] == "False"
    assert failure in status["message"]
    # Once the pods are up, an old failure of another pod no longer says anything.
    facts = dataclasses.replace(facts, stable=deployed(2, replicas=2))
    assert conditions(compute_status(body, parsed(body), facts, NOW_S))["RolledOut"] == ("True", "RolledOut")


def test_status_of_a_running_canary_splits_the_traffic() -> None:
    body = isvc(canary=CANARY)
    canary = {"modelVersion": "iris-v2", "phase": "Progressing", "reason": "Analysing, 50s left."}
    decided = Rollout(
        Resolution("iris-v2", Reason.LATEST, "Chose iris-v2."), "iris-v2", "iris-v1", canary=canary
    )
    facts = Facts(
        decided, {"iris-v1": mv(1), "iris-v2": mv(2)}, deployed(1, replicas=1), deployed(2, "canary", 1), {}
    )
    status = compute_status(body, parsed(body), facts, NOW_S)
    assert status["traffic"] == [
        {"modelVersion": "iris-v1", "percent": 50, "replicas": 1},
        {"modelVersion": "iris-v2", "percent": 50, "replicas": 1},
    ]
    assert conditions(status)["CanaryHealthy"] == ("True", "Progressing")
    assert conditions(status)["RolledOut"] == ("False", "RolledOut")  # desired is not served yet
    assert conditions(status)["Reconciling"][0] == "True"
    assert status["canary"] == canary


def test_status_after_a_rollback() -> None:
    body = isvc(canary=CANARY)
    canary = {
        "modelVersion": "iris-v2",
        "phase": "RolledBack",
        "reason": "Error rate 25.00% exceeds maxErrorRate 5.00%.",
    }
    facts = Facts(rollout("iris-v1", canary), {"iris-v1": mv(1)}, deployed(1), None, {})
    status = compute_status(body, parsed(body), facts, NOW_S)
    assert conditions(status)["CanaryHealthy"] == ("False", "RolledBack")
    assert status["traffic"] == [{"modelVersion": "iris-v1", "percent": 100, "replicas": 2}]


@pytest.mark.parametrize(
    ("metrics", "breaches", "drifted", "stored"),
    [
        ({}, 0, None, None),
        ({}, 2, None, {"driftBreaches": 2}),
        ({"drift": 0.4}, 1, ("True", "DriftAboveThreshold"), {"drift": 0.4, "driftBreaches": 1}),
        ({"drift": 0.1}, 0, ("False", "DriftBelowThreshold"), {"drift": 0.1, "driftBreaches": 0}),
    ],
    ids=["no-metrics", "breaches-alone", "drift-above", "drift-below"],
)
def test_status_with_retraining(
    metrics: dict[str, Any], breaches: int, drifted: tuple[str, str] | None, stored: dict[str, Any] | None
) -> None:
    from mlops_operator.reconcile.inferenceservice import Retrained

    body = retraining_body(template=TEMPLATE)
    retrained = Retrained(
        {"count": 1, "activeJobs": ["iris-retrain-1"], "lastTrigger": "drift", "lastReason": "r"},
        breaches,
        "a problem",
    )
    facts = Facts(rollout("iris-v1"), {"iris-v1": mv(1)}, deployed(1), None, metrics, retrained)
    status = compute_status(body, parsed(body), facts, NOW_S)
    assert conditions(status).get("Drifted") == drifted
    assert conditions(status)["Retraining"] == ("True", "DriftTrigger")
    assert status.get("metrics") == stored
    assert status["retraining"] == retrained.status
    assert status["message"] == "a problem"


def test_status_keeps_transition_times_of_unchanged_conditions() -> None:
    body = isvc()
    facts = Facts(rollout("iris-v1"), {"iris-v1": mv(1)}, deployed(1), None, {})
    first = compute_status(body, parsed(body), facts, "2026-03-01T11:00:00Z")
    again = compute_status(isvc(first), parsed(body), facts, NOW_S)
    assert again == first


# --- metrics from Prometheus (issue #21) ---------------------------------------------------------

PROM = {"prometheusUrl": "http://prometheus.monitoring:9090", "intervalSeconds": 30}
DOWN = QueryFailed("unreachable", "http://prometheus.monitoring:9090/api/v1/query: connection refused")


def prom_isvc(old: tuple[str, str] | None = None) -> dict[str, Any]:
    """An InferenceService read from Prometheus, its MetricsAvailable (status, reason) `old`."""
    conds = (
        [{"type": "MetricsAvailable", "status": old[0], "reason": old[1], "message": "before"}] if old else []
    )
    return isvc({"conditions": conds, "metrics": {"requests": 9}}, canary=CANARY, monitoring=PROM)


@pytest.mark.parametrize(
    ("due", "analyse", "window", "canary_window"),
    [
        pytest.param(False, False, None, None, id="nothing-to-ask"),
        pytest.param(True, False, "[60s]", None, id="due-at-least-the-minimum-window"),
        pytest.param(False, True, None, "[90s]", id="canary-since-it-started"),
    ],
)
def test_prometheus_query(due: bool, analyse: bool, window: str | None, canary_window: str | None) -> None:
    body = prom_isvc()
    started = format_time(NOW - timedelta(seconds=89.5))
    ro = rollout("iris-v1", {"modelVersion": "iris-v2", "phase": "Progressing", "startedAt": started})
    ro = dataclasses.replace(ro, desired="iris-v2", analyse=analyse)
    expr = prometheus_query(body, parsed(body), ro, due=due, min_window=60, now=NOW)
    if window is None and canary_window is None:
        assert expr is None
        return
    assert expr is not None
    assert (window is None) == ('"signal", "requests"' not in expr)
    assert (
        window is None or f'mlops_requests_total{{namespace="ml",inference_service="iris"}}{window}' in expr
    )
    assert canary_window is None or f'version="iris-v2"}}{canary_window}' in expr
    served = "iris\\\\-v1|iris\\\\-v2" if analyse else "iris\\\\-v1"  # the gauges of the versions served
    assert (
        window is None
        or f'mlops_drift_psi{{namespace="ml",inference_service="iris",version=~"{served}"}}' in expr
    )


# (id, old MetricsAvailable, answer, new (status, reason), events)
SOURCE_CASES: list[tuple[str, tuple[str, str] | None, list[Sample] | QueryFailed, tuple[str, str], list[str]]] = [
    ("first-failure-warns", None, DOWN, ("False", "PrometheusUnreachable"), ["event PrometheusUnreachable warning"]),
    ("lasting-failure-warns-once", ("False", "PrometheusUnreachable"), DOWN, ("False", "PrometheusUnreachable"), []),
    ("another-failure-warns-again", ("False", "PrometheusNoData"), DOWN, ("False", "PrometheusUnreachable"), ["event PrometheusUnreachable warning"]),
    ("no-series-is-no-data", ("True", "PrometheusQueried"), [], ("False", "PrometheusNoData"), ["event PrometheusNoData warning"]),
    ("recovery-is-announced", ("False", "PrometheusNoData"), [Sample({"signal": "pods", "pod": "p"}, 1)], ("True", "PrometheusQueried"), ["event MetricsAvailable"]),
    ("healthy-stays-quiet", ("True", "PrometheusQueried"), [Sample({"signal": "pods", "pod": "p"}, 1)], ("True", "PrometheusQueried"), []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "old", "answer", "cond", "events"), SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES]
)
def test_from_prometheus_condition_and_events(
    name: str, old: tuple[str, str] | None, answer: Any, cond: tuple[str, str], events: list[str]
) -> None:
    body = prom_isvc(old)
    result = from_prometheus(
        body, parsed(body), rollout("iris-v1"), answer, due=True, previous=None, versions={}, settings=SETTINGS, now=NOW
    )  # fmt: skip
    assert result.source is not None
    assert (result.source.status, result.source.reason) == cond
    assert [describe(s) for s in result.rollout.steps] == events
    if cond[0] == "False":  # held: the stored metrics, no fresh aggregate for the triggers
        assert result.monitored.metrics == {"requests": 9} and result.monitored.scraped is None
        assert "http://prometheus.monitoring:9090" in result.source.message
    else:
        assert result.monitored.scraped == {"requests": 0}


def test_a_canary_without_series_is_held_while_the_metrics_land() -> None:
    body = prom_isvc()
    started = format_time(NOW - timedelta(hours=1))  # long past durationSeconds: only data is missing
    ro = dataclasses.replace(
        rollout("iris-v1", {"modelVersion": "iris-v2", "phase": "Progressing", "startedAt": started}),
        desired="iris-v2",
        analyse=True,
    )
    answer = [Sample({"signal": "pods", "pod": "p"}, 1), Sample({"signal": "requests", "pod": "p"}, 50)]
    result = from_prometheus(
        body, parsed(body), ro, answer, due=True, previous=None, versions={}, settings=SETTINGS, now=NOW
    )
    assert result.rollout.canary == ro.canary
    assert result.monitored.metrics["requests"] == 50
    assert result.source is not None and result.source.reason == "PrometheusNoData"
    assert "canary pods of iris-v2" in result.source.message


def test_carried_source_and_status() -> None:
    body = prom_isvc(("False", "PrometheusTimeout"))
    source = carried_source(body, parsed(body))
    assert source is not None and (source.status, source.reason, source.message) == (
        "False",
        "PrometheusTimeout",
        "before",
    )
    plain = isvc(body["status"])
    assert carried_source(plain, parsed(plain)) is None  # prometheusUrl removed: the condition goes
    facts = Facts(rollout("iris-v1"), {"iris-v1": mv(1)}, deployed(1), None, {}, source=source)
    status = compute_status(body, parsed(body), facts, NOW_S)
    assert conditions(status)["MetricsAvailable"] == ("False", "PrometheusTimeout")
    assert conditions(status)["Ready"] == ("True", "Serving")  # serving goes on without metrics
