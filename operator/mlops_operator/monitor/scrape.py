"""Prometheus text from the serving pods -> `status.metrics` of an InferenceService.

The serving pods' exposition is a contract (mlops_server.monitoring):

    mlops_requests_total{model,version,protocol,code}         counter
    mlops_request_duration_seconds{model,version}             histogram (_bucket{le}, _count, _sum)
    mlops_drift_psi{model,version,feature}                    gauge, PSI per feature
    mlops_prediction_drift_psi{model,version}                 gauge
    mlops_drift_score{model,version}                          gauge, max feature PSI
    mlops_drift_window_rows{model,version}                    gauge
    mlops_feedback_samples{model,version}                     gauge, labelled rows
    mlops_feedback_accuracy / mlops_feedback_rmse{model,version}  gauge (NaN before feedback)
    mlops_estimated_accuracy{model,version}                   gauge, confidence-based estimate (issue #22)
    mlops_shadow_pairs_total{model,version,challenger,outcome}     counter, labelled pairs by outcome
    mlops_shadow_abs_error_total{model,version,challenger,side}    counter, regression absolute errors
    mlops_shadow_rows_total{model,version,challenger,agreement}    counter, mirrored rows agree/disagree
    mlops_feedback_rows_total{model,version,outcome}          counter, labelled rows the pod served
    mlops_feedback_abs_error_total / _squared_error_total{model,version}  counter (regression)

Flow: `parse(text, pod)` per pod -> `aggregate(samples, previous)` -> (metrics, totals). Keep
the returned `PodTotals` in memory (e.g. kopf memo) and pass it back at the next scrape; it is
the only state. Rules:

- Counters and histograms are differenced per pod against `previous`. A counter that went
  down means the pod's server restarted: its whole current value counts as the delta. A pod
  not in `previous` (new) contributes its whole value; a pod gone since is simply absent.
  With `previous=None` (first scrape, or after an operator restart) the deltas are the
  lifetime values.
- `requests` is the running total of those deltas (so it does not drop when pods roll);
  `error_rate` (5xx share) and `latency_p50_ms`/`latency_p95_ms` describe the interval since
  the previous scrape only, and are absent when no request arrived in it.
- Quantiles are interpolated linearly inside cumulative buckets (as PromQL's
  histogram_quantile); a rank in the +Inf bucket reports the highest finite bound.
- Drift: per feature, the window-row-weighted mean PSI over pods (pods with an empty window
  carry no evidence and are skipped); `drift` = the largest of those. Accuracy: mean weighted by
  labelled samples; RMSE: sqrt of the sample-weighted mean square. NaN gauges are ignored.
- Shadow mode: `shadow_counts(samples, challenger)` sums the champion pods' shadow counters of
  one challenger version as they stand (no differencing: the label names the challenger, so a
  new one starts from zero; a restarted pod's pairs are lost, which only lowers n).
- For a canary, aggregate only the canary pods' samples with their own PodTotals (started
  from None when the canary starts) and read `canary_stats(totals)`.
- The split canary's label comparison (issue #22) needs the stable track's labelled rows since
  the analysis started too; its pods served before, so `track_totals` starts them from their
  current counters (a baseline, nothing counted) and differences them as `advance` does; pods
  added later count whole. After an operator restart the baseline is taken again: the stable
  rows labelled before it are lost, which only lowers n. `canary_stats(canary, stable)`.

`rounded` and `changed` make status writes happen only on real changes (3 significant
digits, at most 4 decimals; counts of 1000 and more to 3 significant digits).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from mlops_contract.api.inferenceservice import Metrics
from mlops_operator.serving.canary import CanaryStats
from mlops_operator.serving.shadow import ShadowCounts
from mlops_operator.serving.verdict import Labelled
from mlops_operator.status import numbers

Buckets = tuple[tuple[float, float], ...]  # (upper bound `le`, cumulative count), sorted by le

SIGNIFICANT_DIGITS: Final = 3
MAX_DECIMALS: Final = 4
COUNT_FIELDS: Final = frozenset({"requests", "labelled_samples", "drift_breaches"})
# Fields `changed` ignores: the scrape time itself, and the drift trigger's breach count, which
# status.metrics carries but a scrape never produces (comparing it would make every scrape of a
# service with retraining look like a change: a status write per interval, issue #8).
VOLATILE_FIELDS: Final = frozenset({"last_scrape", "drift_breaches"})

_GAUGES: Final = frozenset(
    {
        "mlops_prediction_drift_psi",
        "mlops_drift_score",
        "mlops_drift_window_rows",
        "mlops_feedback_samples",
        "mlops_feedback_accuracy",
        "mlops_feedback_rmse",
        "mlops_estimated_accuracy",
    }
)


@dataclass(frozen=True)
class PodSample:
    """One pod's scrape. Counters are raw cumulative values; gauges are None when absent or NaN."""

    pod: str = ""
    requests: float = 0.0
    errors: float = 0.0
    buckets: Buckets = ()
    feature_psi: Mapping[str, float] = field(default_factory=dict)
    prediction_psi: float | None = None
    drift_score: float | None = None
    window_rows: float | None = None
    feedback_samples: float | None = None
    accuracy: float | None = None
    rmse: float | None = None
    estimated_accuracy: float | None = None
    versions: frozenset[str] = frozenset()
    # Shadow counters: (kind, challenger, key) -> value; kind is pairs, abs_error or rows.
    shadow: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    # Feedback counters (serving.verdict.LABELLED_KEYS): correct, incorrect, scored, abs_error, squared_error.
    labelled: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Counters:
    """The counters of one pod at one scrape (or a delta of them)."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: Buckets = ()
    labelled: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PodTotals:
    """State between scrapes: each pod's last raw counters, and the running totals of deltas."""

    pods: Mapping[str, Counters] = field(default_factory=dict)
    requests: float = 0.0
    errors: float = 0.0
    buckets: Buckets = ()
    labelled: Mapping[str, float] = field(default_factory=dict)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _max(old: float | None, new: float) -> float | None:
    value = _finite(new)
    if value is None:
        return old
    return value if old is None else max(old, value)


