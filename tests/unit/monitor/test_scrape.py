"""Prometheus text -> per-pod samples -> status metrics: deltas, resets, quantiles, drift, rounding."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mlops_contract.api.inferenceservice import Metrics
from mlops_operator.monitor.scrape import (
    PodSample,
    PodTotals,
    aggregate,
    canary_stats,
    changed,
    due,
    merge_buckets,
    parse,
    quantile,
    rounded,
    track_totals,
)
from mlops_operator.serving.verdict import Labelled

INF = math.inf


def text(
    *,
    codes: dict[str, int] | None = None,
    buckets: dict[str, int] | None = None,
    psi: dict[str, float] | None = None,
    extra: str = "",
    version: str = "iris-3",
) -> str:
    """A hand-written exposition in the serving pods' format."""
    lines = ["# TYPE mlops_requests_total counter"]
    for code, n in (codes or {}).items():
        lines.append(
            f'mlops_requests_total{{code="{code}",model="iris",protocol="v2",version="{version}"}} {n}'
        )
    lines.append("# TYPE mlops_request_duration_seconds histogram")
    for le, n in (buckets or {}).items():
        lines.append(
            f'mlops_request_duration_seconds_bucket{{le="{le}",model="iris",version="{version}"}} {n}'
        )
    if buckets:
        lines.append(
            f'mlops_request_duration_seconds_count{{model="iris",version="{version}"}} {list(buckets.values())[-1]}'
        )
    lines.append("# TYPE mlops_drift_psi gauge")
    for feature, value in (psi or {}).items():
        lines.append(f'mlops_drift_psi{{feature="{feature}",model="iris",version="{version}"}} {value}')
    return "\n".join(lines) + "\n" + extra


def pod(
    name: str,
    requests: float = 0,
    errors: float = 0,
    buckets: tuple[tuple[float, float], ...] = (),
    **gauges: Any,
) -> PodSample:
    return PodSample(pod=name, requests=requests, errors=errors, buckets=buckets, **gauges)


# --- parse ----------------------------------------------------------------------------------


def test_parse_counts_requests_and_5xx_errors() -> None:
    sample = parse(
        text(codes={"200": 90, "400": 4, "500": 5, "503": 1}, buckets={"0.01": 10, "0.1": 80, "+Inf": 100}),
        pod="p1",
    )
    assert sample.pod == "p1"
    assert sample.requests == 100
    assert sample.errors == 6  # 4xx are the client's fault, not the server's
    assert sample.buckets == ((0.01, 10), (0.1, 80), (INF, 100))
    assert sample.versions == frozenset({"iris-3"})


def test_parse_sums_protocols_and_reads_gauges() -> None:
    extra = "\n".join(
        [
            'mlops_requests_total{code="200",model="iris",protocol="v1",version="iris-3"} 7',
            "# TYPE mlops_drift_score gauge",
            'mlops_drift_score{model="iris",version="iris-3"} 0.4',
            "# TYPE mlops_prediction_drift_psi gauge",
            'mlops_prediction_drift_psi{model="iris",version="iris-3"} 0.05',
            "# TYPE mlops_drift_window_rows gauge",
            'mlops_drift_window_rows{model="iris",version="iris-3"} 500',
            "# TYPE mlops_feedback_samples gauge",
            'mlops_feedback_samples{model="iris",version="iris-3"} 60',
            "# TYPE mlops_feedback_accuracy gauge",
            'mlops_feedback_accuracy{model="iris",version="iris-3"} 0.8',
            "# TYPE mlops_estimated_accuracy gauge",
            'mlops_estimated_accuracy{model="iris",version="iris-3"} 0.71',
            "",
        ]
    )
    s = parse(text(codes={"200": 3}, psi={"sepal": 0.1, "petal": 0.4}, extra=extra))
    assert s.requests == 10
    assert s.feature_psi == {"sepal": 0.1, "petal": 0.4}
    assert (s.drift_score, s.prediction_psi, s.window_rows) == (0.4, 0.05, 500)
    assert (s.feedback_samples, s.accuracy, s.rmse) == (60, 0.8, None)
    assert s.estimated_accuracy == 0.71


def test_parse_ignores_nan_gauges() -> None:
    extra = (
        '# TYPE mlops_feedback_accuracy gauge\nmlops_feedback_accuracy{model="iris",version="iris-3"} NaN\n'
    )
    assert parse(text(extra=extra)).accuracy is None


