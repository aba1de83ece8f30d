"""The shadow decision (issue #22): counts -> verdict -> wait, promote or roll back."""

from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path

import pytest
import yaml
from scipy import stats as sps

from mlops_contract.api.inferenceservice import Canary
from mlops_operator.serving.canary import CanaryStats, Reason
from mlops_operator.serving.shadow import ShadowCounts, decide, settings, slack_moments, verdict
from mlops_operator.serving.verdict import Outcome, sign_test_verdict

ROOT = Path(__file__).resolve().parents[3]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def canary(**shadow: object) -> Canary:
    return Canary.model_validate({"mode": "shadow", "shadow": shadow} if shadow else {"mode": "shadow"})


def classification(both: int, champion_only: int, challenger_only: int, neither: int) -> ShadowCounts:
    return ShadowCounts(
        pairs={
            "both": both,
            "champion_only": champion_only,
            "challenger_only": challenger_only,
            "neither": neither,
        },
        agree=both + neither,
        disagree=champion_only + challenger_only,
    )


def test_no_pairs_is_inconclusive_too_few() -> None:
    found = verdict(ShadowCounts(), settings(canary()))
    assert (found.outcome, found.reason, found.n) == (Outcome.INCONCLUSIVE, "TooFewPairs", 0)


# (id, counts, shadow settings, seconds since start, action, reason)
CASES: list[tuple[str, ShadowCounts, dict[str, object], float, str, Reason]] = [
    ("too-few-pairs-waits", classification(10, 0, 5, 0), {"minPairs": 100}, 60, "wait", Reason.SHADOW_ANALYSING),
    ("worse-rolls-back", classification(60, 25, 3, 12), {"minPairs": 50}, 60, "rollback", Reason.SHADOW_WORSE),
    ("better-promotes", classification(60, 3, 25, 12), {"minPairs": 50}, 60, "promote", Reason.SHADOW_PASSED),
    ("not-worse-waits-when-better-is-needed", classification(900, 0, 0, 100), {}, 60, "wait", Reason.SHADOW_ANALYSING),
    ("not-worse-promotes-when-configured", classification(900, 0, 0, 100), {"promoteOn": "NotWorse"}, 60, "promote", Reason.SHADOW_PASSED),
    ("inconclusive-at-deadline-rolls-back", classification(35, 0, 0, 5), {"minPairs": 10}, 3600, "rollback", Reason.SHADOW_DEADLINE),
    ("inconclusive-at-deadline-promotes-when-told", classification(35, 0, 0, 5), {"minPairs": 10, "onInconclusive": "Promote"}, 3600, "promote", Reason.SHADOW_DEADLINE),
    ("worse-beats-the-deadline", classification(60, 25, 3, 12), {"minPairs": 50, "onInconclusive": "Promote"}, 9999, "rollback", Reason.SHADOW_WORSE),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "counts", "shadow", "elapsed", "action", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_decide(
    name: str, counts: ShadowCounts, shadow: dict[str, object], elapsed: float, action: str, reason: Reason
) -> None:
    spec = canary(**shadow)
    found = verdict(counts, settings(spec))
    decision = decide(
        spec, T0, T0 + dt.timedelta(seconds=elapsed), found, CanaryStats(requests=100, errors=0)
    )
    assert (decision.action, decision.reason) == (action, reason), decision.message


def test_the_challengers_own_errors_roll_it_back_first() -> None:
    spec = canary(minPairs=50)
    found = verdict(classification(60, 3, 25, 12), settings(spec))
    assert found.outcome == Outcome.BETTER
    decision = decide(spec, T0, T0, found, CanaryStats(requests=100, errors=10))
    assert (decision.action, decision.reason) == ("rollback", Reason.ERROR_RATE)


def test_regression_counts_use_the_sign_test() -> None:
    counts = ShadowCounts(
        pairs={"challenger_better": 40, "champion_better": 15, "tie": 5},
        abs_error={"champion": 60.0, "challenger": 42.0},
    )
    found = verdict(counts, settings(canary(minPairs=50)))
    assert found.outcome == Outcome.BETTER
    assert found.champion_score == pytest.approx(1.0) and found.challenger_score == pytest.approx(0.7)
    assert found.effect == pytest.approx(0.3)
    # The always-valid p-value: 1 / (B(50, 25) / B(10, 10) x 2^55), scipy's betaln; the fixed-n
    # one-sided sign test would give binomtest(40, 55, alternative="greater") = 0.000505.
    from scipy.special import betaln

    assert found.p_value == pytest.approx(math.exp(-(betaln(50, 25) - betaln(10, 10) + 55 * math.log(2))))
    assert found.p_value == pytest.approx(0.0263, rel=1e-2)


@pytest.mark.parametrize(
    ("better", "worse", "outcome"),
    [
        (15, 40, Outcome.WORSE),
        (27, 28, Outcome.INCONCLUSIVE),
        (15, 0, Outcome.BETTER),
        (14, 0, Outcome.INCONCLUSIVE),
        (5, 0, Outcome.INCONCLUSIVE),
    ],
)
def test_sign_test_verdict(better: int, worse: int, outcome: Outcome) -> None:
    # Always valid: 15 of 15 closer gives p = 0.043, 14 of 14 p = 0.061 (a fixed-n sign test
    # would call 6 of 6 significant, p = 1/64, and be fooled by looking every pass); 5 of 5 is
    # below minPairs 6 anyway.
    found = sign_test_verdict(better, worse, 0, champion_mae=1.0, challenger_mae=1.0, min_pairs=6)
    assert found.outcome == outcome, found.message


def _regression_counts(champion: list[float], challenger: list[float]) -> ShadowCounts:
    """What the champion pods' counters hold for these absolute errors (server score_pairs)."""
    pairs = {"challenger_better": 0, "champion_better": 0, "tie": 0}
    for a, b in zip(champion, challenger, strict=True):
        pairs["tie" if a == b else ("challenger_better" if b < a else "champion_better")] += 1
    return ShadowCounts(
        pairs=pairs,
        abs_error={"champion": sum(champion), "challenger": sum(challenger)},
        products={
            "champion_squared": sum(a * a for a in champion),
            "challenger_squared": sum(b * b for b in challenger),
            "cross": sum(a * b for a, b in zip(champion, challenger, strict=True)),
        },
    )


def test_slack_moments_from_the_counters_equal_the_direct_ones() -> None:
    rng = random.Random(7)
    champion = [rng.uniform(0, 2) for _ in range(200)]
    challenger = [a * rng.uniform(0.8, 1.3) for a in champion]
    got = slack_moments(_regression_counts(champion, challenger), 200, 0.05)
    slack = [1.05 * a - b for a, b in zip(champion, challenger, strict=True)]
    assert got is not None and got.n == 200
    assert got.total == pytest.approx(sum(slack)) and got.squares == pytest.approx(sum(s * s for s in slack))
    assert slack_moments(ShadowCounts(pairs={"tie": 3}), 3, 0.05) is None  # a server without products


def test_regression_not_worse_within_a_relative_margin() -> None:
    """A challenger 2 % worse on every row (so the sign test calls it Worse): NotWorse within a 5 %
    margin, promoted with promoteOn NotWorse; still Worse when the margin is 1 %."""
    rng = random.Random(3)
    champion = [rng.uniform(0.5, 1.5) for _ in range(100)]
    challenger = [a * 1.02 for a in champion]
    counts = _regression_counts(champion, challenger)
    found = verdict(counts, settings(canary(minPairs=50, promoteOn="NotWorse", margin=0.05)))
    assert found.outcome == Outcome.NOT_WORSE, found.message
    assert found.p_value is not None and found.p_value < 1e-6 and "5%" in found.message
    assert (
        decide(
            canary(minPairs=50, promoteOn="NotWorse", margin=0.05), T0, T0, found, CanaryStats(100, 0)
        ).action
        == "promote"
    )
    tight = verdict(counts, settings(canary(minPairs=50, promoteOn="NotWorse", margin=0.01)))
    assert tight.outcome == Outcome.WORSE, tight.message
    # With promoteOn Better, NotWorse is no promotion: the analysis waits for its deadline.
    assert decide(canary(minPairs=50, margin=None), T0, T0, found, CanaryStats(100, 0)).action == "wait"


def test_regression_not_worse_is_scipys_one_sample_t_statistic_with_the_normal_tail() -> None:
    rng = random.Random(11)
    champion = [rng.uniform(0, 2) for _ in range(2000)]
    challenger = [max(0.0, a + rng.gauss(0.01, 0.3)) for a in champion]
    counts = _regression_counts(champion, challenger)
    found = sign_test_verdict(
        *(counts.pairs[k] for k in ("challenger_better", "champion_better", "tie")),
        champion_mae=1.0, challenger_mae=1.0, min_pairs=50,
        slack=slack_moments(counts, 2000, 0.05), margin=0.05,
    )  # fmt: skip
    slack = [1.05 * a - b for a, b in zip(champion, challenger, strict=True)]
    # The z statistic is scipy's one-sample t statistic; its p-value the normal tail of it.
    reference = sps.norm.sf(sps.ttest_1samp(slack, 0.0, alternative="greater").statistic)
    assert found.outcome == Outcome.NOT_WORSE and found.p_value == pytest.approx(reference, rel=1e-6)


def test_agreement() -> None:
    assert classification(8, 1, 1, 0).agreement == pytest.approx(0.8)
    assert ShadowCounts().agreement is None


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("canary",), "shadow settings need mode shadow"),
        (("canary", "shadow"), "margin applies only with promoteOn NotWorse"),
        (("canary",), "minLabelled applies to the split canary (shadow mode uses shadow.minPairs)"),
    ],
)
def test_admission_rules_are_in_the_crd(path: tuple[str, ...], message: str) -> None:
    """The generated CRD carries the CEL rules (the API server runs them: tests/cluster)."""
    doc = yaml.safe_load((ROOT / "crds" / "mlops.dev_inferenceservices.yaml").read_text())
    node = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for key in path:
        node = node["properties"][key]
    assert message in [rule["message"] for rule in node["x-kubernetes-validations"]]
