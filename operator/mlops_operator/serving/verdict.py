"""Verdicts on a challenger's quality against the champion on the same live requests (issue #22).

Pure: counts in, a `Verdict` out. The champion serves; the challenger answered the same
requests (shadow) and labels arrived for some of them through feedback. Only the requests
both models answered and a label scored are compared, pair by pair, so the two models are
judged on exactly the same rows.

Classification (`classification_verdict`), with `alpha` the significance level:
1. fewer than `min_pairs` labelled pairs: Inconclusive (reason TooFewPairs);
2. McNemar's exact test significant and the challenger right more often: Better;
3. Newcombe's interval for the accuracy difference (challenger - champion, confidence
   1 - alpha) above -margin: NotWorse (it loses at most `margin` of accuracy);
4. McNemar significant and the champion right more often: Worse;
5. otherwise Inconclusive (reason NoSignificantDifference).

Regression from counts (`sign_test_verdict`, what the serving pods' counters give in shadow
mode): the exact sign test on the pairs whose absolute errors differ (ties dropped). Better
when the challenger's error is smaller significantly more often than not (one-sided, at
`alpha`), Worse when larger; otherwise Inconclusive. No NotWorse: the sign test has no margin.
Scores are the mean absolute errors; the effect is champion - challenger.

Regression (`regression_verdict`), on absolute errors, with the Wilcoxon signed-rank test:
Better when the challenger's errors are significantly smaller (one-sided); NotWorse when they
are significantly below the champion's inflated by the relative `margin`; Worse when
significantly larger; otherwise Inconclusive. The effect is the difference of mean absolute
errors (champion - challenger: positive means the challenger is better).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from mlops_contract.stats import (
    PairCounts,
    binomial_half_cdf,
    mcnemar_exact,
    paired_difference_interval,
    wilcoxon_signed_rank,
)


class Outcome(StrEnum):
    BETTER = "Better"
    NOT_WORSE = "NotWorse"
    WORSE = "Worse"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str
    n: int
    champion_score: float | None
    challenger_score: float | None
    effect: float | None
    p_value: float | None
    message: str


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _too_few(
    n: int, min_pairs: int, champ: float | None, chal: float | None, effect: float | None
) -> Verdict:
    message = f"{n} of {min_pairs} labelled pairs needed for a verdict."
    return Verdict(Outcome.INCONCLUSIVE, "TooFewPairs", n, champ, chal, effect, None, message)


def classification_verdict(
    pairs: PairCounts, *, min_pairs: int, margin: float, alpha: float = 0.05
) -> Verdict:
    n = pairs.n
    champ, chal = pairs.champion_accuracy, pairs.challenger_accuracy
    effect = None if champ is None or chal is None else chal - champ
    if n < max(1, min_pairs):
        return _too_few(n, min_pairs, champ, chal, effect)
    p = mcnemar_exact(pairs.champion_only, pairs.challenger_only)
    low, high = paired_difference_interval(pairs, 1.0 - alpha)
    scores = (
        f"accuracy {_fmt(chal)} vs champion {_fmt(champ)} on {n} labelled pairs "
        f"(challenger alone right {pairs.challenger_only}, champion alone right {pairs.champion_only}; "
        f"McNemar p={_fmt(p, 3)}; difference {_fmt(effect, 3)}, {1 - alpha:.0%} interval "
        f"[{low:.3f}, {high:.3f}])"
    )
    if p < alpha and pairs.challenger_only > pairs.champion_only:
        return Verdict(Outcome.BETTER, "SignificantlyBetter", n, champ, chal, effect, p, f"Better: {scores}.")
    if low > -margin:
        return Verdict(
            Outcome.NOT_WORSE,
            "WithinMargin",
            n,
            champ,
            chal,
            effect,
            p,
            f"Not worse than -{margin:g}: {scores}.",
        )
    if p < alpha:
        return Verdict(Outcome.WORSE, "SignificantlyWorse", n, champ, chal, effect, p, f"Worse: {scores}.")
    return Verdict(
        Outcome.INCONCLUSIVE, "NoSignificantDifference", n, champ, chal, effect, p, f"Inconclusive: {scores}."
    )


def regression_verdict(
    champion_errors: Sequence[float],
    challenger_errors: Sequence[float],
    *,
    min_pairs: int,
    margin: float,
    alpha: float = 0.05,
) -> Verdict:
    """Absolute errors of the two models on the same labelled requests, in the same order."""
    if len(champion_errors) != len(challenger_errors):
        raise ValueError("the two error lists must pair up")
    champ_abs = [abs(e) for e in champion_errors]
    chal_abs = [abs(e) for e in challenger_errors]
    n = len(champ_abs)
    champ = sum(champ_abs) / n if n else None
    chal = sum(chal_abs) / n if n else None
    effect = None if champ is None or chal is None else champ - chal
    if n < max(1, min_pairs):
        return _too_few(n, min_pairs, champ, chal, effect)
    gains = [a - b for a, b in zip(champ_abs, chal_abs, strict=True)]
    _, p_better = wilcoxon_signed_rank(gains, "greater")
    _, p_worse = wilcoxon_signed_rank(gains, "less")
    slack = [a * (1.0 + margin) - b for a, b in zip(champ_abs, chal_abs, strict=True)]
    _, p_not_worse = wilcoxon_signed_rank(slack, "greater")
    scores = f"MAE {_fmt(chal)} vs champion {_fmt(champ)} on {n} labelled pairs"
    not_worse = None
    if p_not_worse < alpha:
        not_worse = Verdict(
            Outcome.NOT_WORSE, "WithinMargin", n, champ, chal, effect, p_not_worse,
            f"Not worse than +{margin:.0%} MAE: {scores} (Wilcoxon p={_fmt(p_not_worse, 3)}).",
        )  # fmt: skip
    found = Verdict(Outcome.INCONCLUSIVE, "", n, champ, chal, effect, None, "")
    return _one_sided(
        found, p_better, p_worse, alpha=alpha, template=f"{scores} (Wilcoxon p=%s).", not_worse=not_worse
    )


def _one_sided(
    found: Verdict,
    p_better: float,
    p_worse: float,
    *,
    alpha: float,
    template: str,
    not_worse: Verdict | None = None,
) -> Verdict:
    """Better, else `not_worse`, else Worse, else Inconclusive, from two one-sided p-values;
    `found` carries n and the scores, `template` the message with %s for the p-value."""
    if p_better < alpha:
        return replace(found, outcome=Outcome.BETTER, reason="SignificantlyBetter", p_value=p_better,
                       message=f"Better: {template % _fmt(p_better, 3)}")  # fmt: skip
    if not_worse is not None:
        return not_worse
    if p_worse < alpha:
        return replace(found, outcome=Outcome.WORSE, reason="SignificantlyWorse", p_value=p_worse,
                       message=f"Worse: {template % _fmt(p_worse, 3)}")  # fmt: skip
    p = min(1.0, 2.0 * min(p_better, p_worse))
    return replace(found, reason="NoSignificantDifference", p_value=p,
                   message=f"Inconclusive: {template % _fmt(p, 3)}")  # fmt: skip


def sign_test_verdict(
    better: int,
    worse: int,
    ties: int,
    *,
    champion_mae: float | None,
    challenger_mae: float | None,
    min_pairs: int,
    alpha: float = 0.05,
) -> Verdict:
    """`better`/`worse`: pairs where the challenger's absolute error was smaller/larger."""
    n = better + worse + ties
    champ, chal = champion_mae, challenger_mae
    effect = None if champ is None or chal is None else champ - chal
    if n < max(1, min_pairs):
        return _too_few(n, min_pairs, champ, chal, effect)
    decided = better + worse
    # P(X >= k) = P(X <= decided - k) for X ~ Binomial(decided, 1/2): exact, no 1 - cdf.
    p_better = binomial_half_cdf(decided - better, decided)
    p_worse = binomial_half_cdf(decided - worse, decided)
    scores = (
        f"MAE {_fmt(chal)} vs champion {_fmt(champ)} on {n} labelled pairs "
        f"(challenger closer {better}, champion closer {worse}, ties {ties})"
    )
    found = Verdict(Outcome.INCONCLUSIVE, "", n, champ, chal, effect, None, "")
    return _one_sided(found, p_better, p_worse, alpha=alpha, template=f"{scores}; sign test p=%s.")