def test_parse_empty_text() -> None:
    assert parse("") == PodSample()


def test_parse_rejects_malformed_text() -> None:
    with pytest.raises(ValueError):
        parse("mlops_requests_total{code=200 oops\n")


def test_parse_prometheus_client_output_with_created_series() -> None:
    """The client library's own rendering (with *_created samples) parses as the contract says."""
    registry = CollectorRegistry()
    requests = Counter(
        "mlops_requests_total", "r", ["model", "version", "protocol", "code"], registry=registry
    )
    duration = Histogram(
        "mlops_request_duration_seconds", "d", ["model", "version"], buckets=(0.01, 0.1), registry=registry
    )
    rmse = Gauge("mlops_feedback_rmse", "q", ["model", "version"], registry=registry)
    requests.labels("iris", "iris-3", "v2", "200").inc(3)
    requests.labels("iris", "iris-3", "v2", "500").inc(1)
    for seconds in (0.005, 0.05, 0.05, 1.0):
        duration.labels("iris", "iris-3").observe(seconds)
    rmse.labels("iris", "iris-3").set(2.5)
    s = parse(generate_latest(registry).decode())
    assert (s.requests, s.errors, s.rmse) == (4, 1, 2.5)
    assert s.buckets == ((0.01, 1), (0.1, 3), (INF, 4))


def test_parse_the_servers_own_exposition() -> None:
    """Contract with mlops_server.monitoring: what the server writes is what the operator reads."""
    monitoring = pytest.importorskip("mlops_server.monitoring")
    m = monitoring.Metrics("iris", "iris-3", "a" * 64, features=["f1", "f2"], classification=True)
    m.count_request("v2", 200, 0.003)
    m.count_request("v2", 500, 0.3)
    m.set_drift({"f1": 0.1, "f2": 0.3}, 0.05, 120)
    s = parse(m.exposition().decode(), pod="p")
    assert (s.requests, s.errors) == (2, 1)
    assert s.buckets[-1] == (INF, 2)
    assert s.feature_psi == {"f1": 0.1, "f2": 0.3}
    assert (s.drift_score, s.prediction_psi, s.window_rows) == (0.3, 0.05, 120)
    assert s.accuracy is None  # NaN before any feedback
    assert s.labelled == {"correct": 0, "incorrect": 0}  # the feedback counters exist from the start
    m.count_labelled([1.0, 0.0, 1.0])
    assert parse(m.exposition().decode()).labelled == {"correct": 2, "incorrect": 1}
    r = monitoring.Metrics("diabetes", "d-1", "a" * 64, features=["f1"], classification=False)
    r.count_labelled([1.5, 2.0])
    assert parse(r.exposition().decode()).labelled == {"scored": 2, "abs_error": 3.5, "squared_error": 6.25}


# --- quantiles --------------------------------------------------------------------------------

HIST = ((0.01, 10.0), (0.05, 30.0), (0.1, 40.0), (INF, 40.0))

QUANTILE_CASES = [
    # rank 20 falls in (0.01, 0.05] holding counts 10..30: 0.01 + 0.04 * 10/20
    ("median-interpolated", HIST, 0.5, 0.03),
    # rank 38 falls in (0.05, 0.1] holding counts 30..40: 0.05 + 0.05 * 8/10
    ("p95-interpolated", HIST, 0.95, 0.09),
    ("first-bucket-starts-at-zero", ((0.1, 10.0), (INF, 10.0)), 0.5, 0.05),
    ("rank-on-a-bound", ((0.01, 10.0), (0.05, 20.0), (INF, 20.0)), 0.5, 0.01),
    ("rank-in-inf-reports-top-bound", ((0.1, 5.0), (INF, 10.0)), 0.95, 0.1),
    ("unsorted-input", ((INF, 40.0), (0.1, 40.0), (0.01, 10.0), (0.05, 30.0)), 0.5, 0.03),
    ("empty-histogram", ((0.1, 0.0), (INF, 0.0)), 0.5, None),
    ("no-buckets", (), 0.5, None),
]


@pytest.mark.parametrize(
    ("name", "buckets", "q", "value"), QUANTILE_CASES, ids=[c[0] for c in QUANTILE_CASES]
)
def test_quantile(name: str, buckets: tuple[tuple[float, float], ...], q: float, value: float | None) -> None:
    result = quantile(buckets, q)
    if value is None:
        assert result is None
    else:
        assert result == pytest.approx(value)