def parse(text: str, pod: str = "") -> PodSample:
    """Parse one pod's /metrics text. Raises ValueError on malformed exposition.

    A pod exports one model version; should it export several series of a gauge, the largest
    value is kept (counters and histograms are summed).
    """
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    psi: dict[str, float] = {}
    gauges: dict[str, float | None] = {}
    versions: set[str] = set()
    shadow: dict[tuple[str, str, str], float] = {}
    labelled: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, float(sample.value)
            if name.startswith("mlops_") and "version" in labels:
                versions.add(labels["version"])
            if name == "mlops_requests_total":
                requests += value
                if labels.get("code", "").startswith("5"):
                    errors += value
            elif name == "mlops_request_duration_seconds_bucket":
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + value
            elif name == "mlops_drift_psi" and "feature" in labels:
                merged = _max(psi.get(labels["feature"]), value)
                if merged is not None:
                    psi[labels["feature"]] = merged
            elif name in _GAUGES:
                gauges[name] = _max(gauges.get(name), value)
            elif (key := _shadow_key(name, labels)) is not None:
                shadow[key] = shadow.get(key, 0.0) + value
            elif (kind := _labelled_key(name, labels)) is not None and math.isfinite(value):
                labelled[kind] = labelled.get(kind, 0.0) + value
    return PodSample(
        pod=pod,
        requests=requests,
        errors=errors,
        buckets=tuple(sorted(buckets.items())),
        feature_psi=psi,
        prediction_psi=gauges.get("mlops_prediction_drift_psi"),
        drift_score=gauges.get("mlops_drift_score"),
        window_rows=gauges.get("mlops_drift_window_rows"),
        feedback_samples=gauges.get("mlops_feedback_samples"),
        accuracy=gauges.get("mlops_feedback_accuracy"),
        rmse=gauges.get("mlops_feedback_rmse"),
        estimated_accuracy=gauges.get("mlops_estimated_accuracy"),
        versions=frozenset(versions),
        shadow=shadow,
        labelled=labelled,
    )


