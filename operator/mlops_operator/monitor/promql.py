"""PromQL -> `status.metrics` of an InferenceService: the source `spec.monitoring.prometheusUrl`
selects instead of scraping the pods (issue #21). Pure: the query is built here, the answer of
Prometheus' /api/v1/query is parsed here, and the reconciler (reconcile/inferenceservice.py) does
the one HTTP request in between (mlops_operator.prometheus).

One query per pass, whatever the number of pods: every signal is an expression tagged with a
`signal` label (label_replace) and the expressions are joined with `or`, so one instant query
answers them all. Series are selected by the labels the shipped PodMonitor (and the e2e tier's
Prometheus, tests/cluster/local/prometheus.sh) put on the serving pods' series:
`namespace`, `pod`, `inference_service`, `track` (stable, canary), plus the server's own `version`
(the ModelVersion name). The semantics mirror monitor.scrape's:

- `requests` and `error_rate` (5xx share): from each pod's last request counters in the window
  (all codes, 5xx), differenced against the previous query's per pod exactly as the pod scraper
  does (monitor.scrape.advance, the same PodTotals): `requests` is the running total, `error_rate`
  the share since the previous query (absent when no request arrived). So a pod that ended since
  the previous query still counts (the pod scraper misses it), a counter that went down (a
  restarted server) counts whole, and a series that appeared since (the first 5xx of a pod) counts
  whole too, where PromQL's increase() would drop its first value.
- `latency_p50_ms`/`latency_p95_ms`: histogram_quantile over the increase of the request-duration
  histogram (its series exist from the server's start) in the last `window` seconds, absent when
  no request arrived in it. The window is the monitoring interval, at least the operator's
  minimum (increase needs two scrapes of Prometheus). increase() extrapolates each pod's series to
  the window's ends, so the quantiles agree with the pod scraper's only approximately.
- drift per feature: the window-row-weighted mean PSI over the live pods (pods with an empty
  window weigh nothing), `drift` the largest of them, else the weighted drift score; prediction
  drift the same way. Accuracy: the mean weighted by labelled samples; RMSE: the root of the
  sample-weighted mean square; NaN gauges (no feedback yet) are dropped (`x == x`).
- the canary analysis: the canary pods of the version under analysis, since the analysis started
  (each pod's last counter values and histogram in that window, the pods being that old), as
  monitor.scrape.canary_stats gives from the pods. In shadow mode (issue #22) also the stable
  pods' shadow counters for that challenger version (pairs by outcome, absolute errors by side,
  rows by agreement), summed over the pods as monitor.scrape.shadow_counts does. In split mode
  (issue #22) also both tracks' labelled rows since the analysis started: the canary pods' last
  feedback counters in the window (they are that old, as their requests), and the stable pods'
  of the served version less their values when the window began (they served before it; a
  series born since counts whole, as the pod scraper's new pods; a counter reset in the window,
  a restarted stable pod, loses that pod's rows where the pod scraper counts them whole).

No data (no serving pod of the service has a series) is a result of its own (`Signals.seen` is
empty), so the caller can hold its decisions instead of reading zeros.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from mlops_operator.monitor.scrape import Counters, PodTotals, advance
from mlops_operator.serving.canary import CanaryStats
from mlops_operator.serving.shadow import ShadowCounts
from mlops_operator.serving.verdict import Labelled

# Prometheus' histogram_quantile and rate() need two samples in the range: with the shipped
# PodMonitor's 15 s scrape interval, 60 s holds four (Grafana's $__rate_interval rule).
DEFAULT_MIN_WINDOW_SECONDS: Final = 60
# The canary window is whole seconds since the analysis started, at least this.
MIN_CANARY_WINDOW_SECONDS: Final = 1

Labels = Mapping[str, str]


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector."""

    labels: Labels
    value: float


class BadAnswer(ValueError):
    """The answer is not a Prometheus instant-vector result; `reason` says how (see prometheus.py)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def quote(value: str) -> str:
    """A PromQL string literal (label values are DNS names here, but never trusted to be)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _selector(metric: str, matchers: Mapping[str, str], extra: str = "") -> str:
    inner = ",".join(f"{k}={quote(v)}" for k, v in matchers.items())
    return f"{metric}{{{inner}{',' + extra if extra else ''}}}"


def _tag(expr: str, signal: str) -> str:
    return f'label_replace({expr}, "signal", {quote(signal)}, "", "")'


def _weighted(value: str, weight: str, *, by: str = "", on: str = "") -> str:
    """sum(value * weight) / sum(weight), over the series whose value is not NaN."""
    group = f" by ({by})" if by else ""
    match = f" on ({on}) group_left ()" if on else ""
    kept = f"({value} == {value})"
    return f"(sum{group} ({kept} *{match} {weight}) / sum{group} (({kept} * 0) +{match} {weight}))"


