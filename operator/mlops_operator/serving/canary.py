"""The canary decision: wait, promote or roll back, from the canary's statistics and the clock.

`decide` is pure: the caller passes when the analysis started, `now`, and the canary pods'
statistics accumulated since then (monitor.scrape.canary_stats). Rules, in order:

1. Roll back as soon as the canary has served at least `judging_minimum(canary)` requests
   (10, or minRequests when smaller, but at least 1) and its error rate exceeds maxErrorRate
   or its p95 latency exceeds maxLatencyP95Ms. This may happen before durationSeconds.
2. Before durationSeconds have passed: wait (Analysing).
3. After: promote when it served at least minRequests; otherwise keep waiting with reason
   AwaitingTraffic (a canary is never promoted on too little evidence; lower minRequests or
   send traffic).

A `now` earlier than `started_at` (clock skew) counts as no time elapsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Literal

from mlops_contract.api.inferenceservice import Canary

# Requests before an error rate or a p95 is trusted enough to roll back on.
JUDGING_REQUESTS: Final = 10

Action = Literal["wait", "promote", "rollback"]


class Reason(StrEnum):
    ANALYSING = "Analysing"
    AWAITING_TRAFFIC = "AwaitingTraffic"
    PASSED = "AnalysisPassed"
    ERROR_RATE = "ErrorRateExceeded"
    LATENCY = "LatencyExceeded"


@dataclass(frozen=True)
class CanaryStats:
    """What the canary pods served since the analysis started (5xx answers are errors)."""

    requests: int
    errors: int
    p95_ms: float | None = None

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


def decide(canary: Canary, started_at: datetime, now: datetime, stats: CanaryStats) -> Decision:
    """Decide the canary's fate; `started_at` and `now` must both be timezone-aware."""
    elapsed = max(0.0, (now - started_at).total_seconds())
    rate = stats.error_rate
    observed = f"{stats.requests} requests, {stats.errors} errors"
    if stats.p95_ms is not None:
        observed += f", p95 {stats.p95_ms:.1f} ms"
    if stats.requests >= judging_minimum(canary):
        if rate is not None and rate > canary.max_error_rate:
            return Decision(
                "rollback",
                Reason.ERROR_RATE,
                f"Error rate {rate:.2%} exceeds maxErrorRate {canary.max_error_rate:.2%} ({observed}).",
            )
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
    return Decision("promote", Reason.PASSED, f"Healthy for {canary.duration_seconds}s ({observed}).")