# Feedback counter -> its key in `labelled` (the rows' is their outcome label).
_LABELLED: Final = {
    "mlops_feedback_abs_error_total": "abs_error",
    "mlops_feedback_squared_error_total": "squared_error",
}


def _labelled_key(name: str, labels: Mapping[str, str]) -> str | None:
    if name == "mlops_feedback_rows_total":
        return labels.get("outcome")
    return _LABELLED.get(name)


# Shadow counter -> (kind, the label holding the key). mlops_shadow_requests_total (lifetime,
# over every challenger) is for dashboards; the analysis reads the challenger's own requests.
_SHADOW: Final = {
    "mlops_shadow_pairs_total": ("pairs", "outcome"),
    "mlops_shadow_abs_error_total": ("abs_error", "side"),
    "mlops_shadow_error_products_total": ("products", "term"),
    "mlops_shadow_rows_total": ("rows", "agreement"),
}


def _shadow_key(name: str, labels: Mapping[str, str]) -> tuple[str, str, str] | None:
    kind = _SHADOW.get(name)
    if kind is None or kind[1] not in labels:
        return None
    return kind[0], labels.get("challenger", ""), labels[kind[1]]


def shadow_counts(samples: Iterable[PodSample], challenger: str) -> ShadowCounts:
    """The champion pods' shadow counters for `challenger` (a ModelVersion name), summed."""
    totals: dict[tuple[str, str, str], float] = {}
    for sample in samples:
        for key, value in sample.shadow.items():
            if key[1] == challenger and math.isfinite(value):
                totals[key] = totals.get(key, 0.0) + value

    def of(kind: str) -> dict[str, float]:
        return {
            k: v for (kd, c, k), v in totals.items() if kd == kind and (c == challenger or kind == "requests")
        }

    rows = of("rows")
    return ShadowCounts(
        pairs=of("pairs"),
        abs_error=of("abs_error"),
        products=of("products"),
        agree=rows.get("agree", 0.0),
        disagree=rows.get("disagree", 0.0),
    )


def _monotonic(buckets: Iterable[tuple[float, float]]) -> Buckets:
    """Sorted by le, counts never decreasing (guards against skew between series)."""
    out: list[tuple[float, float]] = []
    running = 0.0
    for le, count in sorted(buckets):
        running = max(running, count)
        out.append((le, running))
    return tuple(out)


def _delta(current: Counters, previous: Counters | None) -> Counters:
    if previous is None:
        return current
    reset = (
        current.requests < previous.requests
        or current.errors < previous.errors
        or any(v < previous.labelled.get(k, 0.0) for k, v in current.labelled.items())
        or [le for le, _ in current.buckets] != [le for le, _ in previous.buckets]
        or any(c < p for (_, c), (_, p) in zip(current.buckets, previous.buckets, strict=True))
    )
    if reset:
        return current
    return Counters(
        requests=current.requests - previous.requests,
        errors=current.errors - previous.errors,
        buckets=tuple((le, c - p) for (le, c), (_, p) in zip(current.buckets, previous.buckets, strict=True)),
        labelled={k: v - previous.labelled.get(k, 0.0) for k, v in current.labelled.items()},
    )


def merge_buckets(histograms: Iterable[Buckets]) -> Buckets:
    """Sum cumulative histograms over the bounds they all share (equal bounds by contract)."""
    present = [h for h in histograms if h]
    if not present:
        return ()
    shared = set.intersection(*({le for le, _ in h} for h in present))
    totals = dict.fromkeys(shared, 0.0)
    for h in present:
        for le, count in h:
            if le in totals:
                totals[le] += count
    return _monotonic(totals.items())


