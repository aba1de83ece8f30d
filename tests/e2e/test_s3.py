"""Serving from S3 on real pods (issue #17), whatever MLOPS_E2E_STORAGE says: no claim anywhere.

A TrainingJob reads iris from the bucket and writes its artifact there; an InferenceService with
two replicas serves it, each pod's init container fetching and verifying the artifact into an
emptyDir. Two clients send at once, one connection per request, so both replicas answer and
both write the prediction log (each its own objects, per pod and window, shipped by its
sidecar); labels come back through the feedback port, often to the replica that did not serve
the request (labels-*.jsonl, joined by the trainer). A manual retraining then reads the log, and
the trainer's own record (ModelVersion spec.source.dataSources) says it read every labelled row
exactly once. A serving pod deleted comes back from S3: a new pod whose init container fetched
and verified the artifact again, and which answers.

The tests run in order and build on each other.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import loop
import pytest
from e2ekit import Cluster, Storage

from mlops_operator.build.inferenceservice import FETCH_CONTAINER, MONITORING_PORT
from waiting import wait_for

pytestmark = pytest.mark.e2e

ISVC = "iris"
WINDOW_SECONDS = 5
REQUESTS_PER_CLIENT = 30
ROWS_PER_REQUEST = 5


@pytest.fixture(scope="module")
def mode() -> str:
    return "s3"


# One new connection per request (so the Service spreads them over both replicas); the labels
# of each request go to the feedback port on yet another connection, so about half reach the
# replica that did not serve it (202, kept as labels-*.jsonl). Prints one JSON line.
_CLIENT = """
import json, http.client, urllib.parse
url, monitoring, rows, per = {url!r}, {monitoring!r}, {rows!r}, {per!r}
where = urllib.parse.urlsplit(url)
out = {{"requests": 0, "labels": 0, "relayed": 0, "errors": [], "versions": {{}}}}

def post(port, path, body):
    conn = http.client.HTTPConnection(where.hostname, port, timeout=15)
    try:
        conn.request("POST", path, json.dumps(body), {{"Content-Type": "application/json"}})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()

for start in range(0, len(rows), per):
    chunk = [r[0] for r in rows[start:start + per]]
    truth = [r[1] for r in rows[start:start + per]]
    body = {{"inputs": [{{"name": "input-0", "shape": [len(chunk), 4], "datatype": "FP64",
                         "data": [x for row in chunk for x in row]}}]}}
    status, data = post(where.port or 80, where.path + "/infer", body)
    if status != 200:
        out["errors"].append("infer HTTP %d: %r" % (status, data[:200]))
        continue
    answer = json.loads(data)
    out["requests"] += 1
    out["versions"][answer["model_version"]] = out["versions"].get(answer["model_version"], 0) + 1
    status, data = post(monitoring, where.path + "/feedback", {{"id": answer["id"], "labels": truth}})
    if status in (200, 202):  # 202: another replica served it; kept in its log as labels-*.jsonl
        out["labels"] += len(truth)
        out["relayed"] += status == 202
    else:
        out["errors"].append("feedback HTTP %d: %r" % (status, data[:200]))
