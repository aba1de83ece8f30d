"""Verdicts on a challenger against the champion (issue #22): table-driven, small samples included."""

from __future__ import annotations

import random

import pytest
from scipy import stats as sps

from mlops_contract.stats import PairCounts, sequential_half_p
from mlops_operator.serving.verdict import (
    Labelled,
    Outcome,
    classification_verdict,
    regression_verdict,
    split_verdict,
)


def pairs(both: int, champion_only: int, challenger_only: int, neither: int) -> PairCounts:
    return PairCounts(
        both=both, champion_only=champion_only, challenger_only=challenger_only, neither=neither
    )


# (id, pairs(both, champion only, challenger only, neither), min_pairs, margin, outcome, reason)
CLASSIFICATION: list[tuple[str, PairCounts, int, float, Outcome, str]] = [
    ("no-pairs", pairs(0, 0, 0, 0), 30, 0.0, Outcome.INCONCLUSIVE, "TooFewPairs"),
    ("below-minimum-even-if-lopsided", pairs(0, 20, 0, 0), 30, 0.0, Outcome.INCONCLUSIVE, "TooFewPairs"),
    ("clearly-better", pairs(60, 3, 25, 12), 30, 0.0, Outcome.BETTER, "SignificantlyBetter"),
    ("clearly-worse", pairs(60, 25, 3, 12), 30, 0.0, Outcome.WORSE, "SignificantlyWorse"),
    ("worse-by-more-than-the-margin", pairs(60, 25, 3, 12), 30, 0.05, Outcome.WORSE, "SignificantlyWorse"),
    ("identical-models-small-n", pairs(35, 0, 0, 5), 30, 0.0, Outcome.INCONCLUSIVE, "NoSignificantDifference"),
    ("identical-models-within-margin", pairs(900, 0, 0, 100), 30, 0.02, Outcome.NOT_WORSE, "WithinMargin"),
    ("slightly-worse-within-margin", pairs(900, 20, 10, 70), 30, 0.05, Outcome.NOT_WORSE, "WithinMargin"),
    ("one-discordant-pair-is-nothing", pairs(40, 0, 1, 4), 30, 0.0, Outcome.INCONCLUSIVE, "NoSignificantDifference"),
    ("min-pairs-zero-still-needs-one", pairs(0, 0, 0, 0), 0, 0.0, Outcome.INCONCLUSIVE, "TooFewPairs"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "counts", "min_pairs", "margin", "outcome", "reason"),
    CLASSIFICATION,
    ids=[c[0] for c in CLASSIFICATION],
)
def test_classification_verdict(
    name: str, counts: PairCounts, min_pairs: int, margin: float, outcome: Outcome, reason: str
) -> None:
    verdict = classification_verdict(counts, min_pairs=min_pairs, margin=margin)
    assert (verdict.outcome, verdict.reason) == (outcome, reason), verdict.message
    assert verdict.n == counts.n


def test_classification_verdict_reports_scores_effect_and_p() -> None:
    verdict = classification_verdict(pairs(60, 3, 25, 12), min_pairs=30, margin=0.0)
    assert verdict.champion_score == pytest.approx(0.63)
    assert verdict.challenger_score == pytest.approx(0.85)
    assert verdict.effect == pytest.approx(0.22)
    # Always valid (1 / the Beta(10, 10) mixture's Bayes factor on 3 against 25 discordant pairs);
    # McNemar's fixed-n p-value (2.7e-05) is in the message for reference.
    assert verdict.p_value == pytest.approx(sequential_half_p(3, 25)) and verdict.p_value < 0.01
    assert "always-valid p=0.00737" in verdict.message and "McNemar's fixed-n p=2.74e-05" in verdict.message
    assert "100 labelled pairs" in verdict.message


def _errors(rng: random.Random, n: int, scale: float) -> list[float]:
    return [rng.gauss(0.0, scale) for _ in range(n)]


def test_regression_verdicts() -> None:
    rng = random.Random(3)
    champion = _errors(rng, 200, 1.0)
    better = [e * 0.6 for e in champion]
    worse = [e * 1.5 for e in champion]
    same = [e * 1.01 if i % 2 else e * 0.99 for i, e in enumerate(champion)]
    assert regression_verdict(champion, better, min_pairs=30, margin=0.0).outcome is Outcome.BETTER
    assert regression_verdict(champion, worse, min_pairs=30, margin=0.1).outcome is Outcome.WORSE
    assert regression_verdict(champion, same, min_pairs=30, margin=0.1).outcome is Outcome.NOT_WORSE
    twin = regression_verdict(champion[:40], champion[:40], min_pairs=30, margin=0.0)
    assert (twin.outcome, twin.reason) == (Outcome.INCONCLUSIVE, "NoSignificantDifference")
    small = regression_verdict(champion[:10], better[:10], min_pairs=30, margin=0.0)
    assert (small.outcome, small.reason) == (Outcome.INCONCLUSIVE, "TooFewPairs")
    verdict = regression_verdict(champion, better, min_pairs=30, margin=0.0)
    assert verdict.effect is not None and verdict.effect > 0  # champion MAE - challenger MAE
    with pytest.raises(ValueError):
        regression_verdict([1.0], [1.0, 2.0], min_pairs=1, margin=0.0)


