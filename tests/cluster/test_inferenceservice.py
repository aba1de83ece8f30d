"""InferenceService against the real API server: version resolution from real ModelVersions,
Deployment/Service rollout, rolling update to a new version, the scale subresource, canary
promotion and rollback driven by the serving pods' metrics, deletion, and the real pod
scraper marking a badly answering pod's scrape failed while the others' metrics land."""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from clusterkit import condition, events_for, kubectl, served, status_of, train_version, wait_for
from clusterkit import inferenceservice as isvc
from prometheus_client import CollectorRegistry, Counter, generate_latest

from conftest import OperatorRunner
from mlops_operator.kube import Kube
from mlops_operator.scraper import HttpScraper
from mlops_operator.settings import Settings

HEALTH: dict[str, tuple[int, int]] = {}  # track -> (ok requests, 5xx requests) the fake pods report


def metrics_text(ok: int, errors: int) -> str:
    registry = CollectorRegistry()
    requests = Counter(
        "mlops_requests", "requests", ["model", "version", "protocol", "code"], registry=registry
    )
    requests.labels("iris", "v", "v2", "200").inc(ok)
    if errors:
        requests.labels("iris", "v", "v2", "500").inc(errors)
    return generate_latest(registry).decode()


async def scraper(pod: Mapping[str, Any]) -> str | None:
    track = (pod["metadata"].get("labels") or {}).get("mlops.dev/track", "stable")
    ok, errors = HEALTH.get(track, (0, 0))
    return metrics_text(ok, errors)


@pytest.fixture
def isvc_operator(namespace: str, test_settings: Settings) -> Iterator[OperatorRunner]:
    HEALTH.clear()
    runner = OperatorRunner(namespace, test_settings, scraper=scraper).start()
    yield runner
    runner.stop()


