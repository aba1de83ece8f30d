"""Monitoring and closed-loop retraining against the real API server (issue #8).

The serving pods are kwok's simulated pods, so their /metrics come from an injected scraper
(the operator's memo) whose values the tests set: DRIFT per InferenceService. A fired trigger
creates exactly one TrainingJob owned by the InferenceService, also across an operator restart
(with or without the status write that recorded it); cooldown and maxConcurrent hold; the
manual annotation fires once per value; an idle service writes nothing over several scrapes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from clusterkit import (
    condition,
    create,
    events_for,
    finish_pod,
    inferenceservice,
    modelversion,
    pods_of,
    reconciled_now,
    run_pod_locally,
    run_verification,
    status_of,
    trainingjob,
    wait_for,
)

from conftest import OperatorRunner
from mlops_operator.kube import Kube
from mlops_operator.settings import Settings

DRIFT: dict[str, float] = {}  # InferenceService -> the drift score its pods report
SCRAPED_AT: dict[str, list[float]] = {}  # InferenceService -> when its pods were scraped (monotonic)
INTERVAL = 5  # spec.monitoring.intervalSeconds (the schema's minimum)
RETRAIN = "mlops.dev/retrain"


async def scraper(pod: Mapping[str, Any]) -> str | None:
    service = (pod["metadata"].get("labels") or {}).get("mlops.dev/inference-service", "")
    SCRAPED_AT.setdefault(service, []).append(time.monotonic())
    drift = DRIFT.get(service, 0.0)
    return (
        "# TYPE mlops_drift_score gauge\n"
        f'mlops_drift_score{{model="iris",version="iris-v1"}} {drift}\n'
        "# TYPE mlops_drift_window_rows gauge\n"
        'mlops_drift_window_rows{model="iris",version="iris-v1"} 200\n'
        "# TYPE mlops_requests_total counter\n"
        'mlops_requests_total{model="iris",version="iris-v1",protocol="v2",code="200"} 1000\n'
    )


@pytest.fixture(autouse=True)
def _fresh_scraper_state() -> None:
    DRIFT.clear()
    SCRAPED_AT.clear()


@pytest.fixture
def monitored(namespace: str, test_settings: Settings) -> Iterator[OperatorRunner]:
    runner = OperatorRunner(namespace, test_settings, scraper=scraper).start()
    yield runner
    runner.stop()


def retraining(**fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "template": {
            "data": {"source": {"uri": "builtin:iris"}},
            "estimator": {"class": "LogisticRegression", "params": {"max_iter": 200}},
            "output": {"uri": "pvc://artifacts/models"},
        },
        "triggers": {"drift": {"threshold": 0.25, "consecutive": 2}},
    }
    spec.update(fields)
    return {k: v for k, v in spec.items() if v is not None}


def serve(
    kube: Kube, namespace: str, artifacts: Path, artifact: dict[str, Any], **retraining_fields: Any
) -> dict[str, Any]:
    """iris-v1 (the session's artifact, registered and verified) served by InferenceService
    `iris` with a retraining policy and a short scrape interval; returns the service once serving."""
    create(kube, namespace, modelversion("iris-v1", 1, artifact["artifactUri"], artifact["sha256"]))
    [(code, message)] = run_verification(kube, namespace, "iris-v1", artifacts)
    assert code == 0, message
    create(
        kube,
        namespace,
        inferenceservice(
            "iris",
            replicas=1,
            monitoring={"intervalSeconds": INTERVAL},
            retraining=retraining(**retraining_fields),
        ),
    )
    wait_for(
        lambda: status_of(kube, "InferenceService", namespace, "iris").get("modelVersion") == "iris-v1",
        what="iris-v1 served",
    )
    obj = kube.get("InferenceService", namespace, "iris")
    assert obj is not None
    return obj


def retraining_jobs(kube: Kube, namespace: str) -> list[str]:
    return sorted(t["metadata"]["name"] for t in kube.list("TrainingJob", namespace))


def retraining_status(kube: Kube, namespace: str) -> dict[str, Any]:
    return dict(status_of(kube, "InferenceService", namespace, "iris").get("retraining") or {})


def scrapes(service: str = "iris") -> int:
    return len(SCRAPED_AT.get(service, []))


def after_scrapes(n: int, service: str = "iris") -> None:
    """Wait until the operator has scraped the service's pods `n` more times."""
    target = scrapes(service) + n
    wait_for(lambda: scrapes(service) >= target, timeout=INTERVAL * n * 6, what=f"{n} more scrapes")


def assert_paced(service: str = "iris") -> None:
    """Scrapes (of one replica, by one operator) follow the interval, whatever wakes the loop:
    a drift breach counted per scrape must not be counted per status write. Half the interval
    leaves room for a slow API call before one scrape and not the next."""
    times = SCRAPED_AT.get(service, [])
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) >= INTERVAL / 2, gaps


