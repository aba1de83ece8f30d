"""spec.monitoring.prometheusUrl against a real Prometheus (issue #21): three real inference
servers on loopback (two stable pods of iris-v1, one canary pod of iris-v2) get traffic, labelled
feedback and shifted inputs; a real Prometheus (tests/promkit.py) scrapes them with the labels the
shipped PodMonitor gives the pods' series. The operator's PromQL source (monitor.promql through
prometheus.PrometheusClient) must give the metrics and the canary statistics the pod-scrape path
(scraper.HttpScraper + monitor.scrape) gives on the same servers; a Prometheus that is down, or
that has no series of the service, gives MetricsAvailable=False and held decisions.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from server_factories import Artifact, RunningServer, settings_for, v2_matrix

from mlops_contract.api.inferenceservice import InferenceServiceSpec
from mlops_contract.timeutil import format_time
from mlops_operator import prometheus
from mlops_operator.monitor import promql, scrape
from mlops_operator.prometheus import PrometheusClient
from mlops_operator.reconcile.inferenceservice import (
    Event,
    Rollout,
    from_prometheus,
    prometheus_query,
    scrape_pods,
)
from mlops_operator.scraper import HttpScraper
from mlops_operator.serving.resolve import Reason, Resolution
from mlops_operator.settings import Settings
from promkit import Prometheus, Target, ensure_binary
from s3kit import free_port

NS, ISVC = "ml", "iris"
PODS = {"iris-stable-a": ("stable", "iris-v1"), "iris-stable-b": ("stable", "iris-v1"), "iris-canary-x": ("canary", "iris-v2")}  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, iris: Artifact) -> Iterator[dict[str, RunningServer]]:
    servers = {
        name: RunningServer(settings_for(iris, model_version=version, drift_window=60))
        for name, (_, version) in PODS.items()
    }
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory, fleet: dict[str, RunningServer]) -> Iterator[Prometheus]:
    targets = [
        Target(server.port, {"namespace": NS, "pod": name, "inference_service": ISVC, "track": PODS[name][0]})
        for name, server in fleet.items()
    ]
    server = Prometheus.start(ensure_binary(), tmp_path_factory.mktemp("prometheus"), targets)
    try:
        yield server
    finally:
        server.stop()


SHIFT = np.array([0.0, 0.0, 4.0, 1.5])


def _traffic(fleet: dict[str, RunningServer], iris: Artifact) -> None:
    """Different traffic per pod: requests, bad requests (4xx), labelled feedback, a shifted pod."""
    data = iris.X.to_numpy()
    for i, (name, server) in enumerate(fleet.items()):
        c = server.client()
        for j in range(5 + 4 * i):
            rows = data[(j * 7) % 140 : (j * 7) % 140 + 10]
            if name == "iris-stable-b":
                rows = rows + SHIFT  # longer, wider petals: drift on this pod
            reply = c.infer(v2_matrix(rows, id=f"{name}-{j}"))
            assert reply.status == 200, reply.body
            predicted = reply.json["outputs"][0]["data"]
            if j % 2 == 0:  # feedback on every other request, one label in five wrong
                labels = [(p + (1 if k % 5 == 0 else 0)) % 3 for k, p in enumerate(predicted)]
                assert (
                    c.post("/v2/models/iris/feedback", {"id": f"{name}-{j}", "labels": labels}).status == 200
                )
        assert c.infer({"inputs": []}).status == 400  # counted, not an error (4xx)


def _pod(name: str) -> dict[str, Any]:
    track, version = PODS[name]
    labels = {"mlops.dev/track": track, "mlops.dev/model-version": version}
    return {"metadata": {"name": name, "namespace": NS, "labels": labels}, "status": {"phase": "Running", "podIP": "x"}}  # fmt: skip


@pytest.fixture(scope="module")
def both(
    fleet: dict[str, RunningServer], prom: Prometheus, iris: Artifact
) -> Iterator[tuple[promql.Signals, dict[str, scrape.PodSample], int]]:
    """The same servers read both ways once the traffic is over and Prometheus scraped it all."""
    prom.scraped_after(time.time(), targets=len(fleet))  # a sample before any traffic
    started = time.time()
    _traffic(fleet, iris)
    prom.scraped_after(time.time() + 0.1, targets=len(fleet))
    window = math.ceil(time.time() - started) + 3

    async def read() -> tuple[list[promql.Sample], dict[str, scrape.PodSample]]:
        pods = [_pod(name) for name in fleet]
        scraper = HttpScraper(address=lambda p: ("127.0.0.1", fleet[p["metadata"]["name"]].port))
        client = PrometheusClient()
        try:
            canary = promql.CanaryWindow("iris-v2", window, stable="iris-v1")
            expr = promql.query(
                NS, ISVC, window_seconds=window, versions=["iris-v1", "iris-v2"], canary=canary
            )
            return await client.query(prom.url, expr), await scrape_pods(scraper, pods)
        finally:
            await scraper.close()
            await client.close()

    answer, samples = asyncio.run(read())
    yield promql.signals(answer), samples, window


def test_promql_gives_the_metrics_of_the_pod_scrapes(both: Any) -> None:
    found, samples, _ = both
    from_pods, _ = scrape.aggregate(list(samples.values()), None)
    from_prometheus, _ = promql.metrics(found, None)
    assert found.seen == set(PODS)
    assert set(from_prometheus) == set(from_pods), (from_prometheus, from_pods)
    for key in ("requests", "labelled_samples"):  # counts: exact
        assert from_prometheus[key] == from_pods[key], key
    assert from_pods["requests"] == (5 + 1) + (9 + 1) + (13 + 1)
    for key in ("error_rate", "drift", "prediction_drift", "accuracy"):  # the same values
        assert from_prometheus[key] == pytest.approx(from_pods[key], rel=1e-9, abs=1e-12), key
    # increase() extrapolates each pod's histogram to the window's ends by its own scrape times
    # (up to one 1 s scrape interval over the few seconds of traffic): close, not equal.
    for key in ("latency_p50_ms", "latency_p95_ms"):
        assert from_prometheus[key] == pytest.approx(from_pods[key], rel=0.35), key
    assert from_prometheus["drift_by_feature"] == pytest.approx(from_pods["drift_by_feature"], rel=1e-6)
    # What was sent: no 5xx, a shifted pod's drift, one wrong label in five.
    assert from_pods["error_rate"] == 0.0
    assert from_pods["drift"] > 0.2
    assert from_pods["accuracy"] == pytest.approx(0.8)
    rounded = scrape.rounded(from_prometheus)
    assert {k: v for k, v in rounded.items() if not k.startswith("latency")} == {
        k: v for k, v in scrape.rounded(from_pods).items() if not k.startswith("latency")
    }


def test_promql_gives_the_canary_statistics_of_the_canary_pod(both: Any) -> None:
    found, samples, _ = both
    _, totals = scrape.aggregate([samples["iris-canary-x"]], None)
    from_pods = scrape.canary_stats(totals)
    from_prometheus = promql.canary_stats(found.canary)
    assert found.canary.pods == {"iris-canary-x"}
    assert (
        (from_prometheus.requests, from_prometheus.errors)
        == (from_pods.requests, from_pods.errors)
        == (14, 0)
    )
    assert from_prometheus.p95_ms == pytest.approx(from_pods.p95_ms, rel=1e-6)


def test_promql_gives_each_tracks_labelled_rows(both: Any) -> None:
    """The split canary's label comparison (issue #22): each track's labelled rows since the
    window began, as the pod scraper counts them (the stable pods' from their values then)."""
    found, samples, _ = both
    _, canary = scrape.aggregate([samples["iris-canary-x"]], None)
    stable = scrape.track_totals([samples["iris-stable-a"], samples["iris-stable-b"]], scrape.PodTotals())
    from_pods = scrape.canary_stats(canary, stable)
    from_prometheus = promql.canary_stats(found.canary)
    # 7 labelled requests of 10 rows on the canary, two wrong in each.
    assert from_prometheus.canary_labelled == from_pods.canary_labelled
    assert (from_pods.canary_labelled.correct, from_pods.canary_labelled.incorrect) == (56, 14)
    assert (from_pods.stable_labelled.n, from_pods.stable_labelled.score) == (3 * 10 + 5 * 10, 0.8)
    assert from_prometheus.stable_labelled == from_pods.stable_labelled


def test_counter_totals_continue_across_queries(both: Any) -> None:
    """The second query of the same counters adds nothing: requests is a running total."""
    found, _, _ = both
    first, totals = promql.metrics(found, None)
    second, _ = promql.metrics(found, totals)
    assert second["requests"] == first["requests"]


# --- failures hold the decisions -----------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MVS = {
    f"iris-v{v}": {
        "metadata": {"name": f"iris-v{v}", "namespace": NS},
        "spec": {"model": "iris", "version": v, "artifact": {"uri": f"pvc://a/m/{v}", "sha256": "ab" * 32}},
    }
    for v in (1, 2)
}