def test_merge_buckets_sums_pods_and_keeps_shared_bounds() -> None:
    a = ((0.01, 1.0), (0.1, 3.0), (INF, 4.0))
    b = ((0.01, 2.0), (0.1, 2.0), (INF, 5.0))
    assert merge_buckets([a, b, ()]) == ((0.01, 3.0), (0.1, 5.0), (INF, 9.0))
    odd = ((0.05, 1.0), (INF, 2.0))
    assert merge_buckets([a, odd]) == ((INF, 6.0),)


# --- aggregate: counters ----------------------------------------------------------------------

B = (0.01, 0.05, 0.1, INF)


def hist(*counts: float) -> tuple[tuple[float, float], ...]:
    return tuple(zip(B, counts, strict=True))


COUNTER_CASES: list[tuple[str, PodTotals | None, list[PodSample], dict[str, Any]]] = [
    (
        "first-scrape-uses-lifetime-values",
        None,
        [pod("a", 100, 5, hist(10, 30, 40, 40))],
        {"requests": 100, "error_rate": 0.05, "latency_p50_ms": 30.0, "latency_p95_ms": 90.0},
    ),
    (
        "delta-since-previous",
        aggregate([pod("a", 100, 5)], None)[1],
        [pod("a", 150, 5)],
        {"requests": 150, "error_rate": 0.0},
    ),
    (
        "counter-reset-counts-current-value",
        aggregate([pod("a", 100, 5)], None)[1],
        [pod("a", 20, 2)],
        {"requests": 120, "error_rate": 0.1},
    ),
    (
        "new-pod-counts-whole",
        aggregate([pod("a", 100, 0)], None)[1],
        [pod("a", 110, 0), pod("b", 30, 3)],
        {"requests": 140, "error_rate": 3 / 40},
    ),
    (
        "gone-pod-keeps-running-total",
        aggregate([pod("a", 100, 0), pod("b", 50, 0)], None)[1],
        [pod("a", 120, 2)],
        {"requests": 170, "error_rate": 0.1},
    ),
    (
        "no-traffic-no-rate-no-latency",
        aggregate([pod("a", 100, 5, hist(10, 30, 40, 40))], None)[1],
        [pod("a", 100, 5, hist(10, 30, 40, 40))],
        {"requests": 100},
    ),
    (
        # delta buckets (0, 20, 40, 40): p50 rank 20 -> 0.01 + 0.04 * 20/20; p95 rank 38 -> 0.05 + 0.05 * 18/20
        "latency-from-the-interval-only",
        aggregate([pod("a", 10, 0, hist(10, 10, 10, 10))], None)[1],
        [pod("a", 50, 0, hist(10, 30, 50, 50))],
        {"requests": 50, "error_rate": 0.0, "latency_p50_ms": 50.0, "latency_p95_ms": 95.0},
    ),
    (
        # interval buckets (0, 4, 4, 4): p50 rank 2 -> 0.01 + 0.04 * 2/4; p95 rank 3.8 -> 0.01 + 0.04 * 3.8/4
        "new-pod-histogram-counts-whole",
        aggregate([pod("a", 40, 0, hist(10, 30, 40, 40))], None)[1],
        [pod("a", 40, 0, hist(10, 30, 40, 40)), pod("b", 4, 0, hist(0, 4, 4, 4))],
        {"requests": 44, "error_rate": 0.0, "latency_p50_ms": 30.0, "latency_p95_ms": 48.0},
    ),
    (
        "histogram-reset-counts-current",
        aggregate([pod("a", 40, 0, hist(10, 30, 40, 40))], None)[1],
        [pod("a", 4, 0, hist(0, 4, 4, 4))],
        {"requests": 44, "error_rate": 0.0, "latency_p50_ms": 30.0, "latency_p95_ms": 48.0},
    ),
    (
        "changed-bucket-bounds-count-as-reset",
        aggregate([pod("a", 40, 0, hist(10, 30, 40, 40))], None)[1],
        [pod("a", 50, 0, ((0.02, 50.0), (INF, 50.0)))],
        {"requests": 90, "error_rate": 0.0, "latency_p50_ms": 10.0, "latency_p95_ms": 19.0},
    ),
    (
        "pods-merged",
        None,
        [pod("a", 10, 1, hist(10, 10, 10, 10)), pod("b", 10, 0, hist(0, 0, 10, 10))],
        {"requests": 20, "error_rate": 0.05, "latency_p50_ms": 10.0, "latency_p95_ms": 95.0},
    ),
    ("no-pods", None, [], {"requests": 0}),
]


