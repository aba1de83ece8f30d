"""The whole loop on real pods (issue #8): train on iris, serve with monitoring and retraining,
normal traffic (no drift), shifted traffic with labelled feedback (drift and accuracy cross their
thresholds), exactly one retraining TrainingJob on data that includes the labelled log, a better
ModelVersion verified and rolled out through the canary, and the shift no longer looks like drift
to the new model. Every step is asserted from status (`kubectl get -o json`), never from logs.

The resources are manifests/samples/lifecycle (the demo applies the same ones) without the
tuning grid; traffic and the shift are in tests/e2e/loop.py. The tests run in order.

Where the tier runs a Prometheus (the local cluster's `make e2e`: tests/cluster/local/prometheus.sh,
MLOPS_E2E_PROMETHEUS_URL), the InferenceService reads it (spec.monitoring.prometheusUrl, the
Service prometheus.mlops-monitoring that script publishes): the operator then scrapes no pod, so
status.metrics, the canary's promotion and the retraining trigger all come from PromQL (issue #21).
Pod scraping keeps its e2e coverage in test_lifecycle.py; without a Prometheus (kind) the loop
runs on pod scraping too.

Storage (issue #17): the loop runs twice in the default `make e2e`, once on a claim (pvc://) and
once on S3 (data, models, artifacts and the prediction log in a bucket, every location with the
bucket's secretRef, and no PersistentVolumeClaim in the namespace); `make e2e STORAGE=s3` runs the
S3 loop only. Each run has its own namespace (the `mode` fixture parametrizes `namespace`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import loop
import pytest
from e2ekit import STORAGE_MODES, Cluster, Storage, storage_mode

from waiting import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitoring"))
import promtool  # tests/monitoring: the dashboard's queries, read as lint reads them

pytestmark = pytest.mark.e2e

ISVC = "iris"
TRAFFIC = loop.plan()
# The in-cluster name of the tier's Prometheus (prometheus.sh publishes it), when it has one.
PROMETHEUS_IN_CLUSTER = "http://prometheus.mlops-monitoring.svc:9090"
PROMETHEUS = PROMETHEUS_IN_CLUSTER if os.environ.get("MLOPS_E2E_PROMETHEUS_URL") else None

# Values later tests compare with (per storage mode: pytest runs one mode's tests, then the other's).
seen: dict[str, Any] = {}


@pytest.fixture(scope="module", params=STORAGE_MODES if storage_mode() == "pvc" else ("s3",))
def mode(request: pytest.FixtureRequest) -> str:
    seen.clear()
    return str(request.param)


def _isvc_spec(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return dict(cluster.get(namespace, "inferenceservice", ISVC)["spec"])


def _read_from_prometheus(cluster: Cluster, namespace: str) -> None:
    """With a Prometheus, the metrics just asserted came from it: MetricsAvailable says so."""
    cond = cluster.condition(namespace, "inferenceservice", ISVC, "MetricsAvailable")
    if PROMETHEUS:
        assert (cond["status"], cond["reason"]) == ("True", "PrometheusQueried"), cond
        assert PROMETHEUS in cond["message"], cond
    else:
        assert not cond, cond  # pod scraping: no such condition


def test_trains_and_serves_with_monitoring_and_retraining(
    cluster: Cluster, namespace: str, storage: Storage
) -> None:
    tj, isvc = loop.lifecycle(storage, tuning=False)
    if PROMETHEUS:
        isvc["spec"]["monitoring"]["prometheusUrl"] = PROMETHEUS
    cluster.apply(namespace, tj, isvc)
    loop.wait_phase(cluster, namespace, "modelversion", "iris-v1", "Verified", timeout=600)
    cluster.wait(namespace, f"inferenceservice/{ISVC}", "condition=Ready", timeout=300)

    status = cluster.status(namespace, "inferenceservice", ISVC)
    assert status["modelVersion"] == "iris-v1"
    spec = _isvc_spec(cluster, namespace)
    assert spec["policy"] == {"select": "latest", "promotion": "auto", "minImprovement": 0}
    assert spec["monitoring"]["intervalSeconds"] == 10
    assert spec["monitoring"]["predictionLog"]["enabled"] is True
    retraining = spec["retraining"]
    assert retraining["includeFeedback"] is True and retraining["maxConcurrent"] == 1
    assert retraining["triggers"]["accuracy"]["minSamples"] == 30
    mv = cluster.get(namespace, "modelversion", "iris-v1")
    seen["v1_accuracy"] = mv["spec"]["metrics"]["accuracy"]
    assert mv["spec"]["artifact"]["uri"].startswith(storage.uri("models/"))
    if storage.mode == "s3":
        _no_claim_anywhere(cluster, namespace, storage)


def _no_claim_anywhere(cluster: Cluster, namespace: str, storage: Storage) -> None:
    """S3 mode: no PersistentVolumeClaim in the namespace and none in any pod; the serving pods
    fetch the artifact in their init container and ship the log from a sidecar, with the Secret."""
    assert cluster.get(namespace, "pvc")["items"] == []
    pods = cluster.get(namespace, "pod")["items"]
    assert pods
    for pod in pods:
        volumes = pod["spec"].get("volumes") or []
        assert not [v for v in volumes if "persistentVolumeClaim" in v], pod["metadata"]["name"]
    serving = cluster.get(namespace, "pod", selector=f"mlops.dev/inference-service={ISVC}")["items"]
    assert serving
    for pod in serving:
        inits = pod["spec"]["initContainers"]
        assert [c["envFrom"] for c in inits] == [[{"secretRef": {"name": storage.secret}}]] * len(inits)


def test_normal_traffic_shows_no_drift(cluster: Cluster, namespace: str) -> None:
    started = loop.now_rfc3339()
    sent = loop.send(cluster, namespace, ISVC, TRAFFIC["normal"], pod="normal-traffic", feedback=True)
    assert sent.errors == [] and sent.rows == 200 and sent.feedback == 200, sent
    status = loop.wait_scrape(cluster, namespace, ISVC, started, requests=20, labelled=200, timeout=120)
    m = status["metrics"]
    threshold = _isvc_spec(cluster, namespace)["monitoring"]["drift"]["threshold"]
    assert m["drift"] < threshold, m
    assert m["accuracy"] >= 0.9, m
    assert (status.get("retraining") or {}).get("count", 0) == 0
    assert cluster.condition(namespace, "inferenceservice", ISVC, "Drifted")["status"] == "False"
    assert (
        cluster.get(namespace, "trainingjob", selector=f"mlops.dev/inference-service={ISVC}")["items"] == []
    )
    seen["normal"] = m
    _read_from_prometheus(cluster, namespace)


def test_shifted_traffic_with_feedback_fires_one_retraining(
    cluster: Cluster, namespace: str, storage: Storage
) -> None:
    sent = loop.send(cluster, namespace, ISVC, TRAFFIC["shifted"], pod="shifted-traffic", feedback=True)
    assert sent.errors == [] and sent.feedback == 1500, sent
    assert sent.accuracy < 0.8, f"the old model should fail on the shifted traffic: {sent}"

    status = loop.wait_retraining(cluster, namespace, ISVC, timeout=180)
    m, retraining = status["metrics"], status["retraining"]
    spec = _isvc_spec(cluster, namespace)
    triggers = spec["retraining"]["triggers"]
    # Whichever trigger fired, both signals crossed their thresholds in status.
    assert m["accuracy"] < triggers["accuracy"]["min"] and m["labelledSamples"] >= 30, m
    assert m["drift"] > triggers["drift"]["threshold"], m
    assert m["drift"] > 3 * seen["normal"]["drift"], (m, seen["normal"])
    assert retraining["count"] == 1 and retraining["lastTrigger"] in ("accuracy", "drift"), retraining
    job = retraining["activeJobs"][0]
    assert job == f"{ISVC}-retrain-1"
    assert cluster.condition(namespace, "inferenceservice", ISVC, "Drifted")["status"] == "True"
    _read_from_prometheus(cluster, namespace)
    seen["shifted"] = m

    jobs = cluster.get(namespace, "trainingjob", selector=f"mlops.dev/inference-service={ISVC}")["items"]
    assert [j["metadata"]["name"] for j in jobs] == [job]
    owner = jobs[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("InferenceService", ISVC, True)
    log_uri = storage.uri(f"predictions/{namespace}/{ISVC}")
    data = "builtin:iris" if storage.mode == "pvc" else storage.uri("data/iris.csv")
    assert loop.data_uris(jobs[0]) == [data, log_uri]
    secret = {"secretRef": {"name": storage.secret}} if storage.secret else {}
    assert jobs[0]["spec"]["data"]["extraSources"] == [{"uri": log_uri, "format": "jsonl", **secret}]
    # What that source holds: every label the client posted (normal and shifted traffic); on S3
    # once the pods' sidecars have shipped their last window.
    labelled = loop.labelled_log_lines(cluster, namespace, storage, log_uri)
    if storage.mode == "s3":
        labelled = wait_for(
            lambda: (n := loop.labelled_log_lines(cluster, namespace, storage, log_uri)) >= 1700 and n,
            timeout=4 * loop.LOG_WINDOW_SECONDS + 30,
            interval=5,
            what="every labelled line shipped to S3",
        )
    assert labelled == 1700
    seen["job"] = job


def test_retrained_version_is_better_and_rolls_out(cluster: Cluster, namespace: str) -> None:
    job = seen["job"]
    tj = loop.wait_phase(cluster, namespace, "trainingjob", job, "Succeeded", timeout=600)
    assert tj["modelVersion"] == "iris-v2"
    loop.wait_phase(cluster, namespace, "modelversion", "iris-v2", "Verified", timeout=300)
    mv = cluster.get(namespace, "modelversion", "iris-v2")
    assert mv["spec"]["source"]["trainingJob"] == job
    assert cluster.condition(namespace, "modelversion", "iris-v2", "GatesPassed")["status"] == "True"
    # The policy's comparison: better by at least minImprovement on the evaluation metric.
    assert mv["spec"]["metrics"]["accuracy"] >= seen["v1_accuracy"], (mv["spec"]["metrics"], seen)

    status = loop.roll_out_under_traffic(cluster, namespace, ISVC, "iris-v2", TRAFFIC["canary"], timeout=600)
    assert status["canary"]["modelVersion"] == "iris-v2" and status["canary"]["phase"] == "Promoted"
    loop.wait_served_only_by(cluster, namespace, ISVC, "iris-v2", timeout=300)
    assert cluster.condition(namespace, "inferenceservice", ISVC, "Ready")["status"] == "True"
    assert cluster.status(namespace, "modelversion", "iris-v2")["stage"] == "Production"
    # The ModelVersions learn who serves them from their own reconcile: eventually consistent.
    wait_for(
        lambda: cluster.status(namespace, "modelversion", "iris-v1").get("stage") == "Archived",
        timeout=120,
        what="iris-v1 Archived",
    )


def test_new_version_sees_no_drift_in_the_shifted_traffic(cluster: Cluster, namespace: str) -> None:
    started = loop.now_rfc3339()
    sent = loop.send(cluster, namespace, ISVC, TRAFFIC["again"], pod="shifted-again", feedback=True)
    assert sent.errors == [] and sent.versions == {"iris-v2": 40}, sent
    assert sent.accuracy >= 0.9, sent
    status = loop.wait_scrape(cluster, namespace, ISVC, started, requests=1, labelled=200, timeout=120)
    m = status["metrics"]
    spec = _isvc_spec(cluster, namespace)
    assert status["modelVersion"] == "iris-v2"
    assert m["drift"] < spec["monitoring"]["drift"]["threshold"], m
    assert m["drift"] < seen["shifted"]["drift"] / 3, (m, seen["shifted"])
    assert m["accuracy"] >= 0.9, m
    assert cluster.condition(namespace, "inferenceservice", ISVC, "Drifted")["status"] == "False"
    # Still exactly one retraining run: the better model ended the loop.
    assert status["retraining"]["count"] == 1 and status["retraining"]["activeJobs"] == []
    assert status["retraining"]["lastOutcome"] == f"{ISVC}-retrain-1 produced iris-v2, now serving"
    jobs = cluster.get(namespace, "trainingjob", selector=f"mlops.dev/inference-service={ISVC}")["items"]
    assert len(jobs) == 1


def test_every_dashboard_query_returns_series(cluster: Cluster, namespace: str) -> None:
    """Issue #21: the shipped Grafana dashboard's panels, for this InferenceService, answered by the
    tier's real Prometheus (tests/cluster/local/prometheus.sh) over the loop's whole run."""
    url = os.environ.get("MLOPS_E2E_PROMETHEUS_URL")
    if not url:
        pytest.skip(
            "no Prometheus in this tier (MLOPS_E2E_PROMETHEUS_URL unset: the local cluster's make e2e sets it)"
        )
    queries = promtool.dashboard_queries(variables={"$namespace": namespace, "$inference_service": ISVC})
    end = time.time()
    empty = []
    for title, expr in queries.items():
        query = urllib.parse.urlencode({"query": expr, "start": end - 3600, "end": end, "step": 15})
        with urllib.request.urlopen(f"{url}/api/v1/query_range?{query}", timeout=30) as answer:
            doc = json.load(answer)
        assert doc["status"] == "success", (title, doc)
        if not doc["data"]["result"]:
            empty.append(f"{title}: {expr}")
    assert empty == [], "dashboard panels without data:\n" + "\n".join(empty)
