"""Monitoring state: the Prometheus registry, drift windows and the labelled-feedback store.

Metric names and labels are a contract with the operator's scraper (see the issue); they are
all defined in `Metrics` and nowhere else. Drift gauges are computed lazily, on scrape, from
sliding windows that the batch path fills with one vectorised copy per batch.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mlops_contract import drift, stats
from mlops_server.codec import Array

DURATION_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LABELS: Final = ("model", "version")
# Rows the drift window must hold before the accuracy estimate is reported (issue #22).
ESTIMATE_MIN_ROWS: Final = 50


def _prediction_buckets(reference: Mapping[str, Any] | None) -> tuple[float, ...]:
    # The training predictions' decile edges make the histogram comparable with the reference.
    edges = reference.get("edges") if isinstance(reference, Mapping) else None
    if isinstance(edges, list) and edges:
        return (*sorted({float(e) for e in edges}), math.inf)
    return Histogram.DEFAULT_BUCKETS


class Metrics:
    def __init__(
        self,
        model: str,
        version: str,
        sha256: str,
        *,
        features: Sequence[str],
        classification: bool,
        prediction_reference: Mapping[str, Any] | None = None,
        calibrated: bool = False,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        reg = self.registry
        self.model = model
        self.version = version
        self.classification = classification
        self.requests = Counter(
            "mlops_requests_total",
            "Inference requests by protocol and HTTP status.",
            [*LABELS, "protocol", "code"],
            registry=reg,
        )
        self.duration = Histogram(
            "mlops_request_duration_seconds",
            "Inference request latency.",
            LABELS,
            buckets=DURATION_BUCKETS,
            registry=reg,
        ).labels(model, version)
        self.batch_size = Histogram(
            "mlops_batch_size", "Rows per model call.", LABELS, buckets=BATCH_BUCKETS, registry=reg
        ).labels(model, version)
        self.predictions: Counter | None = None
        self.prediction_value: Histogram | None = None
        if classification:
            self.predictions = Counter(
                "mlops_predictions_total", "Predicted rows by class.", [*LABELS, "class"], registry=reg
            )
        else:
            self.prediction_value = Histogram(
                "mlops_prediction_value",
                "Predicted values.",
                LABELS,
                buckets=_prediction_buckets(prediction_reference),
                registry=reg,
            )
        self.feature_psi = Gauge(
            "mlops_drift_psi",
            "PSI of a feature's live window against training.",
            [*LABELS, "feature"],
            registry=reg,
        )
        self.prediction_psi = Gauge(
            "mlops_prediction_drift_psi",
            "PSI of the predictions' live window against training.",
            LABELS,
            registry=reg,
        ).labels(model, version)
        self.drift_score = Gauge("mlops_drift_score", "Largest feature PSI.", LABELS, registry=reg).labels(
            model, version
        )
        self.window_rows = Gauge(
            "mlops_drift_window_rows", "Rows in the drift window.", LABELS, registry=reg
        ).labels(model, version)
        self.feedback_samples = Gauge(
            "mlops_feedback_samples", "Labelled rows in the feedback window.", LABELS, registry=reg
        ).labels(model, version)
        quality_name = "mlops_feedback_accuracy" if classification else "mlops_feedback_rmse"
        quality_help = "Accuracy" if classification else "RMSE"
        self.feedback_quality = Gauge(
            quality_name,
            f"{quality_help} over the feedback window (NaN before any feedback).",
            LABELS,
            registry=reg,
        ).labels(model, version)
        self.feedback_quality.set(math.nan)
        # Labelled rows this pod served, as counters (issue #22): the operator sums them over a
        # track's pods to compare the split canary's tracks. Every series exists from the start
        # (0), so a PromQL baseline at the analysis' start finds each one.
        self.feedback_rows = Counter(
            "mlops_feedback_rows_total",
            "Labelled rows this pod served, by outcome (classification: correct, incorrect; regression: scored).",
            [*LABELS, "outcome"],
            registry=reg,
        )
        outcomes = ("correct", "incorrect") if classification else ("scored",)
        self._feedback_children = {o: self.feedback_rows.labels(model, version, o) for o in outcomes}
        for child in self._feedback_children.values():
            child.inc(0)
        self.feedback_abs_error: Any = None
        self.feedback_squared_error: Any = None
        if not classification:  # regression: sums of the labelled rows' absolute and squared errors
            self.feedback_abs_error, self.feedback_squared_error = (
                Counter(
                    f"mlops_feedback_{kind}_error_total",
                    f"Sum of the {text} errors of the labelled rows this pod served (regression).",
                    LABELS,
                    registry=reg,
                ).labels(model, version)
                for kind, text in (("abs", "absolute"), ("squared", "squared"))
            )
            self.feedback_abs_error.inc(0)
            self.feedback_squared_error.inc(0)
        # Confidence-based accuracy estimate (issue #22), for classifiers with a calibration table.
        self.estimated_accuracy: Any = None
        if calibrated:
            self.estimated_accuracy = Gauge(
                "mlops_estimated_accuracy",
                "Accuracy expected from the drift window's top-class probabilities and the version's "
                f"held-out calibration, before labels (an estimate; NaN before {ESTIMATE_MIN_ROWS} rows).",
                LABELS,
                registry=reg,
            ).labels(model, version)
            self.estimated_accuracy.set(math.nan)
        # Shadow mode (issue #22): counters, so PromQL and the operator can sum them over pods.
        self.shadow_requests = Counter(
            "mlops_shadow_requests_total",
            "Requests mirrored to the challenger, by result (answered, dropped, failed, timeout).",
            [*LABELS, "result"],
            registry=reg,
        )
        self.shadow_pairs = Counter(
            "mlops_shadow_pairs_total",
            "Labelled rows both versions answered, by outcome (classification: both, champion_only, "
            "challenger_only, neither correct; regression: challenger_better, champion_better, tie on "
            "absolute error).",
            [*LABELS, "challenger", "outcome"],
            registry=reg,
        )
        self.shadow_abs_error = Counter(
            "mlops_shadow_abs_error_total",
            "Sum of absolute errors on the labelled pairs (regression), by side (champion, challenger).",
            [*LABELS, "challenger", "side"],
            registry=reg,
        )
        self.shadow_error_products = Counter(
            "mlops_shadow_error_products_total",
            "Sums of products of the two absolute errors on the labelled pairs (regression), by term "
            "(champion_squared, challenger_squared, cross): with the absolute-error sums they give the "
            "paired test of a relative margin.",
            [*LABELS, "challenger", "term"],
            registry=reg,
        )
        self.shadow_rows = Counter(
            "mlops_shadow_rows_total",
            "Mirrored rows by whether both versions predicted the same class (agree, disagree).",
            [*LABELS, "challenger", "agreement"],
            registry=reg,
        )
        Gauge("mlops_model_info", "The served model.", [*LABELS, "sha256"], registry=reg).labels(
            model, version, sha256
        ).set(1)
        self._request_children: dict[tuple[str, int], Any] = {}
        self._shadow_children: dict[Any, Any] = {}
        self._class_children: dict[Any, Any] = {}
        self._feature_children = {name: self.feature_psi.labels(model, version, name) for name in features}

    def count_request(self, protocol: str, code: int, seconds: float) -> None:
        key = (protocol, code)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(
                self.model, self.version, protocol, str(code)
            )
        child.inc()
        self.duration.observe(seconds)

    def observe_batch(self, labels: Array) -> None:
        """Record one model call's size and predictions (called from the batch worker)."""
        self.batch_size.observe(len(labels))
        if self.predictions is not None:
            values, counts = np.unique(labels, return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                child = self._class_children.get(value)
                if child is None:
                    child = self._class_children[value] = self.predictions.labels(
                        self.model, self.version, drift._category_key(value)
                    )
                child.inc(count)
        elif self.prediction_value is not None:
            observe = self.prediction_value.labels(self.model, self.version).observe
            for value in labels.tolist():
                if math.isfinite(value):
                    observe(value)

    def set_drift(self, features: Mapping[str, float], prediction: float, rows: int) -> None:
        for name, value in features.items():
            child = self._feature_children.get(name)
            if child is not None:
                child.set(value)
        self.drift_score.set(max(features.values(), default=0.0))
        self.prediction_psi.set(prediction)
        self.window_rows.set(rows)

    def set_estimate(self, accuracy: float | None) -> None:
        if self.estimated_accuracy is not None:
            self.estimated_accuracy.set(math.nan if accuracy is None else accuracy)

    def set_feedback(self, samples: int, quality: float) -> None:
        self.feedback_samples.set(samples)
        self.feedback_quality.set(quality)

    def count_labelled(self, scores: Sequence[float]) -> None:
        """Count one labelled request's rows (FeedbackStore.label's scores: 1.0/0.0 for a right/
        wrong class, or the absolute error)."""
        if self.classification:
            right = sum(1 for v in scores if v)
            self._feedback_children["correct"].inc(right)
            self._feedback_children["incorrect"].inc(len(scores) - right)
            return
        self._feedback_children["scored"].inc(len(scores))
        self.feedback_abs_error.inc(math.fsum(scores))
        self.feedback_squared_error.inc(math.fsum(v * v for v in scores))

    def count_shadow(self, result: str) -> None:
        child = self._shadow_children.get(result)
        if child is None:  # labels() takes a lock and builds a key: once per result, not per copy
            child = self._shadow_children[result] = self.shadow_requests.labels(
                self.model, self.version, result
            )
        child.inc()

    def count_agreement(self, challenger: str, agree: int, disagree: int) -> None:
        for key, value in (("agree", agree), ("disagree", disagree)):
            if value:
                child = self._shadow_children.get((challenger, key))
                if child is None:
                    child = self._shadow_children[(challenger, key)] = self.shadow_rows.labels(
                        self.model, self.version, challenger, key
                    )
                child.inc(value)

    def count_pairs(self, challenger: str, pairs: PairOutcomes) -> None:
        for outcome, value in pairs.counts.items():
            if value:
                self.shadow_pairs.labels(self.model, self.version, challenger, outcome).inc(value)
        for side, total in (
            ("champion", pairs.champion_abs_error),
            ("challenger", pairs.challenger_abs_error),
        ):
            if total:
                self.shadow_abs_error.labels(self.model, self.version, challenger, side).inc(total)
        for term, total in pairs.products.items():
            if total:
                self.shadow_error_products.labels(self.model, self.version, challenger, term).inc(total)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Window:
    """The last `capacity` rows of a 2-D stream, as a ring buffer written once per batch."""

    def __init__(self, capacity: int, width: int, dtype: Any) -> None:
        self._ring = np.empty((capacity, width), dtype=dtype)
        self._capacity = capacity
        self._pos = 0
        self.rows = 0
        self.generation = 0  # bumps on every write, so readers can cache derived values
        self._lock = threading.Lock()

    def add(self, block: Array) -> None:
        n = len(block)
        cap = self._capacity
        if n >= cap:
            with self._lock:
                self._ring[:] = block[n - cap :]
                self._pos = 0
                self.rows = cap
                self.generation += 1
            return
        with self._lock:
            end = self._pos + n
            if end <= cap:
                self._ring[self._pos : end] = block
            else:
                split = cap - self._pos
                self._ring[self._pos :] = block[:split]
                self._ring[: n - split] = block[split:]
            self._pos = end % cap
            self.rows = min(self.rows + n, cap)
            self.generation += 1

    def snapshot(self) -> Array:
        """The window's rows (in no particular order: PSI only needs the multiset)."""
        with self._lock:
            return self._ring[: self.rows].copy()


class DriftMonitor:
    """Feature and prediction windows against the training reference (`model.json["reference"]`),
    and (issue #22) the live rows' top-class probabilities against the version's calibration table
    (`model.json["calibration"]`): the accuracy to expect before any label arrives."""

    def __init__(
        self,
        reference: Mapping[str, Any] | None,
        features: Sequence[str],
        numeric: bool,
        capacity: int,
        label_dtype: Any,
        *,
        calibration: stats.Calibration | None = None,
    ) -> None:
        ref: Mapping[str, Any] = reference if isinstance(reference, Mapping) else {}
        raw = ref.get("features")
        feature_refs: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        self.features = list(features)
        self.feature_refs = {
            name: feature_refs[name] for name in features if isinstance(feature_refs.get(name), Mapping)
        }
        self.prediction_ref = ref.get("prediction") if isinstance(ref.get("prediction"), Mapping) else None
        self.inputs = Window(capacity, len(features), np.float64 if numeric else object)
        self.predictions = Window(capacity, 1, label_dtype)
        self._cached: tuple[int, dict[str, float], float] | None = None
        self.calibration = calibration
        # Calibration bin of each live row's top-class probability (only with a calibration table).
        self.confidence = Window(capacity, 1, np.int8) if calibration is not None else None
        self._edges = np.asarray(stats.CALIBRATION_EDGES, dtype=np.float64)

    @property
    def wants_proba(self) -> bool:
        """True when every batch's probabilities are needed (for the accuracy estimate)."""
        return self.confidence is not None

    def add(self, frame: Array, labels: Array, proba: Array | None = None) -> None:
        self.inputs.add(frame)
        self.predictions.add(labels.reshape(-1, 1))
        if self.confidence is not None and proba is not None and len(proba):
            # Bin i holds top probabilities in [edges[i-1], edges[i]), as stats.confidence_bin.
            top = proba.max(axis=1)
            bins = np.searchsorted(self._edges, top, side="right").astype(np.int8)
            self.confidence.add(bins.reshape(-1, 1))

    def estimated_accuracy(self) -> tuple[float | None, int]:
        """(expected accuracy of the window's rows from the calibration table, rows)."""
        if self.confidence is None or self.calibration is None:
            return None, 0
        bins = self.confidence.snapshot()[:, 0]
        if len(bins) < ESTIMATE_MIN_ROWS:
            return None, len(bins)
        counts = np.bincount(bins, minlength=len(stats.CALIBRATION_EDGES) + 1).tolist()
        return stats.estimate_accuracy(self.calibration, counts), len(bins)

    def compute(self) -> tuple[dict[str, float], float, int]:
        """(PSI per feature, prediction PSI, rows); recomputed only when the window changed."""
        generation = self.inputs.generation
        if self._cached is not None and self._cached[0] == generation:
            return self._cached[1], self._cached[2], self.inputs.rows
        window = self.inputs.snapshot()
        predictions = self.predictions.snapshot()
        scores: dict[str, float] = {}
        for j, name in enumerate(self.features):
            ref = self.feature_refs.get(name)
            if ref is None:
                continue
            scores[name] = drift.feature_psi(ref, _column(window[:, j], ref)) if len(window) else 0.0
        prediction = 0.0
        if self.prediction_ref is not None and len(predictions):
            prediction = drift.feature_psi(
                self.prediction_ref, _column(predictions[:, 0], self.prediction_ref)
            )
        self._cached = (generation, scores, prediction)
        return scores, prediction, len(window)


def _column(values: Array, ref: Mapping[str, Any]) -> Any:
    if ref.get("kind") == "numeric":
        try:
            return np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            return np.full(len(values), math.nan)
    return values.tolist()


@dataclass(slots=True)
class Served:
    """What the server remembers about an answered request, until it is labelled or evicted."""

    frame: Array
    labels: Array
    labelled: bool = False
    size: int = 0  # bytes the arrays keep alive (see retained_bytes)
    # Shadow mode: the challenger's labels for the same rows, and its version.
    shadow: list[Any] | None = None
    shadow_version: str = ""
    # Once labelled: per row 1.0/0.0 for a right/wrong class, or the absolute error.
    scores: tuple[float, ...] = ()


@dataclass(frozen=True)
class PairOutcomes:
    """Labelled rows both versions answered (issue #22): classification counts by who was right
    (both, champion_only, challenger_only, neither); regression by whose absolute error was
    smaller (challenger_better, champion_better, tie), with both sums of absolute errors."""

    counts: Mapping[str, int]
    champion_abs_error: float = 0.0
    challenger_abs_error: float = 0.0
    # Regression: sums of squared champion, squared challenger and champion x challenger absolute errors.
    products: Mapping[str, float] = field(default_factory=dict)


def score_pairs(
    classification: bool, champion: Sequence[Any], challenger: Sequence[Any], truth: Sequence[Any]
) -> PairOutcomes:
    """Score both versions' predictions of the same rows against the labels."""
    if classification:
        counts = dict.fromkeys(("both", "champion_only", "challenger_only", "neither"), 0)
        key = drift._category_key
        for a, b, y in zip(champion, challenger, truth, strict=True):
            right_a, right_b = key(a) == key(y), key(b) == key(y)
            outcome = (
                ("both" if right_b else "champion_only")
                if right_a
                else ("challenger_only" if right_b else "neither")
            )
            counts[outcome] += 1
        return PairOutcomes(counts)
    counts = dict.fromkeys(("challenger_better", "champion_better", "tie"), 0)
    total_a = total_b = square_a = square_b = cross = 0.0
    for a, b, y in zip(champion, challenger, truth, strict=True):
        err_a, err_b = abs(float(a) - float(y)), abs(float(b) - float(y))
        total_a += err_a
        total_b += err_b
        square_a += err_a * err_a
        square_b += err_b * err_b
        cross += err_a * err_b
        counts[
            "tie" if err_a == err_b else ("challenger_better" if err_b < err_a else "champion_better")
        ] += 1
    products = {"champion_squared": square_a, "challenger_squared": square_b, "cross": cross}
    return PairOutcomes(counts, total_a, total_b, products)


def agreement(classification: bool, champion: Sequence[Any], challenger: Sequence[Any]) -> tuple[int, int]:
    """(rows predicted alike, rows predicted differently); (0, 0) for regression."""
    if not classification:
        return 0, 0
    key = drift._category_key
    agree = sum(1 for a, b in zip(champion, challenger, strict=True) if key(a) == key(b))
    return agree, len(champion) - agree


class FeedbackError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def retained_bytes(array: Array) -> int:
    """Bytes an array keeps alive: its own, or all of the buffer it is a view of."""
    base = array.base
    if isinstance(base, np.ndarray):
        return max(array.nbytes, base.nbytes)
    if isinstance(base, (bytes, bytearray, memoryview)):
        return max(array.nbytes, memoryview(base).nbytes)
    return array.nbytes


class FeedbackStore:
    """Recent request ids -> inputs and predictions; a rolling window of labelled outcomes.

    Bounded twice, the oldest going first: at most `capacity` requests, and at most `max_bytes`
    of their arrays, since one request may carry many rows (issue #10: 10,000 remembered 100-row
    iris requests held ~50 MiB; 10,000 large bodies could exhaust memory).
    """

    def __init__(
        self, capacity: int, window: int, classification: bool, max_bytes: int | None = None
    ) -> None:
        self._served: OrderedDict[str, Served] = OrderedDict()
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0
        self.classification = classification
        # Per labelled row: 1.0/0.0 for a correct/incorrect class, or the squared error.
        self._outcomes: deque[float] = deque(maxlen=window)

    def remember(self, request_id: str, frame: Array, labels: Array) -> None:
        served = self._served
        entry = Served(frame, labels, size=retained_bytes(frame) + retained_bytes(labels))
        previous = served.pop(request_id, None)
        if previous is not None:
            self._bytes -= previous.size
        served[request_id] = entry
        self._bytes += entry.size
        limit = self._max_bytes
        while served and (len(served) > self._capacity or (limit is not None and self._bytes > limit)):
            _, evicted = served.popitem(last=False)
            self._bytes -= evicted.size

    def shadow_answer(self, request_id: str, labels: list[Any], version: str) -> Served | None:
        """Remember the challenger's labels for a request still remembered and not yet labelled
        (None otherwise, or when the row counts differ)."""
        served = self._served.get(request_id)
        if served is None or served.labelled or len(labels) != len(served.labels):
            return None
        served.shadow, served.shadow_version = labels, version
        return served

    @property
    def remembered(self) -> tuple[int, int]:
        """(requests, bytes of their arrays) currently remembered."""
        return len(self._served), self._bytes

    def label(self, request_id: str, labels: Sequence[Any]) -> Served:
        """Record ground truth for every row of a request; returns what was served."""
        served = self._served.get(request_id)
        if served is None:
            raise FeedbackError(f"unknown request id '{request_id}' (never served or expired)", 404)
        if served.labelled:
            raise FeedbackError(f"request '{request_id}' is already labelled", 409)
        if len(labels) != len(served.labels):
            raise FeedbackError(
                f"request '{request_id}' had {len(served.labels)} rows; got {len(labels)} labels", 400
            )
        self.check_labels(labels)
        pairs = zip(served.labels.tolist(), labels, strict=True)
        if self.classification:
            key = drift._category_key
            served.scores = tuple(1.0 if key(predicted) == key(label) else 0.0 for predicted, label in pairs)
            self._outcomes.extend(served.scores)
        else:
            served.scores = tuple(abs(float(predicted) - float(label)) for predicted, label in pairs)
            self._outcomes.extend(e * e for e in served.scores)
        served.labelled = True
        return served

    def check_labels(self, labels: Sequence[Any]) -> None:
        """Each label must be a class (string or number) or, for regression, a finite number."""
        if not labels:
            raise FeedbackError("labels must not be empty", 400)
        for label in labels:
            if self.classification:
                if not isinstance(label, (str, int, float, bool)):
                    raise FeedbackError(f"label {label!r} is not a class (string or number)", 400)
            elif not isinstance(label, (int, float)) or isinstance(label, bool) or not math.isfinite(label):
                raise FeedbackError(f"label {label!r} is not a finite number", 400)

    @property
    def samples(self) -> int:
        return len(self._outcomes)

    @property
    def quality(self) -> float:
        """Accuracy (classification) or RMSE (regression) over the window; NaN when empty."""
        n = len(self._outcomes)
        if n == 0:
            return math.nan
        mean = math.fsum(self._outcomes) / n  # exact; the window is small
        return mean if self.classification else math.sqrt(mean)