@pytest.mark.parametrize(
    ("name", "previous", "samples", "expected"), COUNTER_CASES, ids=[c[0] for c in COUNTER_CASES]
)
def test_aggregate_counters(
    name: str, previous: PodTotals | None, samples: list[PodSample], expected: dict[str, Any]
) -> None:
    metrics, _ = aggregate(samples, previous)
    assert metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key


def test_aggregate_rejects_duplicate_pods() -> None:
    with pytest.raises(ValueError, match="unique"):
        aggregate([pod("a"), pod("a")], None)


def test_totals_remember_each_pods_counters() -> None:
    _, totals = aggregate([pod("a", 10, 1, hist(1, 2, 3, 3)), pod("b", 5)], None)
    assert set(totals.pods) == {"a", "b"}
    assert totals.pods["a"].requests == 10
    assert (totals.requests, totals.errors) == (15, 1)


# --- aggregate: drift and feedback -----------------------------------------------------------

GAUGE_CASES: list[tuple[str, list[PodSample], dict[str, Any]]] = [
    (
        # sepal: (100*0.1 + 300*0.3)/400 = 0.25; petal: (100*0.5 + 300*0.1)/400 = 0.2
        "drift-window-weighted-then-max-feature",
        [
            pod("a", feature_psi={"sepal": 0.1, "petal": 0.5}, window_rows=100),
            pod("b", feature_psi={"sepal": 0.3, "petal": 0.1}, window_rows=300),
        ],
        {"drift": 0.25, "drift_by_feature": {"sepal": 0.25, "petal": 0.2}},
    ),
    (
        "empty-windows-carry-no-evidence",
        [
            pod("a", feature_psi={"sepal": 0.4}, window_rows=100),
            pod("b", feature_psi={"sepal": 0.0}, window_rows=0),
        ],
        {"drift": 0.4, "drift_by_feature": {"sepal": 0.4}},
    ),
    ("all-windows-empty-no-drift", [pod("a", feature_psi={"sepal": 0.0}, window_rows=0)], {}),
    (
        "unknown-window-size-weighs-one",
        [pod("a", feature_psi={"sepal": 0.1}), pod("b", feature_psi={"sepal": 0.3})],
        {"drift": 0.2, "drift_by_feature": {"sepal": 0.2}},
    ),
    (
        "drift-score-when-no-feature-series",
        [pod("a", drift_score=0.2, window_rows=100), pod("b", drift_score=0.6, window_rows=100)],
        {"drift": 0.4},
    ),
    (
        "prediction-drift-weighted",
        [pod("a", prediction_psi=0.1, window_rows=300), pod("b", prediction_psi=0.5, window_rows=100)],
        {"prediction_drift": 0.2},
    ),
    (
        # (10*0.9 + 30*0.5) / 40
        "accuracy-weighted-by-samples",
        [pod("a", accuracy=0.9, feedback_samples=10), pod("b", accuracy=0.5, feedback_samples=30)],
        {"accuracy": 0.6, "labelled_samples": 40},
    ),
    (
        "accuracy-without-samples-ignored",
        [pod("a", accuracy=0.9, feedback_samples=10), pod("b", accuracy=0.1, feedback_samples=0)],
        {"accuracy": 0.9, "labelled_samples": 10},
    ),
    (
        # sqrt((1*1^2 + 3*3^2) / 4) = sqrt(7)
        "rmse-pooled-as-mean-square",
        [pod("a", rmse=1.0, feedback_samples=1), pod("b", rmse=3.0, feedback_samples=3)],
        {"rmse": math.sqrt(7), "labelled_samples": 4},
    ),
    ("no-feedback-yet", [pod("a", feedback_samples=0)], {"labelled_samples": 0}),
    (
        # (300*0.9 + 100*0.5) / 400: weighted by the rows behind each pod's estimate
        "estimated-accuracy-weighted-by-window-rows",
        [
            pod("a", estimated_accuracy=0.9, window_rows=300),
            pod("b", estimated_accuracy=0.5, window_rows=100),
        ],
        {"estimated_accuracy": 0.8},
    ),
]


