"""monitor.promql, the pure half of spec.monitoring.prometheusUrl (issue #21): the query it
builds, the answers it accepts, and the metrics it makes of them (named cases). That the query is
valid PromQL and gives the pod scraper's numbers is shown against a real Prometheus in
tests/unit/server/test_prometheus_source.py."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from mlops_operator.monitor import promql, scrape
from mlops_operator.monitor.promql import BadAnswer, CanaryWindow, Sample
from mlops_operator.serving.verdict import Labelled


def test_the_query_selects_the_service_by_the_podmonitor_labels() -> None:
    q = promql.query("ml", "iris", window_seconds=90)
    assert 'mlops_requests_total{namespace="ml",inference_service="iris"}' in q
    assert "[90s]" in q and 'track="canary"' not in q
    signals = {"pods", "requests", "errors", "latency_p50", "latency_p95", "feature_psi", "drift_score"}
    signals |= {"prediction_drift", "labelled_samples", "accuracy", "rmse"}
    for signal in signals:
        assert f'"signal", "{signal}"' in q, signal


def test_gauges_count_only_the_served_versions_and_counters_every_pod() -> None:
    q = promql.query("ml", "iris", window_seconds=60, versions=["iris-v1", "iris-v2"])
    served = 'namespace="ml",inference_service="iris",version=~"iris\\\\-v1|iris\\\\-v2"'
    for gauge in (
        "mlops_model_info",
        "mlops_drift_psi",
        "mlops_drift_window_rows",
        "mlops_feedback_accuracy",
    ):
        assert f"{gauge}{{{served}}}" in q, gauge
    assert 'mlops_requests_total{namespace="ml",inference_service="iris"}[60s]' in q
    assert 'mlops_request_duration_seconds_bucket{namespace="ml",inference_service="iris"}[60s]' in q


def test_the_canary_part_selects_its_version_since_it_started() -> None:
    q = promql.query("ml", "iris", window_seconds=None, canary=CanaryWindow("iris-v2", 0))
    assert 'track="canary",version="iris-v2"' in q
    assert "[1s]" in q  # a canary started this pass: the shortest window, never [0s]
    assert '"signal", "requests"' not in q  # the metrics are not due


def test_label_values_are_quoted() -> None:
    assert promql.quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert 'inference_service="x\\"y"' in promql.query("ml", 'x"y', window_seconds=60)


def test_a_query_needs_something_to_ask() -> None:
    with pytest.raises(ValueError, match="nothing to query"):
        promql.query("ml", "iris", window_seconds=None)


def answer(result: list[dict[str, Any]], result_type: str = "vector") -> bytes:
    return orjson.dumps({"status": "success", "data": {"resultType": result_type, "result": result}})


@pytest.mark.parametrize(
    ("body", "reason", "text"),
    [
        pytest.param(b"<html>", "malformed", "not JSON", id="html"),
        pytest.param(b"[1, 2]", "malformed", "not a JSON object", id="json-list"),
        pytest.param(
            orjson.dumps({"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}),
            "query",
            "bad_data: parse error at char 5",
            id="prometheus-error",
        ),
        pytest.param(answer([], "matrix"), "malformed", "got matrix", id="matrix"),
        pytest.param(
            answer([{"metric": {}, "value": [1]}]), "malformed", "bad vector element", id="short-value"
        ),
        pytest.param(answer([{"value": [1, "2"]}]), "malformed", "bad vector element", id="no-metric"),
    ],
)
def test_answers_that_are_not_an_instant_vector(body: bytes, reason: str, text: str) -> None:
    with pytest.raises(BadAnswer, match=text) as failed:
        promql.parse_response(body)
    assert failed.value.reason == reason


def test_an_instant_vector_parses_with_nan() -> None:
    body = answer([{"metric": {"signal": "accuracy"}, "value": [1.5, "NaN"]}, {"metric": {"signal": "x"}, "value": [1.5, "2"]}])  # fmt: skip
    samples = promql.parse_response(body)
    assert math.isnan(samples[0].value) and samples[1] == Sample({"signal": "x"}, 2.0)


def s(signal: str, value: float, **labels: str) -> Sample:
    return Sample({"signal": signal, **labels}, value)


FULL = [
    s("pods", 1, pod="a"),
    s("pods", 1, pod="b"),
    s("requests", 100, pod="a"),
    s("requests", 50, pod="b"),
    s("errors", 5, pod="a"),
    s("latency_p50", 0.002),
    s("latency_p95", 0.010),
    s("feature_psi", 0.3, feature="petal"),
    s("feature_psi", 0.1, feature="sepal"),
    s("drift_score", 0.25),
    s("prediction_drift", 0.05),
    s("labelled_samples", 40.4),
    s("accuracy", 0.875),
    s("rmse", math.nan),  # a classifier: no rmse
    s("something_else", 1),  # a signal this operator does not know: ignored
]


def test_signals_to_metrics_on_the_first_query() -> None:
    found = promql.signals(FULL)
    metrics, totals = promql.metrics(found, None)
    assert found.seen == {"a", "b"}
    assert metrics == {
        "requests": 150,
        "error_rate": 5 / 150,
        "latency_p50_ms": 2.0,
        "latency_p95_ms": 10.0,
        "drift_by_feature": {"petal": 0.3, "sepal": 0.1},
        "drift": 0.3,  # the largest feature PSI, not the drift score
        "prediction_drift": 0.05,
        "labelled_samples": 40,
        "accuracy": 0.875,
    }
    assert totals.pods == {"a": scrape.Counters(100, 5), "b": scrape.Counters(50, 0)}


def test_the_error_rate_is_the_share_since_the_previous_query() -> None:
    _, first = promql.metrics(promql.signals(FULL), None)
    later = [
        s("requests", 110, pod="a"),  # 10 more
        s("errors", 8, pod="a"),  # 3 of them 5xx
        s("requests", 4, pod="b"),  # restarted: 4 new ones
        s("requests", 6, pod="c"),  # new pod, with its first 5xx series: 6 counted whole
        s("errors", 6, pod="c"),
    ]
    metrics, totals = promql.metrics(promql.signals(later), first)
    assert metrics["requests"] == 150 + 10 + 4 + 6
    assert metrics["error_rate"] == pytest.approx((3 + 6) / 20)
    again, _ = promql.metrics(promql.signals(later), totals)
    assert again["requests"] == 170 and "error_rate" not in again  # nothing arrived since


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        pytest.param([s("pods", 1, pod="a")], {"requests": 0}, id="no-request-yet"),
        pytest.param(
            [s("latency_p50", math.inf), s("latency_p95", 0.1)], {"requests": 0}, id="half-a-latency-pair"
        ),
        pytest.param([s("drift_score", 0.2)], {"requests": 0, "drift": 0.2}, id="drift-without-features"),
        pytest.param(
            [s("rmse", 1.5), s("labelled_samples", 3), s("accuracy", math.nan)],
            {"requests": 0, "rmse": 1.5, "labelled_samples": 3},
            id="a-regressor",
        ),
    ],
)
def test_absent_signals_are_absent_metrics(samples: list[Sample], expected: dict[str, Any]) -> None:
    assert promql.metrics(promql.signals(samples), None)[0] == expected


def test_canary_statistics() -> None:
    found = promql.signals(
        [
            s("canary_pods", 1, pod="c1"),
            s("canary_requests", 24.0),
            s("canary_errors", 2.0),
            s("canary_latency_p95", 0.0125),
        ]
    )
    assert found.canary.pods == {"c1"} and found.seen == frozenset()
    stats = promql.canary_stats(found.canary)
    assert (stats.requests, stats.errors, stats.p95_ms) == (24, 2, 12.5)
    empty = promql.canary_stats(promql.signals([s("canary_pods", 1, pod="c1")]).canary)
    assert (empty.requests, empty.errors, empty.p95_ms) == (0, 0, None)
    assert (empty.canary_labelled, empty.stable_labelled) == (Labelled(), Labelled())


def test_the_split_canary_part_reads_both_tracks_labelled_rows() -> None:
    """Issue #22: the canary pods' last feedback counters since the analysis started, the stable
    pods' (of the served version) increase over the same window; none in shadow mode."""
    q = promql.query("ml", "iris", window_seconds=None, canary=CanaryWindow("iris-v2", 90, stable="iris-v1"))
    canary = 'namespace="ml",inference_service="iris",track="canary",version="iris-v2"'
    stable = 'namespace="ml",inference_service="iris",track="stable",version="iris-v1"'
    assert f"sum by (outcome) (last_over_time(mlops_feedback_rows_total{{{canary}}}[90s]))" in q
    assert f"sum (last_over_time(mlops_feedback_abs_error_total{{{canary}}}[90s]))" in q
    rows = f"mlops_feedback_rows_total{{{stable}}}"
    since = f"clamp_min(last_over_time({rows}[90s]) - (({rows} offset 90s) or (last_over_time({rows}[90s]) * 0)), 0)"
    assert f"sum by (outcome) ({since})" in q
    assert f"mlops_feedback_squared_error_total{{{stable}}} offset 90s" in q
    shadow = promql.query(
        "ml", "iris", window_seconds=None, canary=CanaryWindow("v2", 9, shadow=True, stable="v1")
    )
    assert 'track="stable",version="v1"' not in shadow and "mlops_feedback_rows_total" not in shadow
    assert 'track="stable",version' not in promql.query(
        "ml", "iris", window_seconds=None, canary=CanaryWindow("v2", 9)
    )


def test_labelled_rows_of_both_tracks() -> None:
    found = promql.signals(
        [
            s("canary_pods", 1, pod="c1"),
            s("canary_feedback_rows", 30.0, outcome="correct"),
            s("canary_feedback_rows", 10.0, outcome="incorrect"),
            s("canary_feedback_abs_error", math.nan),  # a classifier's error sums: no series
            s("stable_feedback_rows", 88.6, outcome="correct"),  # not a count (a scaled counter)
            s("stable_feedback_rows", 2.2, outcome="incorrect"),
        ]
    )
    stats = promql.canary_stats(found.canary)
    assert stats.canary_labelled == Labelled(correct=30, incorrect=10)
    assert stats.stable_labelled == Labelled(correct=88.6, incorrect=2.2)
    assert (stats.canary_labelled.n, stats.stable_labelled.n) == (40, 91)
    regression = promql.signals(
        [
            s("stable_feedback_rows", 4.0, outcome="scored"),
            s("stable_feedback_abs_error", 6.0),
            s("stable_feedback_squared_error", 10.0),
        ]
    )
    assert promql.canary_stats(regression.canary).stable_labelled == Labelled(
        scored=4, abs_error=6.0, squared_error=10.0
    )
