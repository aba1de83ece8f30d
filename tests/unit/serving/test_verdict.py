"""Verdicts on a challenger against the champion (issue #22): table-driven, small samples included."""

from __future__ import annotations

import random

import pytest

from mlops_contract.stats import PairCounts
from mlops_operator.serving.verdict import Outcome, classification_verdict, regression_verdict


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
    assert verdict.p_value is not None and verdict.p_value < 1e-4
    assert "McNemar" in verdict.message and "100 labelled pairs" in verdict.message


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