def quantile(buckets: Buckets, q: float) -> float | None:
    """The q-quantile (0 < q < 1) of a cumulative histogram, interpolated linearly; None if empty."""
    if not buckets:
        return None
    ordered = _monotonic(buckets)
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def _weighted(pairs: Iterable[tuple[float | None, float | None]]) -> float | None:
    """Mean of values weighted by their weights; a missing weight counts 1, a zero weight skips."""
    num = den = 0.0
    for value, weight in pairs:
        if value is None:
            continue
        w = 1.0 if weight is None else weight
        if w > 0:
            num += value * w
            den += w
    return num / den if den > 0 else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def advance(current: Mapping[str, Counters], previous: PodTotals | None) -> tuple[PodTotals, Counters]:
    """Each pod's counters now (pod name -> raw cumulative counters) against `previous` ->
    (the new totals, the interval's deltas summed over pods). See the module docstring for resets,
    new pods and `previous=None`; monitor.promql keeps its totals the same way."""
    known = previous.pods if previous is not None else {}
    deltas = [_delta(counters, known.get(pod)) for pod, counters in current.items()]
    interval = Counters(
        requests=sum(d.requests for d in deltas),
        errors=sum(d.errors for d in deltas),
        buckets=merge_buckets(d.buckets for d in deltas),
        labelled=_summed(d.labelled for d in deltas),
    )
    base = previous or PodTotals()
    totals = PodTotals(
        pods=dict(current),
        requests=base.requests + interval.requests,
        errors=base.errors + interval.errors,
        buckets=merge_buckets([base.buckets, interval.buckets]),
        labelled=_summed([base.labelled, interval.labelled]),
    )
    return totals, interval