@pytest.mark.parametrize(("name", "samples", "expected"), GAUGE_CASES, ids=[c[0] for c in GAUGE_CASES])
def test_aggregate_gauges(name: str, samples: list[PodSample], expected: dict[str, Any]) -> None:
    metrics, _ = aggregate(samples, None)
    metrics.pop("requests")
    assert metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key


def test_aggregate_output_is_a_valid_metrics_status() -> None:
    metrics, _ = aggregate(
        [
            pod(
                "a",
                10,
                1,
                hist(5, 8, 10, 10),
                feature_psi={"x": 0.1},
                window_rows=10,
                accuracy=0.9,
                feedback_samples=5,
            )
        ],
        None,
    )
    status = Metrics.model_validate(metrics).to_dict()
    assert status["errorRate"] == pytest.approx(0.1)
    assert status["driftByFeature"] == {"x": 0.1}
    assert status["labelledSamples"] == 5


# --- canary statistics over a sequence of scrapes ---------------------------------------------


def test_canary_stats_accumulate_across_scrapes_and_resets() -> None:
    _, t1 = aggregate([pod("c", 10, 1, hist(10, 10, 10, 10))], None)
    assert canary_stats(t1).requests == 10
    assert canary_stats(t1).errors == 1
    _, t2 = aggregate([pod("c", 30, 1, hist(10, 30, 30, 30))], t1)
    _, t3 = aggregate([pod("c", 5, 2, hist(0, 0, 5, 5))], t2)  # the server restarted
    stats = canary_stats(t3)
    assert (stats.requests, stats.errors) == (35, 3)
    # accumulated buckets (10, 30, 35, 35): rank 33.25 -> 0.05 + 0.05 * 3.25/5
    assert stats.p95_ms == pytest.approx(82.5)


def test_canary_stats_empty() -> None:
    stats = canary_stats(PodTotals())
    assert (stats.requests, stats.errors, stats.p95_ms) == (0, 0, None)


# --- rounding and change detection ------------------------------------------------------------

ROUND_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("three-significant-digits", {"error_rate": 0.0123456}, {"error_rate": 0.0123}),
    ("latency", {"latency_p95_ms": 12.3456}, {"latency_p95_ms": 12.3}),
    ("large-latency", {"latency_p50_ms": 1234.5}, {"latency_p50_ms": 1230.0}),
    ("at-most-four-decimals", {"drift": 0.00012345}, {"drift": 0.0001}),
    ("zero", {"error_rate": 0.0}, {"error_rate": 0.0}),
    ("per-feature", {"drift_by_feature": {"b": 0.33333, "a": 0.16666}}, {"drift_by_feature": {"a": 0.167, "b": 0.333}}),
    ("small-counts-exact", {"requests": 999, "labelled_samples": 7}, {"requests": 999, "labelled_samples": 7}),
    ("large-counts-three-digits", {"requests": 123456}, {"requests": 123000}),
    ("camel-case-in-snake-out", {"errorRate": 0.5, "lastScrape": "2025-01-01T00:00:00Z"}, {"error_rate": 0.5, "last_scrape": "2025-01-01T00:00:00Z"}),
    ("none-dropped", {"accuracy": None, "rmse": 1.0}, {"rmse": 1.0}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "metrics", "expected"), ROUND_CASES, ids=[c[0] for c in ROUND_CASES])
def test_rounded(name: str, metrics: dict[str, Any], expected: dict[str, Any]) -> None:
    assert rounded(metrics) == expected


CHANGED_CASES: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None, bool]] = [
    ("identical", {"requests": 5, "drift": 0.2}, {"requests": 5, "drift": 0.2}, False),
    ("float-noise", {"drift": 0.2}, {"drift": 0.20001}, False),
    ("real-change", {"drift": 0.2}, {"drift": 0.21}, True),
    ("status-camel-vs-scrape-snake", {"errorRate": 0.01, "latencyP95Ms": 12.0}, {"error_rate": 0.01, "latency_p95_ms": 12.0}, False),
    ("value-appears", {"requests": 5}, {"requests": 5, "accuracy": 0.9}, True),
    ("value-disappears", {"requests": 5, "error_rate": 0.0}, {"requests": 5}, True),
    ("scrape-time-alone-is-no-change", {"requests": 5, "lastScrape": "a"}, {"requests": 5, "last_scrape": "b"}, False),
    # status.metrics carries the drift trigger's count; a scrape never does (issue #8: no idle writes).
    ("trigger-bookkeeping-is-no-scrape-change", {"requests": 5, "driftBreaches": 0, "lastScrape": "a"}, {"requests": 5}, False),
    ("none-and-empty", None, {}, False),
    ("first-metrics", None, {"requests": 0}, True),
    ("small-count-change", {"requests": 10}, {"requests": 11}, True),
    ("large-count-within-rounding", {"requests": 100000}, {"requests": 100040}, False),
    ("feature-drift-change", {"drift_by_feature": {"a": 0.1}}, {"drift_by_feature": {"a": 0.1, "b": 0.1}}, True),
]  # fmt: skip


