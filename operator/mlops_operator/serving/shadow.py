"""The shadow decision (spec.canary.mode shadow, issue #22): wait, promote or roll back, from
the paired outcomes the serving pods counted and the clock.

Pure. The champion's pods mirror requests to the challenger and, when feedback labels a
request both answered, count who was right (`ShadowCounts`, summed over the champion's pods by
monitor.scrape.shadow_counts or PromQL). `verdict` turns them into a serving.verdict.Verdict:
the discordant pairs' split (McNemar's hypothesis) with Newcombe's interval for classification,
the sign test for regression, Better and Worse on an always-valid p-value (serving/verdict.py).
`decide`, in order:

1. the challenger's own error rate is significantly above maxErrorRate (the split canary's
   exact binomial rule, on the mirrored requests it answered): roll back;
2. verdict Worse: roll back (the champion keeps serving);
3. verdict Better, or NotWorse with promoteOn NotWorse: promote;
4. deadlineSeconds passed since the analysis started: onInconclusive (Promote or Rollback);
5. otherwise wait (reason TooFewPairs or NoSignificantDifference, from the verdict).

The verdict is tested again at every pass as pairs accumulate: Better and Worse stay within
`ALPHA` however many passes look (the always-valid p-value); NotWorse, on fixed-n statistics,
exceeds it somewhat. `minPairs` bounds how early a verdict can be reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from mlops_contract.api.inferenceservice import SHADOW_MARGIN, Canary, Shadow
from mlops_contract.stats import Moments, PairCounts
from mlops_contract.timeutil import format_time
from mlops_operator.serving.canary import CanaryStats, Decision, Reason, error_rate_rollback
from mlops_operator.serving.verdict import Outcome, Verdict, classification_verdict, sign_test_verdict

ALPHA: Final = 0.05
CLASSIFICATION_OUTCOMES: Final = ("both", "champion_only", "challenger_only", "neither")
REGRESSION_OUTCOMES: Final = ("challenger_better", "champion_better", "tie")


@dataclass(frozen=True)
class ShadowCounts:
    """The champion pods' shadow counters for one challenger version, summed over the pods."""

    pairs: Mapping[str, float] = field(default_factory=dict)  # outcome -> labelled rows
    abs_error: Mapping[str, float] = field(default_factory=dict)  # champion/challenger -> sum
    # Regression: champion_squared/challenger_squared/cross -> sums of the absolute errors' products.
    products: Mapping[str, float] = field(default_factory=dict)
    agree: float = 0.0
    disagree: float = 0.0

    @property
    def classification(self) -> bool | None:
        """True/False from the outcomes counted; None before any pair."""
        if any(self.pairs.get(k) for k in CLASSIFICATION_OUTCOMES):
            return True
        if any(self.pairs.get(k) for k in REGRESSION_OUTCOMES):
            return False
        return None

    @property
    def agreement(self) -> float | None:
        rows = self.agree + self.disagree
        return self.agree / rows if rows else None


def _n(counts: Mapping[str, float], key: str) -> int:
    return round(counts.get(key, 0.0))


def verdict(counts: ShadowCounts, shadow: Shadow) -> Verdict:
    """The challenger's verdict from the counts (Inconclusive/TooFewPairs before any pair)."""
    margin = shadow.margin if shadow.margin is not None else SHADOW_MARGIN
    if counts.classification is False:
        n = sum(_n(counts.pairs, k) for k in REGRESSION_OUTCOMES)
        champ, chal = (
            counts.abs_error.get(side, 0.0) / n if n else None for side in ("champion", "challenger")
        )
        return sign_test_verdict(
            _n(counts.pairs, "challenger_better"),
            _n(counts.pairs, "champion_better"),
            _n(counts.pairs, "tie"),
            champion_mae=champ,
            challenger_mae=chal,
            min_pairs=shadow.min_pairs,
            alpha=ALPHA,
            slack=slack_moments(counts, n, margin),
            margin=margin,
        )
    pairs = PairCounts(*(_n(counts.pairs, k) for k in CLASSIFICATION_OUTCOMES))
    return classification_verdict(pairs, min_pairs=shadow.min_pairs, margin=margin, alpha=ALPHA)


def slack_moments(counts: ShadowCounts, n: int, margin: float) -> Moments | None:
    """Moments of the per-pair slack (1 + margin) x champion error - challenger error (absolute
    errors), from the counters' sums; None without the products (a server before them)."""
    a, b = counts.abs_error.get("champion", 0.0), counts.abs_error.get("challenger", 0.0)
    p = counts.products
    if n < 1 or not all(k in p for k in ("champion_squared", "challenger_squared", "cross")):
        return None
    k = 1.0 + margin
    squares = k * k * p["champion_squared"] - 2.0 * k * p["cross"] + p["challenger_squared"]
    return Moments(n, k * a - b, squares)


def settings(canary: Canary) -> Shadow:
    """spec.canary.shadow, or its defaults."""
    return canary.shadow if canary.shadow is not None else Shadow()


def decide(
    canary: Canary, started_at: datetime, now: datetime, found: Verdict, challenger: CanaryStats
) -> Decision:
    """Decide the shadow's fate (see the module docstring); times must be timezone-aware."""
    shadow = settings(canary)
    observed = f"the challenger answered {challenger.requests} mirrored requests, {challenger.errors} errors"
    if (too_many := error_rate_rollback(canary, challenger, observed)) is not None:
        return too_many
    if found.outcome == Outcome.WORSE:
        return Decision("rollback", Reason.SHADOW_WORSE, found.message)
    if found.outcome == Outcome.BETTER or (
        found.outcome == Outcome.NOT_WORSE and shadow.promote_on == "NotWorse"
    ):
        return Decision("promote", Reason.SHADOW_PASSED, found.message)
    elapsed = max(0.0, (now - started_at).total_seconds())
    if elapsed >= shadow.deadline_seconds:
        return Decision(
            "promote" if shadow.on_inconclusive == "Promote" else "rollback",
            Reason.SHADOW_DEADLINE,
            f"No {shadow.promote_on} verdict within deadlineSeconds {shadow.deadline_seconds} "
            f"(onInconclusive {shadow.on_inconclusive}): {found.message}",
        )
    # The deadline as a time, not a countdown: the message changes only when the counts do.
    deadline = format_time(started_at + timedelta(seconds=shadow.deadline_seconds))
    return Decision("wait", Reason.SHADOW_ANALYSING, f"{found.message} Deadline {deadline}.")