def created_at(obj: Mapping[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


@pytest.mark.parametrize("status_lost", [False, True], ids=["status-written", "status-lost"])
def test_fired_trigger_creates_exactly_one_trainingjob_across_a_restart(
    kube: Kube,
    namespace: str,
    test_settings: Settings,
    artifacts: Path,
    iris_artifact: dict[str, Any],
    status_lost: bool,
) -> None:
    first = OperatorRunner(namespace, test_settings, scraper=scraper).start()
    try:
        isvc = serve(kube, namespace, artifacts, iris_artifact)
        DRIFT["iris"] = 0.6
        tj = wait_for(
            lambda: kube.get("TrainingJob", namespace, "iris-retrain-1"),
            timeout=INTERVAL * 12,
            interval=0.05,
            what="the retraining TrainingJob",
        )
    finally:
        first.stop()  # at once: the status write recording the run may or may not have landed
    if status_lost:
        # As if the operator died between creating the TrainingJob and recording it.
        kube.patch_status("InferenceService", namespace, "iris", {"retraining": None})

    owner = tj["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "InferenceService",
        "iris",
        isvc["metadata"]["uid"],
    )
    assert owner["controller"] is True
    assert tj["spec"]["model"] == "iris"
    assert tj["metadata"]["annotations"]["mlops.dev/trigger"] == "drift"

    second = OperatorRunner(namespace, test_settings, scraper=scraper).start()
    try:
        recorded = wait_for(
            lambda: (r := retraining_status(kube, namespace)).get("count") == 1 and r,
            timeout=INTERVAL * 12,
            what="status.retraining.count 1",
        )
        assert recorded["activeJobs"] == ["iris-retrain-1"]
        assert recorded["lastTrigger"] == "drift"
        # The trigger stays true for several more scrapes (blocked by cooldown and maxConcurrent).
        after_scrapes(3)
        status = status_of(kube, "InferenceService", namespace, "iris")
    finally:
        second.stop()
    assert retraining_jobs(kube, namespace) == ["iris-retrain-1"]
    again = kube.get("TrainingJob", namespace, "iris-retrain-1")
    assert again is not None and again["metadata"]["uid"] == tj["metadata"]["uid"]
    assert status["retraining"]["count"] == 1
    assert status["retraining"]["activeJobs"] == ["iris-retrain-1"]
    assert status["metrics"]["drift"] == 0.6
    triggered = [e for e in kube.list("Event", namespace) if e["reason"] == "RetrainingTriggered"]
    # One Event, or none if the first operator stopped between the create and the Event.
    assert len(triggered) <= 1


def test_cooldown_holds_then_the_next_run_gets_the_next_counter(
    kube: Kube, namespace: str, monitored: OperatorRunner, artifacts: Path, iris_artifact: dict[str, Any]
) -> None:
    cooldown = 30
    serve(
        kube,
        namespace,
        artifacts,
        iris_artifact,
        triggers={"drift": {"threshold": 0.25, "consecutive": 1}},
        cooldownSeconds=cooldown,
        maxConcurrent=3,
    )
    DRIFT["iris"] = 0.6
    first = wait_for(
        lambda: kube.get("TrainingJob", namespace, "iris-retrain-1"),
        timeout=INTERVAL * 12,
        what="the first retraining run",
    )
    # Scrapes keep finding drift (each one counts a breach) while the cooldown blocks a second run.
    status = wait_for(
        lambda: (
            (s := status_of(kube, "InferenceService", namespace, "iris"))
            .get("metrics", {})
            .get("driftBreaches", 0)
            >= 2
            and s
        ),
        timeout=INTERVAL * 12,
        what="two breaches after the first run",
    )
    assert status["retraining"]["count"] == 1
    assert status["retraining"]["activeJobs"] == ["iris-retrain-1"]

    second = wait_for(
        lambda: kube.get("TrainingJob", namespace, "iris-retrain-2"),
        timeout=cooldown + INTERVAL * 12,
        what="the second retraining run after the cooldown",
    )
    # Creation times are whole seconds, and so is the recorded trigger time the cooldown counts from.
    assert (created_at(second) - created_at(first)).total_seconds() >= cooldown - 2
    recorded = wait_for(
        lambda: (r := retraining_status(kube, namespace)).get("count") == 2 and r, what="count 2"
    )
    assert recorded["activeJobs"] == ["iris-retrain-1", "iris-retrain-2"]
    assert retraining_jobs(kube, namespace) == ["iris-retrain-1", "iris-retrain-2"]
    assert_paced()


def _annotate(kube: Kube, namespace: str, value: str) -> None:
    kube.request(
        "PATCH",
        f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices/iris",
        body={"metadata": {"annotations": {RETRAIN: value}}},
        content_type="application/merge-patch+json",
    )


def test_manual_trigger_fires_once_per_value_and_respects_max_concurrent(
    kube: Kube, namespace: str, monitored: OperatorRunner, artifacts: Path, iris_artifact: dict[str, Any]
) -> None:
    serve(kube, namespace, artifacts, iris_artifact, triggers={}, cooldownSeconds=0, maxConcurrent=1)

    _annotate(kube, namespace, "first")
    tj = wait_for(lambda: kube.get("TrainingJob", namespace, "iris-retrain-1"), what="the manual run")
    assert tj["metadata"]["annotations"]["mlops.dev/trigger"] == "manual"
    recorded = wait_for(
        lambda: (r := retraining_status(kube, namespace)).get("count") == 1 and r, what="count 1"
    )
    assert (recorded["lastTrigger"], recorded["lastManual"]) == ("manual", "first")

    # The same value again is no new request; a new value waits while retrain-1 runs (maxConcurrent 1).
    reconciled_now(kube, namespace, "iris")
    assert retraining_jobs(kube, namespace) == ["iris-retrain-1"]
    _annotate(kube, namespace, "second")
    status = reconciled_now(kube, namespace, "iris")
    assert retraining_jobs(kube, namespace) == ["iris-retrain-1"]
    assert status["retraining"]["count"] == 1
    assert status["retraining"]["lastManual"] == "first"

    # retrain-1 ends (its training pod fails on bad input): the pending request fires now.
    labels = {"mlops.dev/training-job": "iris-retrain-1", "mlops.dev/step": "train"}
    pod = wait_for(lambda: pods_of(kube, namespace, labels), what="retrain-1's training pod")[0]
    finish_pod(kube, namespace, pod, 2, '{"ok":false,"reason":"BadInput","message":"test says no"}')
    wait_for(lambda: kube.get("TrainingJob", namespace, "iris-retrain-2"), what="the second manual run")
    recorded = wait_for(
        lambda: (r := retraining_status(kube, namespace)).get("count") == 2 and r, what="count 2"
    )
    assert recorded["activeJobs"] == ["iris-retrain-2"]
    assert recorded["lastManual"] == "second"
    assert status_of(kube, "TrainingJob", namespace, "iris-retrain-1")["phase"] == "Failed"
    assert retraining_jobs(kube, namespace) == ["iris-retrain-1", "iris-retrain-2"]


def test_idle_service_writes_nothing_over_several_scrapes(
    kube: Kube, namespace: str, monitored: OperatorRunner, artifacts: Path, iris_artifact: dict[str, Any]
) -> None:
    DRIFT["iris"] = 0.05  # below the trigger's threshold, and constant
    serve(kube, namespace, artifacts, iris_artifact)
    wait_for(
        lambda: (
            condition(status_of(kube, "InferenceService", namespace, "iris"), "Ready").get("status") == "True"
        ),
        what="Ready",
    )
    wait_for(
        lambda: (
            status_of(kube, "InferenceService", namespace, "iris").get("metrics", {}).get("drift") == 0.05
        ),
        what="the first scrape in status",
    )
    watched = [
        ("InferenceService", "iris"),
        ("Deployment", "iris-predictor"),
        ("Service", "iris"),
        ("NetworkPolicy", "iris"),  # re-applied each resync, unchanged (issue #19)
        ("ModelVersion", "iris-v1"),
    ]

    def versions() -> dict[str, str]:
        out = {}
        for kind, name in watched:
            obj = kube.get(kind, namespace, name)
            assert obj is not None, f"{kind} {name}"
            out[f"{kind}/{name}"] = obj["metadata"]["resourceVersion"]
        return out

    # Start counting once a scrape has begun: every write before it belongs to the settling pass.
    after_scrapes(1)
    before = versions()
    after_scrapes(4)  # three whole scrape passes, and the start of a fourth
    assert versions() == before
    status = status_of(kube, "InferenceService", namespace, "iris")
    assert status["metrics"]["drift"] == 0.05
    assert status["retraining"]["count"] == 0
    assert retraining_jobs(kube, namespace) == []
    assert_paced()


def test_a_trigger_without_its_source_is_no_run_and_waits_for_it(
    kube: Kube, namespace: str, monitored: OperatorRunner, artifacts: Path, iris_artifact: dict[str, Any]
) -> None:
    """Issue #19, case 2: a manual retrain whose fromTrainingJob does not exist creates nothing,
    counts nothing and says so (Retraining=False/SourceNotFound, one Warning Event); the request
    stays pending and fires once the TrainingJob exists."""
    serve(
        kube, namespace, artifacts, iris_artifact,
        template=None, fromTrainingJob="iris-source", triggers={}, cooldownSeconds=0,
    )  # fmt: skip
    _annotate(kube, namespace, "now")
    status = wait_for(
        lambda: (
            (s := status_of(kube, "InferenceService", namespace, "iris"))
            and condition(s, "Retraining").get("reason") == "SourceNotFound"
            and s
        ),
        what="Retraining=False/SourceNotFound",
    )
    assert "iris-source" in condition(status, "Retraining")["message"]
    assert not (status.get("retraining") or {}).get("count")
    reconciled_now(kube, namespace, "iris")
    assert retraining_jobs(kube, namespace) == []
    warnings = [e for e in events_for(kube, namespace, "iris") if e["reason"] == "SourceNotFound"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning", warnings

    create(kube, namespace, trainingjob("iris-source"))
    tj = wait_for(
        lambda: kube.get("TrainingJob", namespace, "iris-retrain-1"), what="the run, once its source exists"
    )
    assert tj["metadata"]["annotations"]["mlops.dev/trigger"] == "manual"
    recorded = wait_for(
        lambda: (r := retraining_status(kube, namespace)).get("count") == 1 and r, what="count 1"
    )
    assert recorded["lastManual"] == "now"


def test_a_run_before_any_label_trains_on_what_exists_and_says_so(
    kube: Kube, namespace: str, monitored: OperatorRunner, artifacts: Path, iris_artifact: dict[str, Any]
) -> None:
    """Issue #19, case 1: a retraining run with includeFeedback before any label was posted
    (the prediction log holds none) trains on its data and says so, instead of failing."""
    serve(kube, namespace, artifacts, iris_artifact, triggers={}, cooldownSeconds=0, includeFeedback=True)
    _annotate(kube, namespace, "now")
    tj = wait_for(lambda: kube.get("TrainingJob", namespace, "iris-retrain-1"), what="the run")
    [extra] = tj["spec"]["data"]["extraSources"]
    labels = {"mlops.dev/training-job": "iris-retrain-1", "mlops.dev/step": "train"}
    pod = wait_for(lambda: pods_of(kube, namespace, labels), what="its training pod")[0]
    code, message = run_pod_locally(kube, namespace, pod, artifacts)
    assert code == 0, message
    status = wait_for(
        lambda: (
            (s := status_of(kube, "TrainingJob", namespace, "iris-retrain-1")).get("phase") == "Succeeded"
            and s
        ),
        what="the run Succeeded",
    )
    assert f"trained without {extra['uri']}: no labelled rows there yet" in status["message"], status