@pytest.mark.parametrize(("name", "old", "new", "expected"), CHANGED_CASES, ids=[c[0] for c in CHANGED_CASES])
def test_changed(name: str, old: dict[str, Any] | None, new: dict[str, Any] | None, expected: bool) -> None:
    assert changed(old, new) is expected


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return T0 - timedelta(seconds=seconds)


DUE_CASES: list[tuple[str, list[datetime | None], bool]] = [
    ("never-scraped", [], True),
    ("nothing-known", [None, None], True),
    ("interval-passed", [ago(30)], True),
    ("within-jitter-slack", [ago(27)], True),
    ("too-soon", [ago(10)], False),
    # An idle service's status keeps an old lastScrape; the scrape kept in memory paces it.
    ("status-old-but-scraped-just-now", [ago(300), ago(1)], False),
    ("after-restart-status-only", [ago(300), None], True),
    ("memory-old-status-recent", [ago(60), ago(5)], False),
]


@pytest.mark.parametrize(("name", "previous", "expected"), DUE_CASES, ids=[c[0] for c in DUE_CASES])
def test_due(name: str, previous: list[datetime | None], expected: bool) -> None:
    assert due(T0, 30, *previous) is expected


# --- the split canary's labelled rows, per track (issue #22) ----------------------------------


def fed(name: str, correct: float, incorrect: float, requests: float = 0) -> PodSample:
    return pod(name, requests, labelled={"correct": correct, "incorrect": incorrect})


def test_canary_labelled_rows_count_whole_from_the_start() -> None:
    _, t1 = aggregate([fed("c1", 3, 1, 10)], None)
    _, t2 = aggregate([fed("c1", 5, 1, 12), fed("c2", 2, 2, 4)], t1)  # a second canary pod
    _, t3 = aggregate([fed("c1", 1, 0, 1), fed("c2", 2, 2, 4)], t2)  # c1's server restarted
    assert canary_stats(t3).canary_labelled == Labelled(correct=8, incorrect=3)


def test_stable_labelled_rows_start_from_a_baseline() -> None:
    """The stable pods served (and were labelled) before the canary: only rows since count."""
    t0 = track_totals([fed("s1", 100, 10)], None)
    assert t0.labelled == {}
    t1 = track_totals([fed("s1", 130, 12), fed("s2", 5, 0)], t0)  # s2 is new: counts whole
    t2 = track_totals([fed("s1", 4, 1)], t1)  # s1 restarted, s2 gone
    assert t2.labelled == {"correct": 39.0, "incorrect": 3.0}
    _, canary = aggregate([fed("c1", 20, 20)], None)
    stats = canary_stats(canary, t2)
    assert (stats.canary_labelled.n, stats.stable_labelled.n) == (40, 42)
    assert stats.stable_labelled.score == pytest.approx(39 / 42)
    assert canary_stats(canary).stable_labelled == Labelled()


def test_parse_reads_the_feedback_counters() -> None:
    extra = (
        "# TYPE mlops_feedback_rows_total counter\n"
        'mlops_feedback_rows_total{model="d",outcome="scored",version="d-1"} 4\n'
        "# TYPE mlops_feedback_abs_error_total counter\n"
        'mlops_feedback_abs_error_total{model="d",version="d-1"} 6.5\n'
        "# TYPE mlops_feedback_squared_error_total counter\n"
        'mlops_feedback_squared_error_total{model="d",version="d-1"} 12.25\n'
    )
    assert parse(text(extra=extra)).labelled == {"scored": 4, "abs_error": 6.5, "squared_error": 12.25}