def _weighted_square(value: str, weight: str) -> str:
    kept = f"({value} == {value})"
    return f"(sum (({kept} ^ 2) * {weight}) / sum (({kept} * 0) + {weight}))"


@dataclass(frozen=True)
class CanaryWindow:
    version: str  # the ModelVersion under analysis (the server's `version` label)
    seconds: int  # since the analysis started
    shadow: bool = False  # shadow mode: the stable pods' shadow counters for `version` too
    stable: str | None = None  # split mode: the served version, whose labelled rows are compared


def query(
    namespace: str,
    name: str,
    *,
    window_seconds: int | None,
    versions: Sequence[str] = (),
    canary: CanaryWindow | None = None,
) -> str:
    """The one instant query of a pass: the status.metrics signals (`window_seconds`; None: not
    due this pass) and the canary's (`canary`; None: no canary analysed). `versions` (the
    ModelVersions served; empty: any) select the pods whose gauges count: Prometheus keeps a
    deleted pod's last values current for about two of its scrape intervals, and a replaced
    version's drift must not count towards the new one's drift trigger."""
    if window_seconds is None and canary is None:
        raise ValueError("nothing to query: neither the metrics nor a canary")
    sel = {"namespace": namespace, "inference_service": name}
    parts: list[str] = []
    if window_seconds is not None:
        served = f"version=~{quote('|'.join(re.escape(v) for v in versions))}" if versions else ""
        parts += _metric_parts(sel, max(1, int(window_seconds)), served)
    if canary is not None:
        parts += _canary_parts(sel, canary)
    return "\n  or ".join(parts)


def _metric_parts(sel: Mapping[str, str], window: int, served: str) -> list[str]:
    """Counters and the latency histogram of every pod of the service (the running total must
    not lose a pod's last requests); gauges of the served versions (`served`: a matcher)."""
    w = f"[{window}s]"
    requests = _selector("mlops_requests_total", sel)
    errors = _selector("mlops_requests_total", sel, 'code=~"5.."')
    latency = f"sum by (le) (increase({_selector('mlops_request_duration_seconds_bucket', sel)}{w}))"

    def gauge(metric: str) -> str:
        return _selector(metric, sel, served)

    rows, samples = gauge("mlops_drift_window_rows"), gauge("mlops_feedback_samples")
    return [
        _tag(f"count by (pod) ({gauge('mlops_model_info')})", "pods"),
        _tag(f"sum by (pod) (last_over_time({requests}{w}))", "requests"),
        _tag(f"sum by (pod) (last_over_time({errors}{w}))", "errors"),
        _tag(f"histogram_quantile(0.5, {latency})", "latency_p50"),
        _tag(f"histogram_quantile(0.95, {latency})", "latency_p95"),
        _tag(_weighted(gauge("mlops_drift_psi"), rows, by="feature", on="pod"), "feature_psi"),
        _tag(_weighted(gauge("mlops_drift_score"), rows), "drift_score"),
        _tag(_weighted(gauge("mlops_prediction_drift_psi"), rows), "prediction_drift"),
        _tag(f"sum ({samples})", "labelled_samples"),
        _tag(_weighted(gauge("mlops_feedback_accuracy"), samples), "accuracy"),
        _tag(f"sqrt({_weighted_square(gauge('mlops_feedback_rmse'), samples)})", "rmse"),
        _tag(_weighted(gauge("mlops_estimated_accuracy"), rows), "estimated_accuracy"),
    ]


def _canary_parts(sel: Mapping[str, str], canary: CanaryWindow) -> list[str]:
    csel = {**sel, "track": "canary", "version": canary.version}
    w = f"[{max(MIN_CANARY_WINDOW_SECONDS, int(canary.seconds))}s]"
    requests = _selector("mlops_requests_total", csel)
    errors = _selector("mlops_requests_total", csel, 'code=~"5.."')
    buckets = _selector("mlops_request_duration_seconds_bucket", csel)
    return [
        _tag(f"count by (pod) (last_over_time({_selector('mlops_model_info', csel)}{w}))", "canary_pods"),
        _tag(f"sum (last_over_time({requests}{w}))", "canary_requests"),
        _tag(f"sum (last_over_time({errors}{w}))", "canary_errors"),
        _tag(
            f"histogram_quantile(0.95, sum by (le) (last_over_time({buckets}{w})))",
            "canary_latency_p95",
        ),
        *(_shadow_parts(sel, canary, w) if canary.shadow else _split_parts(sel, csel, canary, w)),
    ]


