"""The canary decision: roll back on significant errors or on latency, promote after the duration, else wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlops_contract.api.inferenceservice import Canary
from mlops_operator.serving.canary import CanaryStats, Reason, decide, judging_minimum

STARTED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

# (id, canary fields, seconds elapsed, stats, action, reason, message fragments)
CASES: list[tuple[str, dict[str, Any], float, CanaryStats, str, Reason, list[str]]] = [
    ("healthy-early-waits", {}, 30, CanaryStats(50, 0, 10.0), "wait", Reason.ANALYSING, ["90s left"]),
    ("no-traffic-early-waits", {}, 0, CanaryStats(0, 0), "wait", Reason.ANALYSING, []),
    # One error in ten at maxErrorRate 1 % happens to a healthy canary 9.6 % of the time: no rollback.
    ("one-error-in-ten-is-not-evidence", {}, 10, CanaryStats(10, 1), "wait", Reason.ANALYSING, []),
    (
        "three-errors-in-ten-roll-back-before-duration",
        {}, 10, CanaryStats(10, 3), "rollback", Reason.ERROR_RATE, ["30.00%", "1.00%", "p=0.00011"],
    ),
    ("nine-of-nine-errors-roll-back-at-once", {}, 10, CanaryStats(9, 9), "rollback", Reason.ERROR_RATE, []),
    ("error-rate-at-limit-promotes", {"maxErrorRate": 0.1}, 120, CanaryStats(100, 10), "promote", Reason.PASSED, []),
    (
        "error-rate-over-limit-without-evidence-waits",
        {}, 500, CanaryStats(200, 3), "wait", Reason.INSUFFICIENT_EVIDENCE, ["1.50%", "not yet significantly"],
    ),
    ("error-rate-significantly-over-limit", {}, 500, CanaryStats(200, 8), "rollback", Reason.ERROR_RATE, []),
    ("many-requests-make-a-small-excess-significant", {}, 60, CanaryStats(20000, 260), "rollback", Reason.ERROR_RATE, []),
    ("many-requests-within-limit-promote", {}, 500, CanaryStats(20000, 180), "promote", Reason.PASSED, []),
    ("zero-tolerance-any-error", {"maxErrorRate": 0}, 10, CanaryStats(10, 1), "rollback", Reason.ERROR_RATE, []),
    (
        "latency-rolls-back",
        {"maxLatencyP95Ms": 50},
        10, CanaryStats(20, 0, 80.0), "rollback", Reason.LATENCY, ["80.0 ms", "50"],
    ),
    ("latency-at-limit-is-fine", {"maxLatencyP95Ms": 50}, 120, CanaryStats(20, 0, 50.0), "promote", Reason.PASSED, []),
    ("latency-unknown-is-fine", {"maxLatencyP95Ms": 50}, 120, CanaryStats(20, 0, None), "promote", Reason.PASSED, []),
    ("latency-unchecked-without-limit", {}, 120, CanaryStats(20, 0, 9999.0), "promote", Reason.PASSED, []),
    ("latency-needs-judging-minimum", {"maxLatencyP95Ms": 50}, 10, CanaryStats(5, 0, 900.0), "wait", Reason.ANALYSING, []),
    (
        "errors-checked-before-latency",
        {"maxLatencyP95Ms": 50},
        10, CanaryStats(20, 5, 900.0), "rollback", Reason.ERROR_RATE, [],
    ),
    ("promotes-after-duration", {}, 120, CanaryStats(20, 0, 5.0), "promote", Reason.PASSED, ["120s"]),
    (
        "duration-passed-without-enough-traffic",
        {}, 500, CanaryStats(19, 0), "wait", Reason.AWAITING_TRAFFIC, ["only 19 of minRequests 20"],
    ),
    ("min-requests-zero-promotes-on-time", {"minRequests": 0}, 120, CanaryStats(0, 0), "promote", Reason.PASSED, []),
    ("small-min-requests-judges-sooner", {"minRequests": 3}, 10, CanaryStats(3, 1), "rollback", Reason.ERROR_RATE, []),
    ("clock-skew-counts-as-no-time", {}, -60, CanaryStats(50, 0), "wait", Reason.ANALYSING, ["120s left"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "fields", "elapsed", "stats", "action", "reason", "fragments"), CASES, ids=[c[0] for c in CASES]
)
def test_decide(
    name: str,
    fields: dict[str, Any],
    elapsed: float,
    stats: CanaryStats,
    action: str,
    reason: Reason,
    fragments: list[str],
) -> None:
    canary = Canary.model_validate(fields)
    decision = decide(canary, STARTED, STARTED + timedelta(seconds=elapsed), stats)
    assert (decision.action, decision.reason) == (action, reason), decision.message
    for fragment in fragments:
        assert fragment in decision.message


@pytest.mark.parametrize(
    ("min_requests", "minimum"),
    [(0, 1), (1, 1), (3, 3), (10, 10), (20, 10), (1000, 10)],
    ids=["zero", "one", "small", "ten", "default", "large"],
)
def test_judging_minimum(min_requests: int, minimum: int) -> None:
    assert judging_minimum(Canary.model_validate({"minRequests": min_requests})) == minimum


@pytest.mark.parametrize(
    ("stats", "rate"),
    [(CanaryStats(0, 0), None), (CanaryStats(4, 1), 0.25), (CanaryStats(10, 0), 0.0)],
    ids=["no-requests", "quarter", "none"],
)
def test_error_rate(stats: CanaryStats, rate: float | None) -> None:
    assert stats.error_rate == rate
