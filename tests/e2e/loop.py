"""The closed loop, driven from outside as a client would: traffic, labelled feedback, and status.

Shared by the e2e test (tests/e2e/test_loop.py) and the narrated demo (tests/e2e/demo.py), so the
two cannot drift apart. Traffic is generated here (seeded, so every run sends the same rows) and
sent from a pod inside the cluster to the InferenceService's `status.url` (its Service's DNS name,
resolved by the cluster's DNS), as a client in the cluster would.

The shift (why the retrained model is really better): half of the shifted traffic is ordinary
iris; the other half comes from a "second site" whose scanner reports petals
`PETAL_LENGTH_OFFSET` cm longer and `PETAL_WIDTH_OFFSET` cm wider. Those values lie far outside
the training data, so the old model calls every such flower virginica (accuracy on that half
~1/3, overall ~0.65) and the petal features' PSI jumps. The true labels come back through the
feedback endpoint and land in the prediction log; the second site's flowers keep iris's class
structure and do not overlap the first site's, so a model retrained on iris plus the labelled log
learns both sites. Its reference statistics then include the shifted traffic, so the same
traffic sent to the new model shows little drift.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from e2ekit import Cluster, Storage, sample

from mlops_operator.build.inferenceservice import MONITORING_PORT

# Feature order of sklearn's iris frame (the model's signature): sepal l/w, petal l/w.
PETAL_LENGTH_OFFSET: Final = 8.0
PETAL_WIDTH_OFFSET: Final = 3.0
ROWS_PER_REQUEST: Final = 10


@dataclass(frozen=True)
class Traffic:
    rows: list[list[float]]
    labels: list[int]


def _iris() -> tuple[list[list[float]], list[int]]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return [[float(v) for v in row] for row in data.data], [int(t) for t in data.target]


def normal_traffic(n: int, seed: int = 1) -> Traffic:
    """`n` iris flowers drawn with replacement: the population the model was trained on."""
    rows, labels = _iris()
    rng = random.Random(seed)
    picks = [rng.randrange(len(rows)) for _ in range(n)]
    return Traffic([list(rows[i]) for i in picks], [labels[i] for i in picks])


def shifted_traffic(n: int, seed: int = 2, share: float = 0.5) -> Traffic:
    """`n` flowers, `share` of them from the second site (petal offsets), shuffled."""
    base = normal_traffic(n, seed)
    rng = random.Random(seed + 1000)
    rows = []
    for row in base.rows:
        second_site = rng.random() < share
        dl, dw = (PETAL_LENGTH_OFFSET, PETAL_WIDTH_OFFSET) if second_site else (0.0, 0.0)
        rows.append([row[0], row[1], round(row[2] + dl, 1), round(row[3] + dw, 1)])
    return Traffic(rows, list(base.labels))


def plan() -> dict[str, Traffic]:
    """The traffic of the loop, the same for the test and the demo: 200 normal rows (the drift
    window), 1500 shifted rows, 60 unlabelled rows per canary round, then 400 shifted rows for the
    new model. The retrained model's reference is iris plus the labelled log, a mixture; with 1500
    shifted rows against 350 others, PSI of the shifted traffic against it stays near 0.1 (0.07-0.16
    over ten seeds of the 200-row drift window, offline), below the 0.2 drift threshold; with 1000 rows
    it reaches 0.21."""
    return {
        "normal": normal_traffic(200, seed=1),
        "shifted": shifted_traffic(1500, seed=2),
        "canary": shifted_traffic(60, seed=4),
        "again": shifted_traffic(400, seed=3),
    }


# Runs in a pod of the server image: sends the rows in requests of ROWS_PER_REQUEST over the V2
# protocol to status.url (http://<service>.<namespace>.svc.<domain>/v2/models/<model>) and, when
# asked, posts each request's true labels to its feedback endpoint (the Service's monitoring
# port, 8082: feedback is not served on the prediction port, issue #19) by the request id
# the server answered with, right after each answer or (`later`) all of them after the traffic,
# as labels arrive in life. Prints one JSON line of totals.
_SENDER = """
import json, http.client, time, urllib.parse
url, feedback, monitoring, later = {url!r}, {feedback!r}, {monitoring!r}, {later!r}
rows, labels, per = {rows!r}, {labels!r}, {per!r}
out = {{"requests": 0, "rows": 0, "correct": 0, "feedback": 0, "errors": [], "versions": {{}}}}
answered = []