def _split_parts(sel: Mapping[str, str], csel: Mapping[str, str], canary: CanaryWindow, w: str) -> list[str]:
    """Both tracks' labelled rows since the analysis started (the stable track's only when the
    served version is known)."""
    ssel = {**sel, "track": "stable", "version": canary.stable} if canary.stable else None
    stable = _feedback_parts(ssel, "stable", w, since_start=True) if ssel else []
    return [*_feedback_parts(csel, "canary", w), *stable]


# Feedback counters (issue #22) -> the signal's suffix; the rows are summed by outcome.
FEEDBACK_COUNTERS: Final = {
    "feedback_rows": "mlops_feedback_rows_total",
    "feedback_abs_error": "mlops_feedback_abs_error_total",
    "feedback_squared_error": "mlops_feedback_squared_error_total",
}


def _feedback_parts(tsel: Mapping[str, str], track: str, w: str, *, since_start: bool = False) -> list[str]:
    """A track's labelled rows (by outcome) and error sums: each pod's last counter values in
    the window `w`, less (`since_start`) their values when it began (0 for a series born
    since). Not increase(): it extrapolates to the window's ends, 60 % over on a few seconds
    of traffic, where this is exact but for a counter reset in the window (clamped at 0)."""
    parts = []
    for key, metric in FEEDBACK_COUNTERS.items():
        selector = _selector(metric, tsel)
        value = f"last_over_time({selector}{w})"
        if since_start:
            start = f"({selector} offset {w[1:-1]}) or ({value} * 0)"
            value = f"clamp_min({value} - ({start}), 0)"
        parts.append(
            _tag(f"sum{' by (outcome)' if key == 'feedback_rows' else ''} ({value})", f"{track}_{key}")
        )
    return parts


# Shadow counters -> the label that holds their key (see monitor.scrape._SHADOW).
SHADOW_COUNTERS: Final = {
    "shadow_pairs": ("mlops_shadow_pairs_total", "outcome"),
    "shadow_abs_error": ("mlops_shadow_abs_error_total", "side"),
    "shadow_products": ("mlops_shadow_error_products_total", "term"),
    "shadow_rows": ("mlops_shadow_rows_total", "agreement"),
}


def _shadow_parts(sel: Mapping[str, str], canary: CanaryWindow, w: str) -> list[str]:
    ssel = {**sel, "track": "stable", "challenger": canary.version}
    return [
        _tag(f"sum by ({key}) (last_over_time({_selector(metric, ssel)}{w}))", signal)
        for signal, (metric, key) in SHADOW_COUNTERS.items()
    ]


# --- the answer -------------------------------------------------------------------------------


