"""The lifecycle on real pods, as a user drives it with kubectl: a TrainingJob tunes and trains
in the cluster, its ModelVersion is verified by a real verification pod, an InferenceService
serves it at its status.url (the Service's DNS name), and a version change rolls out under load without a failed request.

The tests of this module run in order and build on each other (one namespace, one volume)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from e2ekit import Cluster, Storage, sample

from waiting import wait_for

pytestmark = pytest.mark.e2e

# Two iris rows per class with their labels (setosa 0, versicolor 1, virginica 2).
ROWS = [[5.1, 3.5, 1.4, 0.2], [4.9, 3.0, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [5.7, 2.8, 4.1, 1.3]]
ROWS += [[6.3, 3.3, 6.0, 2.5], [7.7, 3.0, 6.1, 2.3]]
LABELS = [0, 0, 1, 1, 2, 2]


def trainingjob(name: str, storage: Storage, **spec: Any) -> dict[str, Any]:
    """manifests/samples/trainingjob.yaml named `name`, writing to `storage`."""
    doc = sample("trainingjob.yaml")
    doc["metadata"]["name"] = name
    doc["spec"]["output"] = storage.location("models")
    doc["spec"].update(spec)
    doc["spec"] = {k: v for k, v in doc["spec"].items() if v is not None}
    return doc


def inferenceservice() -> dict[str, Any]:
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "iris"},
        "spec": {
            "model": "iris",
            "policy": {"select": "latest", "promotion": "auto"},
            "replicas": 2,
            "monitoring": {"intervalSeconds": 10},
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        },
    }


def test_trainingjob_tunes_and_trains_in_pods(cluster: Cluster, namespace: str, storage: Storage) -> None:
    tj = trainingjob("iris-rf", storage)
    assert tj["spec"]["tuning"]["maxTrials"] == 6
    cluster.apply(namespace, tj)
    cluster.wait(namespace, "trainingjob/iris-rf", "jsonpath={.status.phase}=Succeeded", timeout=900)

    status = cluster.status(namespace, "trainingjob", "iris-rf")
    assert status["progress"] == "6/6"
    assert set(status["bestParams"]) == {"n_estimators", "max_depth"}
    assert status["metrics"]["accuracy"] >= 0.9
    assert status["modelVersion"] == "iris-v1"
    tuning = cluster.get(namespace, "job", "iris-rf-tune")
    assert tuning["status"]["succeeded"] == 6, "six trial pods ran to completion"
    assert cluster.get(namespace, "job", "iris-rf-train")["status"]["succeeded"] == 1


def test_trials_spread_over_the_nodes(cluster: Cluster, namespace: str, storage: Storage) -> None:
    """With two nodes (kind), the trials ran on both, each reading the data the prepare pod wrote
    once to the run's storage (issue #23): in S3 mode no volume ties them to one node."""
    if len(schedulable_nodes(cluster)) < 2:
        pytest.skip("one schedulable node (the local cluster's real node): spreading needs two, as on kind")
    status = cluster.status(namespace, "trainingjob", "iris-rf")
    ran = {t["pod"] for t in status["trials"]}
    pods = cluster.get(namespace, "pods", selector="mlops.dev/training-job=iris-rf,mlops.dev/step=tune")[
        "items"
    ]
    nodes = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods if p["metadata"]["name"] in ran}
    assert len(nodes) == 6, f"the six recorded trials' pods: {sorted(ran)}; found {sorted(nodes)}"
    assert len(set(nodes.values())) >= 2, f"every trial on one node: {nodes}"
    if storage.s3 is not None:
        assert status["preparedUri"].startswith("s3://"), status["preparedUri"]


def test_modelversion_is_verified_by_a_real_pod(cluster: Cluster, namespace: str) -> None:
    cluster.wait(namespace, "modelversion/iris-v1", "condition=ArtifactVerified", timeout=300)
    mv = cluster.get(namespace, "modelversion", "iris-v1")
    assert mv["status"]["phase"] == "Verified"
    assert cluster.condition(namespace, "modelversion", "iris-v1", "GatesPassed")["status"] == "True"
    assert len(mv["spec"]["artifact"]["sha256"]) == 64
    assert mv["spec"]["source"]["trainingJob"] == "iris-rf"
    verify = cluster.get(namespace, "job", "iris-v1-verify")
    assert verify["status"]["succeeded"] == 1
    listed = cluster.kubectl("-n", namespace, "get", "mv", "-l", "mlops.dev/model=iris")
    assert "iris-v1" in listed and "Verified" in listed