def test_rollout_scale_update_and_delete(
    kube: Kube, kubeconfig: str, namespace: str, isvc_operator: OperatorRunner, artifacts: Path
) -> None:
    v1 = train_version(kube, namespace, "first", artifacts)
    kube.request(
        "POST", f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices", body=isvc("iris")
    )
    status = wait_for(
        lambda: (
            (s := status_of(kube, "InferenceService", namespace, "iris"))
            and condition(s, "Ready").get("status") == "True"
            and s
        ),
        what="Ready",
    )
    assert status["modelVersion"] == v1
    assert status["readyReplicas"] == 2
    assert status["url"].startswith(f"http://iris.{namespace}.svc")
    assert status["grpcAddress"].startswith(f"iris.{namespace}.svc")
    deploy = kube.get("Deployment", namespace, "iris-predictor")
    assert deploy is not None
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    mv = kube.get("ModelVersion", namespace, v1)
    assert mv is not None and mv["spec"]["artifact"]["sha256"] in container["args"]
    # Verified with its array plan compared to scikit-learn: the server runs it from its arrays.
    assert mv["status"]["servingRuntime"] == "arrays"
    assert container["args"][container["args"].index("--runtime") + 1] == "auto"
    assert kube.get("Service", namespace, "iris") is not None
    wait_for(
        lambda: status_of(kube, "ModelVersion", namespace, v1).get("stage") == "Production",
        what="Production stage",
    )

    kubectl(kubeconfig, "-n", namespace, "scale", "inferenceservice/iris", "--replicas=3")
    wait_for(
        lambda: (kube.get("Deployment", namespace, "iris-predictor") or {})["spec"]["replicas"] == 3,
        what="3 replicas",
    )
    wait_for(
        lambda: (
            kubectl(
                kubeconfig,
                "wait",
                "-n",
                namespace,
                "--for=condition=Ready",
                "--timeout=5s",
                "inferenceservice/iris",
                check=False,
            ).returncode
            == 0
        ),
        what="kubectl wait Ready",
    )

    v2 = train_version(kube, namespace, "second", artifacts)
    wait_for(lambda: served(kube, namespace, "iris-predictor") == v2, what="rolling update to v2")
    wait_for(
        lambda: status_of(kube, "InferenceService", namespace, "iris").get("modelVersion") == v2,
        what="status v2",
    )
    assert any(e["reason"] == "RollingUpdate" for e in events_for(kube, namespace, "iris"))
    wait_for(
        lambda: status_of(kube, "ModelVersion", namespace, v1).get("stage") == "Archived", what="v1 Archived"
    )

    kube.request("DELETE", f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices/iris")
    wait_for(
        lambda: kube.get("Deployment", namespace, "iris-predictor") is None,
        timeout=90,
        what="Deployment garbage-collected",
    )


@pytest.mark.parametrize(("errors", "outcome"), [(0, "Promoted"), (40, "RolledBack")])
def test_canary_promotes_or_rolls_back(
    kube: Kube, namespace: str, isvc_operator: OperatorRunner, artifacts: Path, errors: int, outcome: str
) -> None:
    v1 = train_version(kube, namespace, "first", artifacts)
    spec = isvc(
        "iris", canary={"trafficPercent": 50, "durationSeconds": 10, "maxErrorRate": 0.05, "minRequests": 5}
    )
    kube.request("POST", f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices", body=spec)
    wait_for(lambda: served(kube, namespace, "iris-predictor") == v1, what="v1 serving")
    HEALTH["canary"] = (100, errors)
    v2 = train_version(kube, namespace, "second", artifacts)
    wait_for(
        lambda: (
            kube.get("Deployment", namespace, "iris-canary")
            or status_of(kube, "InferenceService", namespace, "iris").get("canary")
        ),
        what="canary started",
    )
    status = wait_for(
        lambda: (
            (s := status_of(kube, "InferenceService", namespace, "iris")).get("canary", {}).get("phase")
            == outcome
            and s
        ),
        timeout=90,
        what=outcome,
    )
    assert status["canary"]["modelVersion"] == v2
    wait_for(lambda: kube.get("Deployment", namespace, "iris-canary") is None, what="canary removed")
    expected = v2 if outcome == "Promoted" else v1
    wait_for(lambda: served(kube, namespace, "iris-predictor") == expected, what=f"stable serves {expected}")
    reason = "CanaryPromoted" if outcome == "Promoted" else "CanaryRolledBack"
    assert any(e["reason"] == reason for e in events_for(kube, namespace, "iris"))
    if outcome == "RolledBack":
        assert (
            condition(status_of(kube, "InferenceService", namespace, "iris"), "CanaryHealthy")["status"]
            == "False"
        )


# track -> (correct, incorrect) labelled rows each scrape of one of its pods adds (issue #22).
LABELLED: dict[str, tuple[int, int]] = {}
SCRAPED: dict[str, tuple[int, int, int]] = {}  # pod -> (scrapes, correct, incorrect) so far


async def labelling_scraper(pod: Mapping[str, Any]) -> str | None:
    """Healthy pods whose feedback counters grow at each scrape by their track's LABELLED rows,
    under the pod's own model version (what a serving pod exports)."""
    labels = pod["metadata"].get("labels") or {}
    track, version = labels.get("mlops.dev/track", "stable"), labels.get("mlops.dev/model-version", "")
    right, wrong = LABELLED.get(track, (0, 0))
    n, correct, incorrect = SCRAPED.get(pod["metadata"]["name"], (0, 0, 0))
    SCRAPED[pod["metadata"]["name"]] = n, correct, incorrect = n + 1, correct + right, incorrect + wrong
    registry = CollectorRegistry()
    rows = Counter("mlops_feedback_rows", "labelled rows", ["model", "version", "outcome"], registry=registry)
    rows.labels("iris", version, "correct").inc(correct)
    rows.labels("iris", version, "incorrect").inc(incorrect)
    return metrics_text(100 * n, 0) + generate_latest(registry).decode()


def test_split_canary_with_worse_labelled_accuracy_rolls_back(
    kube: Kube, namespace: str, test_settings: Settings, artifacts: Path
) -> None:
    """The split canary compares each track's own labelled rows since it started (issue #22):
    a canary right half the time against a stable track always right since then (wrong every
    time before: those rows must not count) is rolled back long before its duration, without
    a single error, and stable keeps serving."""
    LABELLED.clear()
    SCRAPED.clear()
    LABELLED.update(stable=(0, 10), canary=(5, 5))
    runner = OperatorRunner(namespace, test_settings, scraper=labelling_scraper).start()
    try:
        v1 = train_version(kube, namespace, "first", artifacts)
        canary = {"trafficPercent": 50, "durationSeconds": 3600, "minRequests": 5, "minLabelled": 10}
        body = isvc("iris", canary=canary, monitoring={"intervalSeconds": 5})
        kube.request("POST", f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices", body=body)
        wait_for(lambda: served(kube, namespace, "iris-predictor") == v1, what="v1 serving")
        wait_for(lambda: any(incorrect for _, _, incorrect in SCRAPED.values()), what="stable rows labelled")
        LABELLED["stable"] = (10, 0)
        v2 = train_version(kube, namespace, "second", artifacts)
        status = wait_for(
            lambda: (
                (s := status_of(kube, "InferenceService", namespace, "iris")).get("canary", {}).get("phase")
                == "RolledBack"
                and s
            ),
            timeout=120,
            what="RolledBack",
        )
        found = status["canary"]
        assert (found["modelVersion"], found["mode"], found["verdict"]) == (v2, "split", "Worse"), found
        assert (found["championScore"], found["challengerScore"]) == (1.0, 0.5)
        assert found["canaryLabelled"] >= 10 and found["stableLabelled"] >= 10
        assert found["pValue"] < 0.05 and found["effect"] == -0.5
        assert found["reason"].startswith("Labelled quality worse"), found["reason"]
        wait_for(lambda: served(kube, namespace, "iris-predictor") == v1, what="stable serves v1")
        rolled = [e for e in events_for(kube, namespace, "iris") if e["reason"] == "CanaryRolledBack"]
        assert rolled and "Labelled quality worse" in rolled[0]["message"]
        assert condition(status, "CanaryHealthy")["status"] == "False"
        assert condition(status, "ShadowVerdict") == {}
    finally:
        runner.stop()


def test_autoscaling_creates_an_hpa_the_operator_does_not_fight(
    kube: Kube, namespace: str, isvc_operator: OperatorRunner, artifacts: Path
) -> None:
    train_version(kube, namespace, "first", artifacts)
    body = isvc(
        "iris", replicas=1, autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCpuUtilization": 70}
    )
    kube.request("POST", f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices", body=body)
    hpa = wait_for(
        lambda: kube.get("HorizontalPodAutoscaler", namespace, "iris-predictor"),
        what="HorizontalPodAutoscaler",
    )
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "iris-predictor",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    target = hpa["spec"]["metrics"][0]["resource"]
    assert target["name"] == "cpu" and target["target"]["averageUtilization"] == 70
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "InferenceService"

    # The cluster's HPA controller lifts the Deployment to minReplicas; the operator leaves that
    # alone, even when it reconciles a later spec change.
    wait_for(
        lambda: (
            (kube.get("Deployment", namespace, "iris-predictor") or {}).get("spec", {}).get("replicas") == 2
        ),
        timeout=90,
        what="the HPA controller scaling to minReplicas",
    )
    patched = kube.request(
        "PATCH",
        f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices/iris",
        body={"spec": {"batching": {"maxBatchSize": 32}}},
        content_type="application/merge-patch+json",
    )
    generation = patched["metadata"]["generation"]
    wait_for(
        lambda: (
            status_of(kube, "InferenceService", namespace, "iris").get("observedGeneration") == generation
        ),
        what="the spec change reconciled",
    )
    deploy = kube.get("Deployment", namespace, "iris-predictor")
    assert deploy is not None and deploy["spec"]["replicas"] == 2

    # Autoscaling off: the HPA goes and spec.replicas owns the Deployment again.
    kube.request(
        "PATCH",
        f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices/iris",
        body={"spec": {"autoscaling": None, "replicas": 3}},
        content_type="application/merge-patch+json",
    )
    wait_for(
        lambda: kube.get("HorizontalPodAutoscaler", namespace, "iris-predictor") is None, what="HPA deleted"
    )
    wait_for(
        lambda: (
            (kube.get("Deployment", namespace, "iris-predictor") or {}).get("spec", {}).get("replicas") == 3
        ),
        what="3 replicas from spec.replicas",
    )


class _Metrics(socketserver.BaseRequestHandler):
    """A pod that answers /metrics well: 100 requests served."""

    def handle(self) -> None:
        self.request.recv(65536)
        body = metrics_text(100, 0).encode()
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class _Malformed(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(65536)
        self.request.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nmlops\r\nnot-hex\r\n"
        )


class _Huge(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(65536)
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n")
        with contextlib.suppress(OSError):  # the scraper hangs up at its cap
            for _ in range(64 * 1024):
                self.request.sendall(b"x" * 1024)


class _Silent(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while self.request.recv(65536):  # until the scraper gives up and closes
                pass


def test_a_pod_answering_badly_fails_alone(
    kube: Kube, namespace: str, test_settings: Settings, artifacts: Path
) -> None:
    """Issue #21: of five kwok pods, each mapped to a loopback server, three answer a malformed
    chunked body, a 64 MiB body or nothing; the real scraper marks those scrapes failed and the
    two good pods' requests still land in status.metrics."""
    handlers = [_Metrics, _Malformed, _Metrics, _Huge, _Silent]
    servers = [socketserver.ThreadingTCPServer(("127.0.0.1", 0), h) for h in handlers]
    for s in servers:
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, daemon=True).start()
    ports = [s.server_address[1] for s in servers]
    assigned: dict[str, int] = {}

    def address(pod: Mapping[str, Any]) -> tuple[str, int]:
        name = pod["metadata"]["name"]
        return "127.0.0.1", assigned.setdefault(name, ports[len(assigned) % len(ports)])

    failures: list[str] = []
    scraper = HttpScraper(address=address, read_timeout=1.0, total_timeout=2.0, on_failure=failures.append)
    runner = OperatorRunner(namespace, test_settings, scraper=scraper).start()
    try:
        train_version(kube, namespace, "first", artifacts)
        body = isvc("iris", replicas=5, monitoring={"intervalSeconds": 5})
        kube.request("POST", f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices", body=body)
        wait_for(
            lambda: len(assigned) == 5 and {"malformed", "too_large", "timeout"} <= set(failures),
            timeout=90,
            what="every pod scraped, each on its own server, the bad ones failing",
        )
        # The two good pods' requests land (a new pod counts in full, once): 100 each.
        wait_for(
            lambda: (
                (m := status_of(kube, "InferenceService", namespace, "iris").get("metrics") or {})
                and m.get("requests") == 200
                and m
            ),
            timeout=60,
            what="status.metrics.requests from the good pods",
        )
        assert set(failures) <= {"malformed", "too_large", "timeout"}  # nothing else failed
    finally:
        runner.stop()
        for s in servers:
            s.shutdown()
            s.server_close()