def post(conn, path, body):
    conn.request("POST", path, json.dumps(body), {{"Content-Type": "application/json"}})
    resp = conn.getresponse()
    return resp.status, resp.read()

where = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(where.hostname, where.port or 80, timeout=15)
fconn = http.client.HTTPConnection(where.hostname, monitoring, timeout=15)
for start in range(0, len(rows), per):
    chunk, truth = rows[start:start + per], labels[start:start + per]
    body = {{"inputs": [{{"name": "input-0", "shape": [len(chunk), len(chunk[0])], "datatype": "FP64",
                         "data": [x for row in chunk for x in row]}}]}}
    status, data = post(conn, where.path + "/infer", body)
    if status != 200:
        out["errors"].append("infer HTTP %d: %r" % (status, data[:200]))
        continue
    answer = json.loads(data)
    predicted = next(o["data"] for o in answer["outputs"] if o["name"] == "predict")
    out["requests"] += 1
    out["rows"] += len(chunk)
    out["correct"] += sum(int(p == t) for p, t in zip(predicted, truth))
    version = answer["model_version"]
    out["versions"][version] = out["versions"].get(version, 0) + 1
    if feedback and later:
        answered.append((answer["id"], truth))
    elif feedback:
        status, data = post(fconn, where.path + "/feedback", {{"id": answer["id"], "labels": truth}})
        if status == 200:
            out["feedback"] += len(truth)
        else:
            out["errors"].append("feedback HTTP %d: %r" % (status, data[:200]))
if later and answered:
    time.sleep(3)  # the labels come after the answers (in shadow mode, after the mirror's too)
    for request_id, truth in answered:
        status, data = post(fconn, where.path + "/feedback", {{"id": request_id, "labels": truth}})
        if status == 200:
            out["feedback"] += len(truth)
        else:
            out["errors"].append("feedback HTTP %d: %r" % (status, data[:200]))
out["errors"] = out["errors"][:10]
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Sent:
    """What a client saw: requests and rows answered, its own accuracy, labels posted, versions."""

    requests: int
    rows: int
    correct: int
    feedback: int
    errors: list[str]
    versions: dict[str, int]

    @property
    def accuracy(self) -> float:
        return self.correct / self.rows if self.rows else float("nan")


def send(
    cluster: Cluster,
    namespace: str,
    isvc: str,
    traffic: Traffic,
    *,
    pod: str,
    feedback: bool,
    labels_later: bool = False,
) -> Sent:
    """Send `traffic` to the InferenceService's status.url from pod `pod` (replaced if it exists);
    with `feedback`, post each answer's labels at once or (`labels_later`) after all the traffic."""
    url = cluster.status(namespace, "inferenceservice", isvc)["url"]
    cluster.kubectl("-n", namespace, "delete", "pod", pod, "--ignore-not-found", "--wait=true")
    code = _SENDER.format(
        url=url,
        feedback=feedback,
        later=labels_later,
        monitoring=MONITORING_PORT,
        rows=traffic.rows,
        labels=traffic.labels,
        per=ROWS_PER_REQUEST,
    )
    out = cluster.run_python(namespace, pod, code, timeout=300)
    doc = json.loads(out.strip().splitlines()[-1])
    return Sent(**doc)


def metrics(cluster: Cluster, namespace: str, isvc: str) -> dict[str, Any]:
    return dict(cluster.status(namespace, "inferenceservice", isvc).get("metrics") or {})


def wait_status(
    cluster: Cluster,
    namespace: str,
    resource: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 2.0,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Poll `kubectl get -o json` until `predicate(status)` holds; returns that status."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = cluster.status(namespace, resource, name)
        if predicate(status):
            return status
        if on_wait is not None:
            on_wait(status)
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}; last status: {json.dumps(status)[:3000]}"
    )


