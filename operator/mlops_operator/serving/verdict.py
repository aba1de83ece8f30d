"""Verdicts on a challenger's quality against the champion on the same live requests (issue #22).

Pure: counts in, a `Verdict` out. The champion serves; the challenger answered the same
requests (shadow) and labels arrived for some of them through feedback. Only the requests
both models answered and a label scored are compared, pair by pair, so the two models are
judged on exactly the same rows.

Shadow verdicts are tested again at every pass as labelled pairs accumulate, so their Better and
Worse use an always-valid p-value (mlops_contract.stats.sequential_half_p, a mixture sequential
probability ratio test): however many passes look, a challenger no better than the champion is
called Better (or Worse) with probability at most `alpha`. McNemar's fixed-n exact p-value is in
the message for reference; it would reject a true null about a third of the time when looked at
every 5 s for an hour.

Classification (`classification_verdict`), with `alpha` the significance level:
1. fewer than `min_pairs` labelled pairs: Inconclusive (reason TooFewPairs);
2. the discordant pairs significantly uneven (always valid) and the challenger right more
   often: Better;
3. Newcombe's interval for the accuracy difference (challenger - champion, confidence
   1 - alpha) above -margin: NotWorse (it loses at most `margin` of accuracy);
4. the discordant pairs significantly uneven and the champion right more often: Worse;
5. otherwise Inconclusive (reason NoSignificantDifference).

Regression from counts (`sign_test_verdict`, what the serving pods' counters give in shadow
mode): the sign test, always valid, on the pairs whose absolute errors differ (ties dropped).
Better when the challenger's error is smaller significantly more often than not, Worse when
larger; NotWorse (checked between the two, as for classification) when the
per-pair slack (1 + margin) x champion - challenger absolute error has a mean significantly above
0 (a one-sided z-test from the counters' sums of the errors and of their products: the
challenger's MAE is at most `margin`, relative, above the champion's); otherwise Inconclusive.
Scores are the mean absolute errors; the effect is champion - challenger.

Two independent tracks (`split_verdict`, the split canary: each track scored on the labelled
requests it served itself, so the rows differ): classification by Fisher's exact test, one-sided
each way, with Newcombe's interval for the accuracy difference in the message; regression by
Welch's z-test on the mean absolute errors (from the counters' n, sum and sum of squares). Worse
when the canary is significantly worse (one-sided, at `alpha`), Better when significantly better,
otherwise Inconclusive; None (not judged) while either track has fewer than `min_labelled` rows,
or the tracks' counters disagree on the task. The effect is positive when the canary is better.

Regression (`regression_verdict`), on absolute errors, with the Wilcoxon signed-rank test:
Better when the challenger's errors are significantly smaller (one-sided); NotWorse when they
are significantly below the champion's inflated by the relative `margin`; Worse when
significantly larger; otherwise Inconclusive. The effect is the difference of mean absolute
errors (champion - challenger: positive means the challenger is better).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from mlops_contract.stats import (
    Moments,
    PairCounts,
    difference_interval,
    fisher_exact_less,
    mcnemar_exact,
    one_sample_z,
    paired_difference_interval,
    sequential_half_p,
    welch_z,
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
    p = sequential_half_p(pairs.champion_only, pairs.challenger_only)
    fixed = mcnemar_exact(pairs.champion_only, pairs.challenger_only)
    low, high = paired_difference_interval(pairs, 1.0 - alpha)
    scores = (
        f"accuracy {_fmt(chal)} vs champion {_fmt(champ)} on {n} labelled pairs "
        f"(challenger alone right {pairs.challenger_only}, champion alone right {pairs.champion_only}; "
        f"always-valid p={_fmt(p, 3)}, McNemar's fixed-n p={_fmt(fixed, 3)}; difference {_fmt(effect, 3)}, "
        f"{1 - alpha:.0%} interval [{low:.3f}, {high:.3f}])"
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
    undecided: float | None = None,
) -> Verdict:
    """Better, else `not_worse`, else Worse, else Inconclusive, from two one-sided p-values;
    `found` carries n and the scores, `template` the message with %s for the p-value, and
    `undecided` the two-sided p-value of an Inconclusive verdict (default: twice the smaller)."""
    if p_better < alpha:
        return replace(found, outcome=Outcome.BETTER, reason="SignificantlyBetter", p_value=p_better,
                       message=f"Better: {template % _fmt(p_better, 3)}")  # fmt: skip
    if not_worse is not None:
        return not_worse
    if p_worse < alpha:
        return replace(found, outcome=Outcome.WORSE, reason="SignificantlyWorse", p_value=p_worse,
                       message=f"Worse: {template % _fmt(p_worse, 3)}")  # fmt: skip
    p = min(1.0, 2.0 * min(p_better, p_worse)) if undecided is None else undecided
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
    slack: Moments | None = None,
    margin: float = 0.0,
) -> Verdict:
    """`better`/`worse`: pairs where the challenger's absolute error was smaller/larger.
    `slack`: the moments of (1 + margin) x champion - challenger absolute error over the pairs;
    NotWorse when its mean is significantly above 0 (one-sided z-test: the challenger's MAE is
    below the champion's inflated by the relative `margin`)."""
    n = better + worse + ties
    champ, chal = champion_mae, challenger_mae
    effect = None if champ is None or chal is None else champ - chal
    if n < max(1, min_pairs):
        return _too_few(n, min_pairs, champ, chal, effect)
    # Always valid, two-sided: the side that is ahead carries it, the other side's is 1.
    p = sequential_half_p(better, worse)
    p_better, p_worse = (p if better > worse else 1.0), (p if worse > better else 1.0)
    scores = (
        f"MAE {_fmt(chal)} vs champion {_fmt(champ)} on {n} labelled pairs "
        f"(challenger closer {better}, champion closer {worse}, ties {ties})"
    )
    found = Verdict(Outcome.INCONCLUSIVE, "", n, champ, chal, effect, None, "")
    not_worse = None
    if slack is not None and margin > 0:
        _, p_not_worse = one_sample_z(slack, "greater")
        if p_not_worse < alpha:
            not_worse = Verdict(
                Outcome.NOT_WORSE, "WithinMargin", n, champ, chal, effect, p_not_worse,
                f"Not worse than +{margin:.0%} MAE: {scores}; paired z-test p={_fmt(p_not_worse, 3)}.",
            )  # fmt: skip
    template = f"{scores}; always-valid sign test p=%s."
    return _one_sided(
        found, p_better, p_worse, alpha=alpha, template=template, not_worse=not_worse, undecided=p
    )


@dataclass(frozen=True)
class Labelled:
    """One track's labelled rows since the analysis started: the serving pods' feedback counters
    (mlops_feedback_rows_total by outcome, the error sums), summed over the track's pods."""

    correct: float = 0.0
    incorrect: float = 0.0
    scored: float = 0.0  # regression rows
    abs_error: float = 0.0
    squared_error: float = 0.0

    @classmethod
    def of(cls, counters: Mapping[str, float]) -> Labelled:
        """From counter sums keyed correct, incorrect, scored, abs_error, squared_error."""
        return cls(*(float(counters.get(k, 0.0)) for k in LABELLED_KEYS))

    @property
    def classification(self) -> bool | None:
        """True/False from the outcomes counted; None before any labelled row."""
        if self.correct or self.incorrect:
            return True
        return False if self.scored else None

    @property
    def n(self) -> int:
        return round(self.correct + self.incorrect if self.classification else self.scored)

    @property
    def score(self) -> float | None:
        """Accuracy (classification) or mean absolute error; None without rows."""
        if self.classification is None:
            return None
        if self.classification:
            return self.correct / (self.correct + self.incorrect)
        return self.abs_error / self.scored


LABELLED_KEYS: Final = ("correct", "incorrect", "scored", "abs_error", "squared_error")


def split_verdict(
    stable: Labelled, canary: Labelled, *, min_labelled: int, alpha: float = 0.05
) -> Verdict | None:
    """The canary's quality against the stable track's, each on its own labelled rows; None when
    not judged (fewer than `min_labelled` rows on either track, or the tasks differ)."""
    kind = canary.classification
    if kind is None or kind != stable.classification or min(stable.n, canary.n) < max(1, min_labelled):
        return None
    champ, chal = stable.score, canary.score
    assert champ is not None and chal is not None
    rows = f"on {canary.n} labelled rows vs {stable.n} (stable)"
    if kind:
        c_right, s_right = round(canary.correct), round(stable.correct)
        p_worse = fisher_exact_less(c_right, canary.n, s_right, stable.n)
        p_better = fisher_exact_less(s_right, stable.n, c_right, canary.n)
        low, high = difference_interval(c_right, canary.n, s_right, stable.n, 1.0 - alpha)
        scores = (
            f"canary accuracy {_fmt(chal)} vs stable {_fmt(champ)} {rows}; difference {chal - champ:.3f}, "
            f"{round(100 * (1 - alpha))}%% interval [{low:.3f}, {high:.3f}]; Fisher's exact test p=%s"
        )
        effect = chal - champ
    else:
        c_mom = Moments(canary.scored, canary.abs_error, canary.squared_error)
        s_mom = Moments(stable.scored, stable.abs_error, stable.squared_error)
        _, p_worse = welch_z(c_mom, s_mom, "greater")
        _, p_better = welch_z(c_mom, s_mom, "less")
        scores = f"canary MAE {_fmt(chal)} vs stable {_fmt(champ)} {rows}; Welch z-test p=%s"
        effect = champ - chal
    found = Verdict(Outcome.INCONCLUSIVE, "", canary.n, champ, chal, effect, None, "")
    return _one_sided(found, p_better, p_worse, alpha=alpha, template=scores + ".")
