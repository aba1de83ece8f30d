"""spec.monitoring.prometheusUrl against the real API server and a real Prometheus (issue #21).

The kwok pods serve nothing, so two loopback servers stand in for the stable and the canary pods,
and a real Prometheus (tests/promkit.py) scrapes them with the labels the shipped PodMonitor puts
on serving pods' series (namespace, pod, inference_service, track). The in-process operator gets
no pod scraper: with prometheusUrl set it must read everything from Prometheus. First the URL
points where nothing listens: MetricsAvailable=False with a Warning Event, and a canary past its
duration is held (neither promoted nor rolled back). Then the URL is fixed: the canary is
promoted on the requests Prometheus saw, and status.metrics counts both pods. The quality
comparisons of issue #22 come from the same Prometheus: the split canary's labelled rows per
track since it started, and shadow mode's paired outcomes.
"""

from __future__ import annotations

import dataclasses
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterkit import condition, events_for, status_of, train_version, wait_for
from clusterkit import inferenceservice as isvc
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from conftest import OperatorRunner
from mlops_operator.kube import Kube
from mlops_operator.settings import Settings
from promkit import Prometheus, Target, ensure_binary
from s3kit import free_port

# track -> (ModelVersion it serves, requests answered 200) that the stand-in pod reports
SERVED: dict[str, tuple[str, int]] = {}
# track -> its pod's labelled rows by outcome so far (mlops_feedback_rows_total, issue #22)
FEEDBACK: dict[str, dict[str, int]] = {}
# the stable pod's shadow pairs for the challenger, by outcome (mlops_shadow_pairs_total)
SHADOW: dict[str, dict[str, int]] = {}


def exposition(track: str) -> bytes:
    registry = CollectorRegistry()
    version, ok = SERVED.get(track, ("none", 0))
    Gauge("mlops_model_info", "served", ["model", "version", "sha256"], registry=registry).labels(
        "iris", version, "ab"
    ).set(1)
    counter = Counter(
        "mlops_requests", "requests", ["model", "version", "protocol", "code"], registry=registry
    )
    counter.labels("iris", version, "v2", "200").inc(ok)
    if track in FEEDBACK:
        rows = Counter(
            "mlops_feedback_rows", "labelled rows", ["model", "version", "outcome"], registry=registry
        )
        for outcome, n in FEEDBACK[track].items():
            rows.labels("iris", version, outcome).inc(n)
    if track == "stable" and SHADOW:
        pairs = Counter(
            "mlops_shadow_pairs", "pairs", ["model", "version", "challenger", "outcome"], registry=registry
        )
        for challenger, outcomes in SHADOW.items():
            for outcome, n in outcomes.items():
                pairs.labels("iris", version, challenger, outcome).inc(n)
    return generate_latest(registry)


def pod_server(track: str) -> socketserver.ThreadingTCPServer:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            body = exposition(track)  # Prometheus 3 refuses a scrape without a Content-Type
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % len(body)
                + body
            )

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def prom(namespace: str, tmp_path: Path) -> Iterator[Prometheus]:
    SERVED.clear()
    FEEDBACK.clear()
    SHADOW.clear()
    servers = {track: pod_server(track) for track in ("stable", "canary")}
    targets = [
        Target(
            s.server_address[1],
            {"namespace": namespace, "pod": f"iris-{track}-0", "inference_service": "iris", "track": track},
        )
        for track, s in servers.items()
    ]
    server = Prometheus.start(ensure_binary(), tmp_path, targets)
    try:
        yield server
    finally:
        server.stop()
        for s in servers.values():
            s.shutdown()
            s.server_close()


@pytest.fixture
def prometheus_operator(namespace: str, test_settings: Settings) -> Iterator[OperatorRunner]:
    """The operator in-process with no pod scraper: with prometheusUrl set it must read
    everything from Prometheus (the PromQL windows at least 5 s, for the tests' pace)."""
    settings = dataclasses.replace(test_settings, prometheus_min_window_seconds=5)
    runner = OperatorRunner(namespace, settings).start()
    try:
        yield runner
    finally:
        runner.stop()