def wait_phase(
    cluster: Cluster,
    namespace: str,
    resource: str,
    name: str,
    phase: str,
    *,
    timeout: float,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Wait until status.phase is `phase` (the object may not exist yet; `Failed` ends the wait)."""

    def check(status: dict[str, Any]) -> bool:
        if status.get("phase") == "Failed" and phase != "Failed":
            raise AssertionError(f"{resource}/{name} failed: {json.dumps(status)[:3000]}")
        return status.get("phase") == phase

    return wait_status(
        cluster,
        namespace,
        resource,
        name,
        check,
        timeout=timeout,
        what=f"{resource}/{name} {phase}",
        on_wait=on_wait,
    )


def wait_scrape(
    cluster: Cluster, namespace: str, isvc: str, since: str, *, requests: int, labelled: int, timeout: float
) -> dict[str, Any]:
    """The InferenceService status once status.metrics come from a scrape after `since` (RFC 3339)
    that counts at least `requests` requests and `labelled` labelled samples, with a drift value."""

    def check(status: dict[str, Any]) -> bool:
        m = status.get("metrics") or {}
        return (
            str(m.get("lastScrape") or "") > since
            and (m.get("requests") or 0) >= requests
            and (m.get("labelledSamples") or 0) >= labelled
            and m.get("drift") is not None
        )

    what = f"a scrape after {since} with {requests} requests and {labelled} labelled samples"
    return wait_status(cluster, namespace, "inferenceservice", isvc, check, timeout=timeout, what=what)


def wait_retraining(cluster: Cluster, namespace: str, isvc: str, *, timeout: float) -> dict[str, Any]:
    """The InferenceService status once status.retraining counts a run."""
    return wait_status(
        cluster,
        namespace,
        "inferenceservice",
        isvc,
        lambda st: (st.get("retraining") or {}).get("count", 0) >= 1,
        timeout=timeout,
        what="a retraining trigger",
    )


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def data_uris(trainingjob: dict[str, Any]) -> list[str]:
    data = trainingjob["spec"]["data"]
    return [data["source"]["uri"], *(s["uri"] for s in data.get("extraSources") or [])]


def versions(cluster: Cluster, namespace: str, model: str) -> list[dict[str, Any]]:
    listed = cluster.get(namespace, "modelversion", selector=f"mlops.dev/model={model}") or {}
    return sorted(listed.get("items") or [], key=lambda mv: int(mv["spec"]["version"]))


# S3 mode: each serving pod's log is closed and shipped every this many seconds (default 60), so
# the retraining run, started a few scrapes after the last label, reads (nearly) all of them.
LOG_WINDOW_SECONDS: Final = 10


def lifecycle(storage: Storage, *, tuning: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """The TrainingJob and InferenceService of manifests/samples/lifecycle, on `storage`.

    On a claim the job reads builtin:iris; on S3 it reads the same frame as a CSV object in the
    bucket (with the bucket's secretRef), so data, models and the prediction log (by default in
    the served artifact's bucket, with its secretRef) all live in S3.
    `tuning=False` drops the 6-trial grid (the test's shortcut; the demo tunes) and names the job
    after its estimator; the InferenceService's retraining copies whatever the job runs.
    """
    tj = sample("lifecycle", "trainingjob.yaml")
    isvc = sample("lifecycle", "inferenceservice.yaml")
    tj["spec"]["output"] = storage.location("models")
    if storage.mode == "s3":
        tj["spec"]["data"]["source"] = storage.put_iris()
        tj["spec"]["data"]["target"] = "target"
        isvc["spec"]["monitoring"]["predictionLog"] = {"windowSeconds": LOG_WINDOW_SECONDS}
    if not tuning:
        tj["metadata"]["name"] = "iris-rf-1"
        tj["spec"].pop("tuning")
        tj["spec"]["estimator"]["params"]["n_estimators"] = 50
        isvc["spec"]["retraining"]["fromTrainingJob"] = "iris-rf-1"
    return tj, isvc


def roll_out_under_traffic(
    cluster: Cluster,
    namespace: str,
    isvc: str,
    version: str,
    traffic: Traffic,
    *,
    timeout: float,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Keep sending `traffic` (unlabelled) until status.modelVersion is `version`.

    A canary is promoted only after it has served minRequests, so a rollout needs clients.
    """
    deadline = time.monotonic() + timeout
    round_ = 0
    while time.monotonic() < deadline:
        status = cluster.status(namespace, "inferenceservice", isvc)
        if (
            status.get("modelVersion") == version
            and (status.get("canary") or {}).get("phase") != "Progressing"
        ):
            return status
        if on_wait is not None:
            on_wait(status)
        if status.get("desiredModelVersion") == version:
            round_ += 1
            send(cluster, namespace, isvc, traffic, pod=f"canary-traffic-{round_}", feedback=False)
            cluster.kubectl("-n", namespace, "delete", "pod", f"canary-traffic-{round_}", "--wait=false")
        else:
            time.sleep(3)
    status = cluster.status(namespace, "inferenceservice", isvc)
    raise AssertionError(
        f"{version} was not rolled out within {timeout:.0f}s; status: {json.dumps(status)[:3000]}"
    )


def wait_served_only_by(cluster: Cluster, namespace: str, isvc: str, version: str, *, timeout: float) -> None:
    """Until every serving pod runs `version` and the old ones are gone.

    status.modelVersion names the version as soon as the stable Deployment is updated; the old
    pod keeps answering its open connections while it drains, so a client that must reach the new
    version waits for RolledOut and for the old pods to disappear.
    """

    def only_new() -> bool:
        rolled = cluster.condition(namespace, "inferenceservice", isvc, "RolledOut").get("status") == "True"
        pods = (cluster.get(namespace, "pod", selector=f"mlops.dev/inference-service={isvc}") or {}).get(
            "items"
        ) or []
        ready = [
            p
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or []
            )
        ]
        return (
            rolled
            and bool(ready)
            and all(p["metadata"]["labels"].get("mlops.dev/model-version") == version for p in pods)
        )

    deadline = time.monotonic() + timeout
    while not only_new():
        if time.monotonic() > deadline:
            raise AssertionError(f"pods of {isvc} other than {version} still run after {timeout:.0f}s")
        time.sleep(2)


def labelled_log_lines(cluster: Cluster, namespace: str, storage: Storage, log_uri: str) -> int:
    """Labelled lines in the prediction log at `log_uri` (its feedback-*.jsonl files or objects)."""
    lines = storage.read_lines(cluster, namespace, log_uri, "feedback-*.jsonl")
    return sum(1 for line in lines if line.strip() and json.loads(line).get("label") is not None)


def forest_job(name: str, storage: Storage, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """TrainingJob `name`: a RandomForest (50 trees, seeded, no tuning) on iris plus `extra` sources,
    gated at accuracy >= 0.9 on its hold-out, its artifact under `storage`'s models/. The shadow
    test's and the demo's challengers (issue #22)."""
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "labels": {"mlops.dev/model": "iris"}},
        "spec": {
            "model": "iris",
            "data": {
                "source": {"uri": "builtin:iris"},
                **({"extraSources": extra} if extra else {}),
                "split": {"testSize": 0.25, "stratify": True, "seed": 7},
            },
            "estimator": {"class": "RandomForestClassifier", "params": {"n_estimators": 50, "random_state": 0}},
            "evaluation": {"primaryMetric": "accuracy", "gates": [{"metric": "accuracy", "op": ">=", "threshold": 0.9}]},
            "output": storage.location("models"),
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "backoffLimit": 1,
            "activeDeadlineSeconds": 600,
        },
    }  # fmt: skip


def wait_shadow_analysis(cluster: Cluster, namespace: str, isvc: str, version: str) -> None:
    """Until `version` is the challenger of a shadow analysis and its pods are ready (issue #22)."""
    wait_status(
        cluster, namespace, "inferenceservice", isvc,
        lambda st: (st.get("canary") or {}).get("modelVersion") == version
        and (st.get("canary") or {}).get("mode") == "shadow",
        timeout=600, what=f"shadow analysis of {version}",
    )  # fmt: skip
    cluster.kubectl("-n", namespace, "rollout", "status", f"deployment/{isvc}-canary", "--timeout=300s")


def shadow_verdict(
    cluster: Cluster,
    namespace: str,
    isvc: str,
    traffic: Traffic,
    *,
    pod: str,
    rounds: int = 4,
    report: Callable[[Sent], None] = print,
) -> tuple[dict[str, Any], list[Sent]]:
    """Send `traffic`, its labels after the answers, in rounds from pods `<pod>-<round>` until
    status.canary leaves Progressing (a shadow verdict, issue #22), at most `rounds` rounds, each
    allowed a minute for the verdict. Returns the InferenceService's status and what each round's
    client saw; a user request that failed fails here."""

    def progressing(status: dict[str, Any]) -> bool:
        return (status.get("canary") or {}).get("phase") == "Progressing"

    seen: list[Sent] = []
    for round_ in range(rounds):
        if not progressing(cluster.status(namespace, "inferenceservice", isvc)):
            break
        sent = send(
            cluster, namespace, isvc, traffic, pod=f"{pod}-{round_}", feedback=True, labels_later=True
        )
        assert not sent.errors, sent.errors  # no user request fails, challenger or not
        report(sent)
        seen.append(sent)
        try:
            wait_status(
                cluster, namespace, "inferenceservice", isvc, lambda st: not progressing(st),
                timeout=60, what="a shadow verdict",
            )  # fmt: skip
        except AssertionError:
            continue
    return cluster.status(namespace, "inferenceservice", isvc), seen