out["errors"] = out["errors"][:10]
print(json.dumps(out))
"""


def _client(cluster: Cluster, namespace: str, pod: str, seed: int) -> dict[str, Any]:
    traffic = loop.normal_traffic(REQUESTS_PER_CLIENT * ROWS_PER_REQUEST, seed=seed)
    url = cluster.status(namespace, "inferenceservice", ISVC)["url"]
    code = _CLIENT.format(
        url=url,
        monitoring=MONITORING_PORT,
        rows=list(zip(traffic.rows, traffic.labels, strict=True)),
        per=ROWS_PER_REQUEST,
    )
    out = cluster.run_python(namespace, pod, code, timeout=300)
    doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return doc


def _serving_pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    listed = cluster.get(namespace, "pod", selector=f"mlops.dev/inference-service={ISVC}") or {}
    return [p for p in listed.get("items") or [] if not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or []
    )


def _fetched(pod: dict[str, Any]) -> bool:
    """Its init container (the fetch: download, sha256, into the emptyDir) ran to exit 0."""
    statuses = pod.get("status", {}).get("initContainerStatuses") or []
    fetch = [s for s in statuses if s["name"] == FETCH_CONTAINER]
    return len(fetch) == 1 and (fetch[0].get("state", {}).get("terminated") or {}).get("exitCode") == 0


def test_two_replicas_serve_an_s3_artifact_with_no_claim(
    cluster: Cluster, namespace: str, storage: Storage
) -> None:
    tj, isvc = loop.lifecycle(storage, tuning=False)
    isvc["spec"]["replicas"] = 2
    isvc["spec"].pop("canary")
    # Pinned to v1: the retrained version is registered, not rolled out, so the pods stay put.
    isvc["spec"].pop("policy")
    isvc["spec"]["version"] = 1
    isvc["spec"]["monitoring"]["predictionLog"] = {"windowSeconds": WINDOW_SECONDS}
    # Only the manual trigger: the run starts when the test says the log is complete.
    isvc["spec"]["retraining"]["triggers"] = {}
    isvc["spec"]["retraining"]["cooldownSeconds"] = 0
    cluster.apply(namespace, tj, isvc)
    loop.wait_phase(cluster, namespace, "modelversion", "iris-v1", "Verified", timeout=600)
    cluster.wait(namespace, f"inferenceservice/{ISVC}", "condition=Ready", timeout=300)
    assert cluster.get(namespace, "pvc")["items"] == []
    pods = wait_for(
        lambda: (p := _serving_pods(cluster, namespace)) and len(p) == 2 and all(map(_ready, p)) and p,
        timeout=180,
        what="two Ready serving pods",
    )
    for pod in pods:
        assert _fetched(pod), pod["status"]
        assert not [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]


def test_two_replicas_write_the_log_at_once_and_retraining_reads_each_label_once(
    cluster: Cluster, namespace: str, storage: Storage
) -> None:
    results: dict[str, dict[str, Any]] = {}

    def run(pod: str, seed: int) -> None:
        results[pod] = _client(cluster, namespace, pod, seed)

    threads = [threading.Thread(target=run, args=(f"client-{i}", 10 + i)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=400)
    assert sorted(results) == ["client-1", "client-2"], results
    for out in results.values():
        assert out["errors"] == [] and out["requests"] == REQUESTS_PER_CLIENT, out
    labels = sum(out["labels"] for out in results.values())
    assert labels == 2 * REQUESTS_PER_CLIENT * ROWS_PER_REQUEST
    # Some labels reached the replica that did not serve the request: the trainer joins those.
    assert sum(out["relayed"] for out in results.values()) > 0, results

    # Both replicas wrote the log: objects under each pod's own name, none shared.
    assert storage.s3 is not None
    log_prefix = f"predictions/{namespace}/{ISVC}/"
    hosts = {p["metadata"]["name"] for p in _serving_pods(cluster, namespace)}

    def shipped() -> set[str]:
        keys = storage.s3.keys(storage.bucket, log_prefix) if storage.s3 else []
        return {k[len(log_prefix) :].split("/", 1)[0] for k in keys if k.endswith(".jsonl")}

    wait_for(lambda: shipped() >= hosts, timeout=60, interval=2, what=f"log objects of both pods {hosts}")

    # Wait until every label is in S3 (feedback lines of the serving pod, or relayed labels).
    def labelled_in_s3() -> int:
        uri = storage.uri(log_prefix)
        direct = loop.labelled_log_lines(cluster, namespace, storage, uri)
        relayed = storage.read_lines(cluster, namespace, uri, "labels-*.jsonl")
        return direct + sum(len(json.loads(line)["labels"]) for line in relayed if line.strip())

    wait_for(
        lambda: labelled_in_s3() >= labels,
        timeout=6 * WINDOW_SECONDS + 30,
        interval=3,
        what=f"{labels} labels shipped",
    )

    cluster.kubectl("-n", namespace, "annotate", "inferenceservice", ISVC, "mlops.dev/retrain=e2e-1")
    status = loop.wait_retraining(cluster, namespace, ISVC, timeout=120)
    job = status["retraining"]["activeJobs"][0]
    done = loop.wait_phase(cluster, namespace, "trainingjob", job, "Succeeded", timeout=600)
    mv = cluster.get(namespace, "modelversion", done["modelVersion"])
    # The trainer's own record: 150 iris rows from the CSV, then every labelled row once.
    assert mv["spec"]["source"]["dataSources"] == [
        {"uri": storage.uri("data/iris.csv"), "rows": 150},
        {"uri": storage.uri(log_prefix), "rows": labels},
    ], mv["spec"]["source"]


def test_a_deleted_serving_pod_comes_back_from_s3(cluster: Cluster, namespace: str) -> None:
    before = _serving_pods(cluster, namespace)
    victim = before[0]["metadata"]["name"]
    cluster.kubectl("-n", namespace, "delete", "pod", victim, "--wait=true")

    def replaced() -> list[dict[str, Any]]:
        pods = _serving_pods(cluster, namespace)
        names = {p["metadata"]["name"] for p in pods}
        return pods if len(pods) == 2 and victim not in names and all(map(_ready, pods)) else []

    pods = wait_for(replaced, timeout=180, interval=2, what=f"a Ready pod in place of {victim}")
    [new] = [p for p in pods if p["metadata"]["name"] not in {b["metadata"]["name"] for b in before}]
    assert _fetched(new), new["status"]
    fetch_log = cluster.kubectl("-n", namespace, "logs", new["metadata"]["name"], "-c", FETCH_CONTAINER)
    mv = cluster.get(namespace, "modelversion", new["metadata"]["labels"]["mlops.dev/model-version"])
    assert mv["spec"]["artifact"]["sha256"] in fetch_log, fetch_log[-2000:]
    # The new pod answers: every request of a client on fresh connections gets a 200.
    out = _client(cluster, namespace, "client-after", seed=20)
    assert out["errors"] == [] and out["requests"] == REQUESTS_PER_CLIENT, out