def _summed(counts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for one in counts:
        for key, value in one.items():
            out[key] = out.get(key, 0.0) + value
    return out


def _counters(sample: PodSample) -> Counters:
    return Counters(sample.requests, sample.errors, _monotonic(sample.buckets), sample.labelled)


def track_totals(samples: Sequence[PodSample], previous: PodTotals | None) -> PodTotals:
    """The running totals of a track whose pods served before its analysis started (the split
    canary's stable track): without `previous`, the pods' counters now are the baseline and
    nothing is counted yet; then as `advance` (a new pod counts whole)."""
    current = {s.pod: _counters(s) for s in samples}
    if previous is None:
        return PodTotals(pods=current)
    return advance(current, previous)[0]


def aggregate(samples: Sequence[PodSample], previous: PodTotals | None) -> tuple[dict[str, Any], PodTotals]:
    """Combine one scrape of every pod into status metrics (snake_case `Metrics` fields) and new totals.

    Pod names must be unique (they key the per-pod counters). Keys with no value are omitted;
    `drift_breaches` and `last_scrape` are for the caller to add.
    """
    names = [s.pod for s in samples]
    if len(set(names)) != len(names):
        raise ValueError(f"pod names must be unique, got {sorted(names)}")
    totals, interval = advance({s.pod: _counters(s) for s in samples}, previous)
    interval_requests, interval_errors, interval_buckets = (
        interval.requests,
        interval.errors,
        interval.buckets,
    )

    metrics: dict[str, Any] = {"requests": round(totals.requests)}
    if interval_requests > 0:
        metrics["error_rate"] = interval_errors / interval_requests
    p50, p95 = _ms(quantile(interval_buckets, 0.5)), _ms(quantile(interval_buckets, 0.95))
    if p50 is not None and p95 is not None:
        metrics["latency_p50_ms"] = p50
        metrics["latency_p95_ms"] = p95

    features = sorted({f for s in samples for f in s.feature_psi})
    by_feature: dict[str, float] = {}
    for feature in features:
        value = _weighted((s.feature_psi.get(feature), s.window_rows) for s in samples)
        if value is not None:
            by_feature[feature] = value
    if by_feature:
        metrics["drift_by_feature"] = by_feature
        metrics["drift"] = max(by_feature.values())
    else:
        drift = _weighted((s.drift_score, s.window_rows) for s in samples)
        if drift is not None:
            metrics["drift"] = drift
    prediction_drift = _weighted((s.prediction_psi, s.window_rows) for s in samples)
    if prediction_drift is not None:
        metrics["prediction_drift"] = prediction_drift

    labelled = [s.feedback_samples for s in samples if s.feedback_samples is not None]
    if labelled:
        metrics["labelled_samples"] = round(sum(labelled))
    accuracy = _weighted((s.accuracy, s.feedback_samples) for s in samples)
    if accuracy is not None:
        metrics["accuracy"] = accuracy
    mean_square = _weighted((None if s.rmse is None else s.rmse**2, s.feedback_samples) for s in samples)
    if mean_square is not None:
        metrics["rmse"] = math.sqrt(mean_square)
    estimated = _weighted((s.estimated_accuracy, s.window_rows) for s in samples)
    if estimated is not None:
        metrics["estimated_accuracy"] = estimated
    return metrics, totals


def canary_stats(totals: PodTotals, stable: PodTotals | None = None) -> CanaryStats:
    """The canary's statistics since its PodTotals started (requests, 5xx errors, p95, labelled
    rows) and the stable track's labelled rows since `stable` started (`track_totals`)."""
    return CanaryStats(
        requests=round(totals.requests),
        errors=round(totals.errors),
        p95_ms=_ms(quantile(totals.buckets, 0.95)),
        canary_labelled=Labelled.of(totals.labelled),
        stable_labelled=Labelled.of(stable.labelled if stable is not None else {}),
    )


def _round(value: float) -> float:
    return numbers.significant(value, SIGNIFICANT_DIGITS, MAX_DECIMALS)


def _round_count(value: int) -> int:
    if abs(value) < 10**SIGNIFICANT_DIGITS:
        return value
    return round(value, SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(value))))


def rounded(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """Metrics (snake_case or camelCase keys, e.g. status.metrics) rounded, as snake_case.

    Floats to 3 significant digits but at most 4 decimals; counts below 1000 exact, above
    to 3 significant digits; strings untouched. `Metrics.model_validate(r).to_dict()` gives
    the camelCase status form.
    """
    parsed = Metrics.model_validate(dict(metrics or {})).model_dump(exclude_none=True)
    out: dict[str, Any] = {}
    for key, value in parsed.items():
        if key in COUNT_FIELDS and isinstance(value, int):
            out[key] = _round_count(value)
        elif isinstance(value, float):
            out[key] = _round(value)
        elif isinstance(value, dict):
            out[key] = {k: _round(v) for k, v in sorted(value.items())}
        else:
            out[key] = value
    return out


def due(now: datetime, interval_seconds: float, *previous: datetime | None) -> bool:
    """Whether the next scrape is due: `interval_seconds` (less 10% for timer jitter) have passed
    since the latest of the `previous` scrape times (None entries ignored; none known: due).

    Pass the time kept in memory as well as status.metrics.lastScrape: the status records only
    scrapes that changed a value, so on its own every reconcile of an idle service would scrape
    (and a drift breach, counted per scrape, would be counted on every wake-up).
    """
    known = [t for t in previous if t is not None]
    return not known or (now - max(known)).total_seconds() >= interval_seconds * 0.9


def changed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Whether `new` differs from `old` once both are rounded (VOLATILE_FIELDS ignored)."""

    def comparable(m: Mapping[str, Any] | None) -> dict[str, Any]:
        return {k: v for k, v in rounded(m).items() if k not in VOLATILE_FIELDS}

    return comparable(old) != comparable(new)
