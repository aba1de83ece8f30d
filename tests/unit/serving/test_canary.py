"""The canary decision: roll back on significant errors, on latency or (issue #22) on significantly worse
labelled quality, promote after the duration, else wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pytest

from mlops_contract.api.inferenceservice import Canary
from mlops_operator.serving.canary import CanaryStats, Reason, decide, judging_minimum, min_labelled
from mlops_operator.serving.verdict import Labelled

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


# --- labelled quality (issue #22): each track's own labelled rows ------------------------------


def labelled(
    stable: tuple[int, int], canary: tuple[int, int], requests: int = 50, errors: int = 0
) -> CanaryStats:
    """Stats with (correct, rows) labelled on each track."""
    return CanaryStats(
        requests,
        errors,
        canary_labelled=Labelled(correct=canary[0], incorrect=canary[1] - canary[0]),
        stable_labelled=Labelled(correct=stable[0], incorrect=stable[1] - stable[0]),
    )


TEN: Final = {"minLabelled": 10}

QUALITY: list[tuple[str, dict[str, Any], float, CanaryStats, str, Reason, list[str]]] = [
    # Fisher's exact test, one-sided: 6 of 10 against 10 of 10 is p 0.043, 7 of 10 is p 0.105.
    ("worse-at-the-boundary-rolls-back-early", TEN, 10, labelled((10, 10), (6, 10)), "rollback", Reason.QUALITY_WORSE,
     ["Labelled quality worse", "canary accuracy 0.6 vs stable 1", "p=0.0433"]),
    ("just-above-the-boundary-waits", TEN, 10, labelled((10, 10), (7, 10)), "wait", Reason.ANALYSING,
     ["Quality: Inconclusive", "0.7 vs stable 1"]),
    ("not-significantly-worse-promotes", TEN, 120, labelled((48, 50), (43, 50)), "promote", Reason.PASSED,
     ["Healthy for 120s", "Quality: Inconclusive", "0.86 vs stable 0.96"]),
    ("significantly-worse-never-promotes", TEN, 500, labelled((48, 50), (42, 50)), "rollback", Reason.QUALITY_WORSE, []),
    ("better-promotes", TEN, 120, labelled((42, 50), (48, 50)), "promote", Reason.PASSED, ["Quality: Better"]),
    ("too-few-labels-behave-as-before", {}, 120, labelled((10, 10), (0, 10)), "promote", Reason.PASSED,
     ["Quality not judged: 10 labelled rows on the canary, 10 on stable (minLabelled 50 each)"]),
    ("one-track-labelled-is-not-judged", TEN, 120, labelled((0, 0), (0, 40)), "promote", Reason.PASSED,
     ["Quality not judged: 40 labelled rows on the canary, 0 on stable"]),
    ("errors-roll-back-first", TEN, 10, labelled((10, 10), (0, 10), requests=10, errors=3), "rollback",
     Reason.ERROR_RATE, []),
    ("worse-quality-overrides-awaiting-traffic", TEN, 500, labelled((10, 10), (2, 10), requests=5), "rollback",
     Reason.QUALITY_WORSE, []),
    ("regression-mae-worse", TEN, 10,
     CanaryStats(50, 0, canary_labelled=Labelled(scored=30, abs_error=60.0, squared_error=130.0),
                 stable_labelled=Labelled(scored=30, abs_error=30.0, squared_error=32.0)),
     "rollback", Reason.QUALITY_WORSE, ["canary MAE 2 vs stable 1", "Welch z-test"]),
]  # fmt: skip


@pytest.mark.parametrize("case", QUALITY, ids=[c[0] for c in QUALITY])
def test_decide_on_labelled_quality(case: tuple[Any, ...]) -> None:
    test_decide(*case)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_without_labels_the_message_has_no_quality_note(case: tuple[Any, ...]) -> None:
    """Labels are optional: without any, the decisions are the table above's, with no quality note."""
    _, fields, elapsed, stats, *_ = case
    decision = decide(Canary.model_validate(fields), STARTED, STARTED + timedelta(seconds=elapsed), stats)
    assert "Quality" not in decision.message


def test_min_labelled_default_and_mode() -> None:
    assert min_labelled(Canary()) == 50
    assert min_labelled(Canary.model_validate({"minLabelled": 200})) == 200
    with pytest.raises(ValueError, match="greater than or equal to 10"):
        Canary.model_validate({"minLabelled": 5})
