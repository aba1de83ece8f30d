"""The canary decision: wait, promote or roll back, from the canary's statistics and the clock.

`decide` is pure: the caller passes when the analysis started, `now`, and the canary pods'
statistics accumulated since then (monitor.scrape.canary_stats). Rules, in order:

1. Roll back as soon as the errors are significant evidence that the canary's error rate
   exceeds maxErrorRate: the exact one-sided binomial test at `CONFIDENCE` (issue #22; one
   error in the first ten requests at maxErrorRate 0.01 is not, P = 0.096; three are). Or as
   soon as it has served `judging_minimum(canary)` requests (10, or minRequests when smaller,
   but at least 1) and its p95 latency exceeds maxLatencyP95Ms. Either may happen before
   durationSeconds.
2. Before durationSeconds have passed: wait (Analysing).
3. After: promote when it served at least minRequests and its observed error rate is within
   maxErrorRate. Fewer requests: wait with reason AwaitingTraffic; a rate above the limit
   without significance yet: wait with reason InsufficientEvidence (more traffic will either
   prove it worse and roll it back, or bring the rate under the limit). A canary is never
   promoted on too little evidence, nor rolled back on noise.

Labelled quality (issue #22): once each track, canary and stable, has served at least
minLabelled labelled rows (feedback) since the analysis started, `quality` compares them
(serving.verdict.split_verdict: Fisher's exact test on accuracy, Welch's z-test on absolute
errors). A canary significantly worse, one-sided at `CONFIDENCE`, is rolled back at once
(reason QualityWorse; rule 1's rollbacks come first), so with enough labels a promotion also
means "not significantly worse". With fewer labels on either track (or none: labels are
optional) the rules above decide alone, as without feedback; the message then says how many
each track had. The test is repeated at every pass, so its false-positive rate is somewhat
above 5 %, as the shadow verdict's.

A `now` earlier than `started_at` (clock skew) counts as no time elapsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final, Literal

from mlops_contract.api.inferenceservice import SPLIT_MIN_LABELLED, Canary
from mlops_contract.stats import binomial_sf, rate_exceeds
from mlops_operator.serving.verdict import Labelled, Outcome, Verdict, split_verdict

# Requests before an error rate or a p95 is trusted enough to roll back on.
JUDGING_REQUESTS: Final = 10
# Confidence that the error rate exceeds maxErrorRate before a rollback.
CONFIDENCE: Final = 0.95

Action = Literal["wait", "promote", "rollback"]


class Reason(StrEnum):
    ANALYSING = "Analysing"
    AWAITING_TRAFFIC = "AwaitingTraffic"
    PASSED = "AnalysisPassed"
    ERROR_RATE = "ErrorRateExceeded"
    INSUFFICIENT_EVIDENCE = "InsufficientEvidence"
    LATENCY = "LatencyExceeded"
    QUALITY_WORSE = "QualityWorse"
    # Shadow mode (serving.shadow, issue #22).
    SHADOW_ANALYSING = "AwaitingVerdict"
    SHADOW_PASSED = "ShadowVerdictPassed"
    SHADOW_WORSE = "ShadowWorse"
    SHADOW_DEADLINE = "ShadowDeadline"


@dataclass(frozen=True)
class CanaryStats:
    """What the canary pods served since the analysis started (5xx answers are errors)."""

    requests: int
    errors: int
    p95_ms: float | None = None
    # Labelled rows each track served since the analysis started (split mode; issue #22).
    canary_labelled: Labelled = field(default_factory=Labelled)
    stable_labelled: Labelled = field(default_factory=Labelled)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: Reason
    message: str


def judging_minimum(canary: Canary) -> int:
    return max(1, min(JUDGING_REQUESTS, canary.min_requests))


def error_rate_rollback(canary: Canary, stats: CanaryStats, observed: str) -> Decision | None:
    """Rule 1's error half: a rollback when the errors are significant evidence that the rate
    exceeds maxErrorRate (exact one-sided binomial test at CONFIDENCE), else None."""
    if not rate_exceeds(stats.errors, stats.requests, canary.max_error_rate, CONFIDENCE):
        return None
    p = binomial_sf(stats.errors, stats.requests, canary.max_error_rate)
    return Decision(
        "rollback",
        Reason.ERROR_RATE,
        f"Error rate {stats.errors / stats.requests:.2%} exceeds maxErrorRate {canary.max_error_rate:.2%} "
        f"(exact binomial test p={p:.2g}; {observed}).",
    )


def min_labelled(canary: Canary) -> int:
    return canary.min_labelled if canary.min_labelled is not None else SPLIT_MIN_LABELLED


def quality(canary: Canary, stats: CanaryStats) -> Verdict | None:
    """The canary's labelled quality against the stable track's (None: not judged yet)."""
    return split_verdict(
        stats.stable_labelled,
        stats.canary_labelled,
        min_labelled=min_labelled(canary),
        alpha=1.0 - CONFIDENCE,
    )


def _quality_note(canary: Canary, stats: CanaryStats, found: Verdict | None) -> str:
    """What the labels said, for the message: the verdict, too few rows, or nothing without labels."""
    if found is not None:
        return f" Quality: {found.message}"
    c, s = stats.canary_labelled, stats.stable_labelled
    if c.classification is None and s.classification is None:
        return ""
    return (
        f" Quality not judged: {c.n} labelled rows on the canary, {s.n} on stable "
        f"(minLabelled {min_labelled(canary)} each)."
    )


def decide(canary: Canary, started_at: datetime, now: datetime, stats: CanaryStats) -> Decision:
    """Decide the canary's fate; `started_at` and `now` must both be timezone-aware."""
    decision = _decide_health(canary, started_at, now, stats)
    found = quality(canary, stats)
    if decision.action != "rollback" and found is not None and found.outcome == Outcome.WORSE:
        return Decision("rollback", Reason.QUALITY_WORSE, f"Labelled quality worse: {found.message}")
    note = _quality_note(canary, stats, found)
    return Decision(decision.action, decision.reason, decision.message + note) if note else decision