def predict_from_a_pod(cluster: Cluster, namespace: str, pod: str, url: str) -> dict[str, Any]:
    """POST the rows to status.url `url` over V2 (<url>/infer) and V1 (/v1/models/<model>:predict
    on the same host), as a client in the cluster would: by the Service's DNS name."""
    out = cluster.run_python(
        namespace,
        pod,
        f"""
        import json, urllib.parse, urllib.request
        url = {url!r}
        host = urllib.parse.urlsplit(url)._replace(path="").geturl()
        rows = {ROWS!r}
        v2 = {{"inputs": [{{"name": "input-0", "shape": [len(rows), 4], "datatype": "FP64",
                            "data": [x for row in rows for x in row]}}]}}
        v1 = {{"instances": rows}}
        def post(to, body):
            req = urllib.request.Request(to, json.dumps(body).encode(), {{"Content-Type": "application/json"}})
            return json.loads(urllib.request.urlopen(req, timeout=10).read())
        print(json.dumps({{"v2": post(url + "/infer", v2), "v1": post(host + "/v1/models/iris:predict", v1)}}))
        """,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def test_inferenceservice_serves_predictions_through_its_service(cluster: Cluster, namespace: str) -> None:
    cluster.apply(namespace, inferenceservice())
    cluster.wait(namespace, "inferenceservice/iris", "condition=Ready", timeout=300)
    status = cluster.status(namespace, "inferenceservice", "iris")
    assert status["modelVersion"] == "iris-v1"
    assert status["readyReplicas"] == 2
    assert status["url"] == f"http://iris.{namespace}.svc.cluster.local/v2/models/iris"

    answer = predict_from_a_pod(cluster, namespace, "predict-v1", status["url"])
    outputs = {o["name"]: o for o in answer["v2"]["outputs"]}
    assert answer["v2"]["model_version"] == "iris-v1"
    assert outputs["predict"]["data"] == LABELS
    assert outputs["predict_proba"]["shape"] == [len(ROWS), 3]
    assert answer["v1"]["predictions"] == LABELS
    assert cluster.status(namespace, "modelversion", "iris-v1").get("stage") == "Production"


def schedulable_nodes(cluster: Cluster) -> list[str]:
    """Ready nodes without a NoSchedule taint: where the serving pods may go."""
    names = []
    for node in cluster.get("default", "nodes")["items"]:
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
        tainted = any(t.get("effect") == "NoSchedule" for t in node["spec"].get("taints") or [])
        if ready and not tainted:
            names.append(node["metadata"]["name"])
    return names


SPREAD_CLIENT = """
import json, urllib.request
pods, url, rows = {pods!r}, {url!r}, {rows!r}
def served(ip):
    # The pod's own count of answered inference requests (its /metrics, not the Service's).
    text = urllib.request.urlopen(f"http://{{ip}}:8082/metrics", timeout=10).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("mlops_requests_total{{"))
before = {{ip: served(ip) for ip in pods}}
body = json.dumps({{"inputs": [{{"name": "input-0", "shape": [len(rows), 4], "datatype": "FP64",
                                "data": [x for row in rows for x in row]}}]}}).encode()
for _ in range({n}):
    # A new connection each time: the Service balances connections, not requests.
    req = urllib.request.Request(url + "/infer", body, {{"Content-Type": "application/json"}})
    urllib.request.urlopen(req, timeout=10).read()
print(json.dumps({{ip: served(ip) - before[ip] for ip in pods}}))
"""


def test_replicas_on_two_nodes_both_answer_through_the_service(cluster: Cluster, namespace: str) -> None:
    """The two replicas run on two different nodes (the Deployment's spread over hostnames), and
    requests to status.url reach both: each pod's own request counter rises."""
    if len(schedulable_nodes(cluster)) < 2:
        pytest.skip("one schedulable node (the local cluster's real node): spreading needs two, as on kind")
    pods = cluster.get(namespace, "pods", selector="mlops.dev/inference-service=iris")["items"]
    pods = [p for p in pods if p["metadata"].get("deletionTimestamp") is None]
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    nodes = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
    assert len(set(nodes.values())) == 2, f"both replicas on one node: {nodes}"
    url = cluster.status(namespace, "inferenceservice", "iris")["url"]
    ips = [p["status"]["podIP"] for p in pods]
    # 40 connections: the chance that one pod gets none of them is 2 x 2^-40.
    code = SPREAD_CLIENT.format(pods=ips, url=url, rows=ROWS, n=40)
    counts = json.loads(cluster.run_python(namespace, "predict-spread", code).strip().splitlines()[-1])
    assert sum(counts.values()) >= 40, counts
    assert all(c > 0 for c in counts.values()), f"a replica answered nothing: {counts} (nodes {nodes})"


GRPC_CLIENT = """
import json, grpc, numpy as np
from mlops_server.proto import inference_pb2 as pb

rows = np.asarray({rows!r}, dtype="<f8")
channel = grpc.insecure_channel({address!r})
# As PATIENT_CONNECT for HTTP: gRPC reconnects by itself until the policy admits this new pod.
grpc.channel_ready_future(channel).result(timeout=30)
def call(method, request, response):
    return channel.unary_unary(
        "/inference.GRPCInferenceService/" + method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response.FromString,
    )(request, timeout=10)
ready = call("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
meta = call("ModelMetadata", pb.ModelMetadataRequest(name="iris"), pb.ModelMetadataResponse)
answer = call(
    "ModelInfer",
    pb.ModelInferRequest(
        model_name="iris",
        id="from-a-pod",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input-0", datatype="FP64", shape=rows.shape)],
        raw_input_contents=[rows.tobytes()],
    ),
    pb.ModelInferResponse,
)
try:
    call("ModelInfer", pb.ModelInferRequest(model_name="nope"), pb.ModelInferResponse)
    missing = "answered"
except grpc.RpcError as e:
    missing = e.code().name
print(json.dumps({{
    "ready": ready,
    "versions": list(meta.versions),
    "id": answer.id,
    "version": answer.model_version,
    "labels": np.frombuffer(answer.raw_output_contents[0], "<i8").tolist(),
    "missing": missing,
}}))
"""


def test_inferenceservice_answers_grpc_through_its_service(cluster: Cluster, namespace: str) -> None:
    """A client pod speaks the V2 protocol over gRPC to status.grpcAddress (the Service's port grpc)."""
    status = cluster.status(namespace, "inferenceservice", "iris")
    address = status["grpcAddress"]
    assert address == f"iris.{namespace}.svc.cluster.local:8081"
    service = cluster.get(namespace, "service", "iris")
    assert {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"} in (
        service["spec"]["ports"]
    )
    out = cluster.run_python(namespace, "predict-grpc", GRPC_CLIENT.format(rows=ROWS, address=address))
    answer = json.loads(out.strip().splitlines()[-1])
    assert answer == {
        "ready": True,
        "versions": ["iris-v1"],
        "id": "from-a-pod",
        "version": "iris-v1",
        "labels": LABELS,
        "missing": "NOT_FOUND",
    }


# kube-router rejects what a policy does not allow with a TCP reset (tests/e2e/test_node.py).
DROPPED = ("ConnectionRefusedError", "TimeoutError")

# One POST to each port of the InferenceService's Service: prints {port: HTTP status or the error}.
REACH = """
import http.client, json
host, out = {host!r}, {{}}
for port, path, body in [(80, "/v2/models/iris/infer", {{"inputs": [{{"name": "input-0", "shape": [1, 4],
        "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}}]}}),
        (8082, "/v2/models/iris/feedback", {{"id": "from-elsewhere", "labels": [2]}})]:
    try:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("POST", path, json.dumps(body), {{"Content-Type": "application/json"}})
        out[str(port)] = conn.getresponse().status
    except OSError as exc:
        out[str(port)] = type(exc).__name__
print(json.dumps(out))
"""


@pytest.mark.skipif(
    Path(os.environ.get("MLOPS_E2E_OVERLAY", "overlays/local")).name != "local",
    reason="the local cluster's real node enforces NetworkPolicies (kube-router)",
)
def test_another_namespace_cannot_post_feedback(cluster: Cluster, namespace: str) -> None:
    """Issue #19: the InferenceService's NetworkPolicy (made by the operator, enforced by
    kube-router on the real node) refuses another namespace's pods on both ports by default, and
    once spec.access.predictionFrom names that namespace it may predict but still not post
    feedback; the own namespace reaches both (a 404 for the unknown request id is the server's
    answer, so the packet got through)."""
    assert cluster.get(namespace, "networkpolicy", "iris")["spec"]["podSelector"] == {
        "matchLabels": {"mlops.dev/inference-service": "iris"}
    }
    host = f"iris.{namespace}.svc.cluster.local"
    other = f"{namespace}-elsewhere"
    cluster.kubectl("create", "namespace", other)

    def reach(ns: str, pod: str) -> dict[str, Any]:
        cluster.kubectl("-n", ns, "delete", "pod", pod, "--ignore-not-found", "--wait=true")
        result: dict[str, Any] = json.loads(
            cluster.run_python(ns, pod, REACH.format(host=host)).splitlines()[-1]
        )
        return result

    try:
        own = reach(namespace, "reach-own")
        # 202: another replica's id, kept for retraining; 404 without a prediction log.
        assert own["80"] == 200 and own["8082"] in (202, 404), own
        refused = reach(other, "reach-other")
        assert refused["80"] in DROPPED and refused["8082"] in DROPPED, refused
        cluster.kubectl(
            "-n", namespace, "patch", "inferenceservice", "iris", "--type=merge",
            "-p", json.dumps({"spec": {"access": {"predictionFrom": [namespace, other]}}}),
        )  # fmt: skip
        opened = wait_for(
            lambda: (r := reach(other, "reach-other"))["80"] == 200 and r,
            timeout=90,
            interval=2,
            what="prediction opened to the other namespace",
        )
        assert opened["8082"] in DROPPED, opened
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


# Each request opens a connection to status.url's host, so each one resolves the Service's name.
LOAD = """
import http.client, json, threading, time, urllib.parse
url, deadline = {url!r}, time.monotonic() + {max_seconds}
where = urllib.parse.urlsplit(url)
body = json.dumps({{"inputs": [{{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                                "data": [6.3, 3.3, 6.0, 2.5]}}]}})
lock = threading.Lock()
stats = {{"ok": 0, "failed": 0, "errors": [], "versions": {{}}, "last_old": time.monotonic()}}
first_new = None

def worker():
    global first_new
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(where.hostname, where.port or 80, timeout=10)
            conn.request("POST", where.path + "/infer", body, {{"Content-Type": "application/json"}})
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            with lock:
                if resp.status != 200:
                    stats["failed"] += 1
                    stats["errors"].append(f"HTTP {{resp.status}}: {{data[:200]!r}}")
                    continue
                version = json.loads(data)["model_version"]
                stats["ok"] += 1
                stats["versions"][version] = stats["versions"].get(version, 0) + 1
                if version == "{new}":
                    first_new = first_new or time.monotonic()
                else:
                    stats["last_old"] = time.monotonic()
                # Done once only the new version has answered for {settle} s.
                if first_new and time.monotonic() - stats["last_old"] > {settle}:
                    return
        except Exception as exc:
            with lock:
                stats["failed"] += 1
                stats["errors"].append(repr(exc))
        time.sleep(0.01)

threads = [threading.Thread(target=worker) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
stats.pop("last_old")
stats["errors"] = stats["errors"][:20]
print(json.dumps(stats))
"""


def test_version_change_rolls_out_under_load_without_a_failed_request(
    cluster: Cluster, namespace: str, storage: Storage
) -> None:
    # A second version, trained without tuning; then the service is pinned to it, as a GitOps
    # repository would do by changing spec.version.
    cluster.apply(
        namespace,
        trainingjob(
            "iris-lr",
            storage,
            estimator={"class": "LogisticRegression", "params": {"max_iter": 500}},
            tuning=None,
        ),
    )
    cluster.wait(namespace, "trainingjob/iris-lr", "jsonpath={.status.phase}=Succeeded", timeout=600)
    cluster.wait(namespace, "modelversion/iris-v2", "jsonpath={.status.phase}=Verified", timeout=300)

    url = cluster.status(namespace, "inferenceservice", "iris")["url"]
    load = LOAD.format(url=url, max_seconds=420, new="iris-v2", settle=15)
    cluster.kubectl("-n", namespace, "delete", "pod", "load", "--ignore-not-found")
    # Start the load, then change the version while it runs.
    result: dict[str, Any] = {}

    def run_load() -> None:
        result["out"] = cluster.run_python(namespace, "load", load, timeout=600)

    runner = threading.Thread(target=run_load)
    runner.start()
    wait_for(
        lambda: (cluster.get(namespace, "pod", "load") or {}).get("status", {}).get("phase") == "Running",
        timeout=120,
        what="the load pod Running",
    )
    cluster.kubectl(
        "-n",
        namespace,
        "patch",
        "inferenceservice",
        "iris",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"policy": None, "version": 2}}),
    )
    cluster.wait(namespace, "inferenceservice/iris", "jsonpath={.status.modelVersion}=iris-v2", timeout=300)
    cluster.kubectl("-n", namespace, "rollout", "status", "deployment/iris-predictor", "--timeout=300s")
    runner.join(timeout=620)
    assert "out" in result, "the load pod did not finish"
    stats = json.loads(result["out"].strip().splitlines()[-1])

    assert stats["failed"] == 0, f"requests failed during the rollout: {stats['errors']}"
    assert stats["versions"].get("iris-v1", 0) > 0 and stats["versions"].get("iris-v2", 0) > 0, stats
    assert cluster.condition(namespace, "inferenceservice", "iris", "Ready")["status"] == "True"
    events = cluster.kubectl("-n", namespace, "get", "events", "--field-selector", "involvedObject.name=iris")
    assert "iris-v2" in events