def parse_response(body: bytes) -> list[Sample]:
    """The instant vector of a /api/v1/query answer; raises BadAnswer (reason `query` for an
    error Prometheus reports, `malformed` for anything else)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadAnswer("malformed", f"not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise BadAnswer("malformed", "not a JSON object")
    if doc.get("status") != "success":
        kind, error = doc.get("errorType") or "error", doc.get("error") or "no error message"
        raise BadAnswer("query", f"{kind}: {str(error)[:500]}")
    data = doc.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        got = data.get("resultType") if isinstance(data, dict) else type(data).__name__
        raise BadAnswer("malformed", f"expected a vector result, got {got}")
    out: list[Sample] = []
    for item in data.get("result") or []:
        try:
            labels, (_, text) = item["metric"], item["value"]
            out.append(Sample({str(k): str(v) for k, v in labels.items()}, float(text)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BadAnswer("malformed", f"bad vector element {str(item)[:200]}: {e}") from e
    return out


@dataclass(frozen=True)
class CanarySignals:
    pods: frozenset[str] = frozenset()  # canary pods of the version with a series in the window
    requests: float = 0.0
    errors: float = 0.0
    p95_seconds: float | None = None
    # Labelled rows since the analysis started (serving.verdict.Labelled.of keys), per track.
    labelled: Mapping[str, float] = field(default_factory=dict)
    stable_labelled: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Signals:
    """The answer, sorted by signal. Values are None when absent or NaN (e.g. 0/0: no request)."""

    seen: frozenset[str] = frozenset()  # the pods with series (none: no data)
    requests: Mapping[str, float] = field(default_factory=dict)  # pod -> counter (last in window)
    errors: Mapping[str, float] = field(default_factory=dict)
    p50_seconds: float | None = None
    p95_seconds: float | None = None
    feature_psi: Mapping[str, float] = field(default_factory=dict)
    drift_score: float | None = None
    prediction_drift: float | None = None
    labelled_samples: float | None = None
    accuracy: float | None = None
    rmse: float | None = None
    estimated_accuracy: float | None = None  # issue #22, weighted by window rows as the pod path
    canary: CanarySignals = field(default_factory=CanarySignals)
    shadow: ShadowCounts = field(default_factory=ShadowCounts)


_SCALARS: Final = {
    "latency_p50": "p50_seconds",
    "latency_p95": "p95_seconds",
    "drift_score": "drift_score",
    "prediction_drift": "prediction_drift",
    "labelled_samples": "labelled_samples",
    "accuracy": "accuracy",
    "rmse": "rmse",
    "estimated_accuracy": "estimated_accuracy",
}


def signals(samples: Iterable[Sample]) -> Signals:
    """Sort an answer by its `signal` label; unknown signals are ignored, NaN is absence."""
    per_pod: dict[str, dict[str, float]] = {"pods": {}, "requests": {}, "errors": {}, "canary_pods": {}}
    scalars: dict[str, float] = {}
    psi: dict[str, float] = {}
    shadow: dict[str, dict[str, float]] = {signal: {} for signal in SHADOW_COUNTERS}
    rows: dict[str, dict[str, float]] = {"canary_feedback_rows": {}, "stable_feedback_rows": {}}
    for s in samples:
        signal, value = s.labels.get("signal", ""), s.value
        if math.isnan(value):
            continue
        if signal in rows:
            rows[signal][s.labels.get("outcome", "")] = value
        elif signal in shadow:
            shadow[signal][s.labels.get(SHADOW_COUNTERS[signal][1], "")] = value
        elif signal in per_pod:
            per_pod[signal][s.labels.get("pod", "")] = value
        elif signal == "feature_psi" and "feature" in s.labels:
            psi[s.labels["feature"]] = value
        elif signal in _SCALARS or signal.startswith(("canary_", "stable_")):
            scalars[signal] = value

    def labelled(track: str) -> dict[str, float]:
        sums = {key: scalars.get(f"{track}_feedback_{key}", 0.0) for key in ("abs_error", "squared_error")}
        return {**rows[f"{track}_feedback_rows"], **sums}

    canary = CanarySignals(
        pods=frozenset(per_pod["canary_pods"]),
        requests=scalars.get("canary_requests", 0.0),
        errors=scalars.get("canary_errors", 0.0),
        p95_seconds=scalars.get("canary_latency_p95"),
        labelled=labelled("canary"),
        stable_labelled=labelled("stable"),
    )
    return Signals(
        seen=frozenset(per_pod["pods"]) | frozenset(per_pod["requests"]),
        requests=per_pod["requests"],
        errors=per_pod["errors"],
        feature_psi=psi,
        canary=canary,
        shadow=ShadowCounts(
            pairs=shadow["shadow_pairs"],
            abs_error=shadow["shadow_abs_error"],
            products=shadow["shadow_products"],
            agree=shadow["shadow_rows"].get("agree", 0.0),
            disagree=shadow["shadow_rows"].get("disagree", 0.0),
        ),
        **{attr: scalars.get(signal) for signal, attr in _SCALARS.items()},
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or math.isinf(seconds) else seconds * 1000.0


def metrics(found: Signals, previous: PodTotals | None) -> tuple[dict[str, Any], PodTotals]:
    """status.metrics (snake_case `Metrics` fields, as monitor.scrape.aggregate gives) and the
    totals to pass back next time. Keys with no value are omitted."""
    current = {
        pod: Counters(requests=value, errors=found.errors.get(pod, 0.0))
        for pod, value in found.requests.items()
    }
    totals, interval = advance(current, previous)
    out: dict[str, Any] = {"requests": round(totals.requests)}
    if interval.requests > 0:
        out["error_rate"] = interval.errors / interval.requests
    p50, p95 = _ms(found.p50_seconds), _ms(found.p95_seconds)
    values: Sequence[tuple[str, float | None]] = (
        ("latency_p50_ms", p50 if p95 is not None else None),
        ("latency_p95_ms", p95 if p50 is not None else None),
        ("prediction_drift", found.prediction_drift),
        ("accuracy", found.accuracy),
        ("rmse", found.rmse),
        ("estimated_accuracy", found.estimated_accuracy),
    )
    out.update({key: value for key, value in values if value is not None})
    if found.feature_psi:
        out["drift_by_feature"] = dict(sorted(found.feature_psi.items()))
        out["drift"] = max(found.feature_psi.values())
    elif found.drift_score is not None:
        out["drift"] = found.drift_score
    if found.labelled_samples is not None:
        out["labelled_samples"] = round(found.labelled_samples)
    return out, totals


def canary_stats(found: CanarySignals) -> CanaryStats:
    """What the canary pods served since the analysis started (monitor.scrape.canary_stats' shape)."""
    return CanaryStats(
        requests=round(found.requests),
        errors=round(found.errors),
        p95_ms=_ms(found.p95_seconds),
        canary_labelled=Labelled.of(found.labelled),
        stable_labelled=Labelled.of(found.stable_labelled),
    )