def test_prometheus_down_holds_the_canary_then_its_answers_decide(
    kube: Kube, namespace: str, prometheus_operator: OperatorRunner, artifacts: Path, prom: Prometheus
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    v1 = train_version(kube, namespace, "first", artifacts)
    SERVED["stable"] = (v1, 100)
    canary = {"trafficPercent": 50, "durationSeconds": 10, "maxErrorRate": 0.05, "minRequests": 5}
    body = isvc("iris", canary=canary, monitoring={"prometheusUrl": down, "intervalSeconds": 5})
    kube.request("POST", f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices", body=body)

    def available() -> dict[str, str]:
        return condition(status_of(kube, "InferenceService", namespace, "iris"), "MetricsAvailable")

    cond = wait_for(
        lambda: available().get("reason") == "PrometheusUnreachable" and available(), what="unreachable"
    )
    assert cond["status"] == "False" and down in cond["message"]
    warnings = [e for e in events_for(kube, namespace, "iris") if e["reason"] == "PrometheusUnreachable"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"

    v2, started = start_canary(kube, namespace, artifacts)
    # Held: a canary past its duration with Prometheus down is neither promoted nor rolled back.
    wait_for(lambda: "metrics" not in status_of(kube, "InferenceService", namespace, "iris") and _older(started, 25), timeout=60, what="25 s of analysis")  # fmt: skip
    status = status_of(kube, "InferenceService", namespace, "iris")
    assert status["canary"]["phase"] == "Progressing" and status["modelVersion"] == v1, status
    assert "metrics" not in status
    assert (
        len([e for e in events_for(kube, namespace, "iris") if e["reason"] == "PrometheusUnreachable"]) == 1
    )

    kube.request(
        "PATCH",
        f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices/iris",
        body={"spec": {"monitoring": {"prometheusUrl": prom.url}}},
        content_type="application/merge-patch+json",
    )
    status = wait_for(
        lambda: (s := status_of(kube, "InferenceService", namespace, "iris")).get("modelVersion") == v2 and s,
        timeout=60,
        what="canary promoted from Prometheus' answers",
    )
    assert status["canary"]["phase"] == "Promoted" and status["canary"]["requests"] == 50, status["canary"]
    assert condition(status, "MetricsAvailable")["status"] == "True"
    assert any(e["reason"] == "MetricsAvailable" and e["type"] == "Normal" for e in events_for(kube, namespace, "iris"))  # fmt: skip
    metrics = wait_for(
        lambda: (
            (m := status_of(kube, "InferenceService", namespace, "iris").get("metrics") or {}).get("requests")
            == 150
            and m
        ),
        what="status.metrics from Prometheus: both pods' requests",
    )
    assert metrics["errorRate"] == 0.0


def start_canary(kube: Kube, namespace: str, artifacts: Path) -> tuple[str, str]:
    """A second version, which the canary stand-in pod serves: (its name, the analysis' start)."""
    version = train_version(kube, namespace, "second", artifacts)
    SERVED["canary"] = (version, 50)
    started = wait_for(
        lambda: (status_of(kube, "InferenceService", namespace, "iris").get("canary") or {}).get("startedAt"),
        what="canary started",
    )
    return version, str(started)


def canary_outcome(kube: Kube, namespace: str, phase: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (c := status_of(kube, "InferenceService", namespace, "iris").get("canary") or {}).get("phase")
            == phase
            and c
        ),
        timeout=90,
        what=f"canary {phase}",
    )


def test_split_canary_labels_from_prometheus_count_the_stable_rows_since_it_started(
    kube: Kube, namespace: str, prometheus_operator: OperatorRunner, artifacts: Path, prom: Prometheus
) -> None:
    """The split canary's labelled comparison (issue #22) read from a real Prometheus: the stable
    pod's 40 wrong rows from before the canary are subtracted at the canary's start (its series'
    value `offset` the window), so the stable track counts exactly its 30 rows since, all right,
    against the canary's 15 of 30: QualityWorse, rolled back long before the hour's duration."""
    v1 = train_version(kube, namespace, "first", artifacts)
    SERVED["stable"] = (v1, 100)
    FEEDBACK["stable"] = {"correct": 0, "incorrect": 40}
    canary = {"trafficPercent": 50, "durationSeconds": 3600, "minRequests": 5, "minLabelled": 20}
    body = isvc("iris", canary=canary, monitoring={"prometheusUrl": prom.url, "intervalSeconds": 5})
    kube.request("POST", f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices", body=body)
    query = f'mlops_feedback_rows_total{{namespace="{namespace}",outcome="incorrect"}}'
    wait_for(lambda: prom.query(query), what="Prometheus holds the stable pod's 40 wrong rows")

    v2, started = start_canary(kube, namespace, artifacts)
    # Past the start by more than the window's rounding, then the rows since it started.
    wait_for(lambda: _older(started, 2), what="2 s into the analysis")
    FEEDBACK["stable"] = {"correct": 30, "incorrect": 40}
    FEEDBACK["canary"] = {"correct": 15, "incorrect": 15}

    found = canary_outcome(kube, namespace, "RolledBack")
    assert (found["modelVersion"], found["mode"], found["verdict"]) == (v2, "split", "Worse"), found
    assert (found["stableLabelled"], found["canaryLabelled"]) == (30, 30), found
    assert (found["championScore"], found["challengerScore"]) == (1.0, 0.5), found
    assert found["pValue"] < 0.05 and found["reason"].startswith("Labelled quality worse"), found
    status = status_of(kube, "InferenceService", namespace, "iris")
    assert status["modelVersion"] == v1 and condition(status, "MetricsAvailable")["status"] == "True"
    assert any(e["reason"] == "CanaryRolledBack" for e in events_for(kube, namespace, "iris"))


@pytest.mark.parametrize(
    ("outcomes", "phase", "verdict"),
    [
        ({"both": 20, "champion_only": 25, "challenger_only": 2, "neither": 3}, "RolledBack", "Worse"),
        ({"both": 20, "champion_only": 2, "challenger_only": 25, "neither": 3}, "Promoted", "Better"),
    ],
    ids=["worse", "better"],
)
def test_shadow_verdict_from_prometheus(
    kube: Kube,
    namespace: str,
    prometheus_operator: OperatorRunner,
    artifacts: Path,
    prom: Prometheus,
    outcomes: dict[str, int],
    phase: str,
    verdict: str,
) -> None:
    """Shadow mode (issue #22) read from a real Prometheus: the champion pod's paired outcomes
    for the challenger (mlops_shadow_pairs_total, summed by outcome over the champion's pods)
    give McNemar's verdict on the 50 pairs, which rolls back or promotes."""
    v1 = train_version(kube, namespace, "first", artifacts)
    SERVED["stable"] = (v1, 100)
    canary = {"mode": "shadow", "shadow": {"minPairs": 50}, "minRequests": 5}
    body = isvc("iris", canary=canary, monitoring={"prometheusUrl": prom.url, "intervalSeconds": 5})
    kube.request("POST", f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices", body=body)
    v2, _ = start_canary(kube, namespace, artifacts)
    SHADOW[v2] = outcomes
    SHADOW["some-other-version"] = {"both": 500}  # another challenger's pairs never count

    found = canary_outcome(kube, namespace, phase)
    assert (found["modelVersion"], found["mode"], found["verdict"]) == (v2, "shadow", verdict), found
    assert found["pairs"] == 50 and found["pValue"] < 0.01, found
    worse = verdict == "Worse"
    assert (found["championScore"], found["challengerScore"]) == ((0.9, 0.44) if worse else (0.44, 0.9))
    served = v1 if worse else v2
    wait_for(
        lambda: status_of(kube, "InferenceService", namespace, "iris").get("modelVersion") == served,
        what=f"{served} serving",
    )
    cond = condition(status_of(kube, "InferenceService", namespace, "iris"), "ShadowVerdict")
    assert cond["reason"] == verdict, cond


def _older(timestamp: str, seconds: float) -> bool:
    from mlops_contract.timeutil import parse_time, utc_now

    started = parse_time(timestamp)
    return started is not None and (utc_now() - started).total_seconds() > seconds