def _isvc(url: str) -> tuple[dict[str, Any], InferenceServiceSpec]:
    spec = {
        "model": "iris",
        "policy": {},
        "canary": {"trafficPercent": 50, "durationSeconds": 10, "minRequests": 1},
        "monitoring": {"prometheusUrl": url, "intervalSeconds": 10},
    }
    body = {"apiVersion": "mlops.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": ISVC, "namespace": NS, "uid": "u1"}, "spec": spec,
            "status": {"metrics": {"requests": 7, "drift": 0.5, "lastScrape": format_time(NOW - timedelta(minutes=5))}}}  # fmt: skip
    return body, InferenceServiceSpec.model_validate(spec)


def _canary_rollout() -> Rollout:
    """A canary of iris-v2 analysed for 5 minutes: past its duration, so only data is missing."""
    started = format_time(NOW - timedelta(minutes=5))
    return Rollout(
        Resolution("iris-v2", Reason.LATEST, "newest"),
        "iris-v2",
        "iris-v1",
        canary={"modelVersion": "iris-v2", "phase": "Progressing", "startedAt": started},
        analyse=True,
    )


async def _decide(url: str, name: str = ISVC) -> Any:
    body, spec = _isvc(url)
    body["metadata"]["name"] = name
    rollout = _canary_rollout()
    expr = prometheus_query(body, spec, rollout, due=True, min_window=60, now=NOW)
    assert expr is not None
    client = PrometheusClient(connect_timeout=1, total_timeout=3)
    answer: Any
    try:
        answer = await client.query(url, expr)
    except prometheus.QueryFailed as e:
        answer = e
    finally:
        await client.close()
    settings = Settings()
    result = from_prometheus(
        body, spec, rollout, answer, due=True, previous=None, versions=MVS, settings=settings, now=NOW
    )
    return body, rollout, result