def _observed(stats: CanaryStats) -> str:
    observed = f"{stats.requests} requests, {stats.errors} errors"
    if stats.p95_ms is not None:
        observed += f", p95 {stats.p95_ms:.1f} ms"
    return observed


def _decide_health(canary: Canary, started_at: datetime, now: datetime, stats: CanaryStats) -> Decision:
    """Rules 1 to 3 (errors, latency, duration and traffic)."""
    elapsed = max(0.0, (now - started_at).total_seconds())
    rate = stats.error_rate
    observed = _observed(stats)
    if (too_many := error_rate_rollback(canary, stats, observed)) is not None:
        return too_many
    if stats.requests >= judging_minimum(canary):
        limit = canary.max_latency_p95_ms
        if limit is not None and stats.p95_ms is not None and stats.p95_ms > limit:
            return Decision(
                "rollback",
                Reason.LATENCY,
                f"p95 latency {stats.p95_ms:.1f} ms exceeds maxLatencyP95Ms {limit:g} ({observed}).",
            )
    if elapsed < canary.duration_seconds:
        remaining = canary.duration_seconds - elapsed
        return Decision("wait", Reason.ANALYSING, f"Analysing, {remaining:.0f}s left ({observed}).")
    if stats.requests < canary.min_requests:
        return Decision(
            "wait",
            Reason.AWAITING_TRAFFIC,
            f"Duration passed but only {stats.requests} of minRequests {canary.min_requests} "
            f"requests were served; waiting for traffic ({observed}).",
        )
    if rate is not None and rate > canary.max_error_rate:
        return Decision(
            "wait",
            Reason.INSUFFICIENT_EVIDENCE,
            f"Error rate {rate:.2%} is above maxErrorRate {canary.max_error_rate:.2%} but not yet "
            f"significantly; waiting for more traffic ({observed}).",
        )
    return Decision("promote", Reason.PASSED, f"Healthy for {canary.duration_seconds}s ({observed}).")