# --- the split canary's two tracks, each on its own labelled rows -----------------------------


def right(correct: int, n: int) -> Labelled:
    return Labelled(correct=correct, incorrect=n - correct)


def errors(values: list[float]) -> Labelled:
    return Labelled(scored=len(values), abs_error=sum(values), squared_error=sum(v * v for v in values))


# (id, stable, canary, min_labelled, outcome or None when not judged)
SPLIT: list[tuple[str, Labelled, Labelled, int, Outcome | None]] = [
    ("no-labels", Labelled(), Labelled(), 10, None),
    ("stable-only", right(50, 50), Labelled(), 10, None),
    ("canary-below-minimum", right(50, 50), right(0, 9), 10, None),
    ("tasks-differ", right(50, 50), errors([1.0] * 20), 10, None),
    ("six-of-ten-vs-ten-of-ten-is-worse", right(10, 10), right(6, 10), 10, Outcome.WORSE),  # p 0.043
    ("seven-of-ten-is-not-yet", right(10, 10), right(7, 10), 10, Outcome.INCONCLUSIVE),  # p 0.105
    ("forty-two-of-fifty-is-worse", right(48, 50), right(42, 50), 10, Outcome.WORSE),  # p 0.046
    ("forty-three-of-fifty-is-not", right(48, 50), right(43, 50), 10, Outcome.INCONCLUSIVE),  # p 0.080
    ("better", right(42, 50), right(48, 50), 10, Outcome.BETTER),
    ("regression-worse", errors([1.0, 1.2, 0.8] * 10), errors([2.0, 2.4, 1.6] * 10), 30, Outcome.WORSE),
    ("regression-same", errors([1.0, 1.2, 0.8] * 10), errors([1.2, 0.8, 1.0] * 10), 30, Outcome.INCONCLUSIVE),
    ("regression-better", errors([2.0, 2.4, 1.6] * 10), errors([1.0, 1.2, 0.8] * 10), 30, Outcome.BETTER),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "stable", "canary", "min_labelled", "outcome"), SPLIT, ids=[c[0] for c in SPLIT]
)
def test_split_verdict(
    name: str, stable: Labelled, canary: Labelled, min_labelled: int, outcome: Outcome | None
) -> None:
    found = split_verdict(stable, canary, min_labelled=min_labelled)
    assert (found.outcome if found else None) == outcome, found and found.message


def test_split_verdict_reports_scores_effect_and_p() -> None:
    found = split_verdict(right(48, 50), right(42, 50), min_labelled=50)
    assert found is not None
    assert (found.n, found.champion_score, found.challenger_score) == (50, 0.96, 0.84)
    assert found.effect == pytest.approx(-0.12)
    _, ref = sps.fisher_exact([[42, 8], [48, 2]], alternative="less")
    assert found.p_value == pytest.approx(ref, rel=1e-9)
    assert "canary accuracy 0.84 vs stable 0.96 on 50 labelled rows vs 50 (stable)" in found.message
    assert "95% interval [" in found.message and "Fisher's exact test p=0.0458" in found.message


def test_split_verdict_regression_matches_welch_z() -> None:
    rng = random.Random(5)
    stable_errors = [abs(rng.gauss(0, 1.0)) for _ in range(80)]
    canary_errors = [abs(rng.gauss(0, 1.6)) for _ in range(60)]
    found = split_verdict(errors(stable_errors), errors(canary_errors), min_labelled=50)
    assert found is not None and found.outcome == Outcome.WORSE
    se = (sps.tvar(canary_errors) / 60 + sps.tvar(stable_errors) / 80) ** 0.5
    z = (sum(canary_errors) / 60 - sum(stable_errors) / 80) / se
    assert found.p_value == pytest.approx(sps.norm.sf(z), rel=1e-9)
    assert found.effect == pytest.approx(sum(stable_errors) / 80 - sum(canary_errors) / 60)


def test_labelled_counts() -> None:
    assert Labelled.of({"correct": 3.0, "incorrect": 1.0}) == right(3, 4)
    assert (right(3, 4).n, right(3, 4).score, right(3, 4).classification) == (4, 0.75, True)
    assert (errors([1.0, 3.0]).n, errors([1.0, 3.0]).score) == (2, 2.0)
    assert (Labelled().n, Labelled().score, Labelled().classification) == (0, None, None)