def _assert_held(body: dict[str, Any], rollout: Rollout, result: Any, reason: str) -> None:
    assert result.source.status == "False" and result.source.reason == reason, result.source
    assert result.rollout.canary == rollout.canary  # neither promoted nor rolled back
    assert [s for s in result.rollout.steps if not isinstance(s, Event)] == list(rollout.steps)
    assert result.monitored.metrics == body["status"]["metrics"] and result.monitored.scraped is None
    events = [s for s in result.rollout.steps if isinstance(s, Event)]
    assert [(e.reason, e.warning) for e in events] == [(reason, True)]
    assert events[0].message == result.source.message


async def test_an_unreachable_prometheus_holds_the_decisions() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    body, rollout, result = await _decide(url)
    _assert_held(body, rollout, result, "PrometheusUnreachable")
    assert url in result.source.message


async def test_a_prometheus_without_series_of_the_service_holds_the_decisions(prom: Prometheus) -> None:
    body, rollout, result = await _decide(prom.url, name="nobody-scrapes-me")
    _assert_held(body, rollout, result, "PrometheusNoData")
    assert prom.url in result.source.message and "nobody-scrapes-me" in result.source.message


async def test_a_query_error_is_reported_with_prometheus_own_message(prom: Prometheus) -> None:
    client = PrometheusClient()
    try:
        with pytest.raises(prometheus.QueryFailed) as failed:
            await client.query(prom.url, "sum(rate(mlops_requests_total[5m])")  # unbalanced
    finally:
        await client.close()
    assert failed.value.reason == "query"
    assert "bad_data" in str(failed.value) and prom.url in str(failed.value)


async def test_a_served_canary_is_decided_from_promql(prom: Prometheus, both: Any) -> None:
    """The canary pod served 14 requests without errors: past its duration, it is promoted."""
    _body, _rollout, result = await _decide(prom.url)
    assert result.source.status == "True", result.source
    assert result.rollout.canary["phase"] == "Promoted", result.rollout.canary
    assert result.rollout.canary["requests"] == 14
    assert result.monitored.scraped is not None and result.monitored.metrics["requests"] == 30


@pytest.mark.parametrize(
    ("window", "canary"),
    [(60, None), (None, promql.CanaryWindow("v", 0)), (5, promql.CanaryWindow('a"b\\c', 7, stable='s"t'))],
    ids=["metrics", "canary", "both-with-hostile-labels"],
)
async def test_every_shape_of_the_query_is_valid_promql(prom: Prometheus, window: Any, canary: Any) -> None:
    client = PrometheusClient()
    try:
        answer = await client.query(
            prom.url,
            promql.query(NS, 'x"y\\z', window_seconds=window, versions=["v-1.2", 'q"'], canary=canary),
        )
    finally:
        await client.close()
    assert answer == []  # valid, and nothing matches those names


def test_the_stable_tracks_rows_count_from_the_windows_start(
    fleet: dict[str, RunningServer], prom: Prometheus, both: Any, iris: Artifact
) -> None:
    """Rows a stable pod had labelled before the analysis' window began are not counted (last in
    this module: it sends more traffic)."""
    prom.scraped_after(time.time(), targets=len(fleet))  # the earlier traffic is behind this sample
    time.sleep(2.0)  # samples of the counters as they stand before the window
    started = time.time()
    c = fleet["iris-stable-a"].client()
    predicted = c.infer(v2_matrix(iris.X.to_numpy()[:6], id="late-1")).json["outputs"][0]["data"]
    labels = [*predicted[:4], *((p + 1) % 3 for p in predicted[4:])]  # four right, two wrong
    assert c.post("/v2/models/iris/feedback", {"id": "late-1", "labels": labels}).status == 200
    prom.scraped_after(time.time() + 0.1, targets=len(fleet))
    window = math.ceil(time.time() - started) + 1

    async def read() -> list[promql.Sample]:
        client = PrometheusClient()
        try:
            canary = promql.CanaryWindow("iris-v2", window, stable="iris-v1")
            return await client.query(prom.url, promql.query(NS, ISVC, window_seconds=None, canary=canary))
        finally:
            await client.close()

    stats = promql.canary_stats(promql.signals(asyncio.run(read())).canary)
    assert (stats.stable_labelled.correct, stats.stable_labelled.incorrect) == (4, 2)
    assert (stats.canary_labelled.correct, stats.canary_labelled.incorrect) == (56, 14)  # its lifetime
