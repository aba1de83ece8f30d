"""The shadow decision (issue #22): counts -> verdict -> wait, promote or roll back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from mlops_contract.api.inferenceservice import Canary
from mlops_operator.serving.canary import CanaryStats, Reason
from mlops_operator.serving.shadow import ShadowCounts, decide, settings, verdict
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
    # scipy.stats.binomtest(40, 55, alternative="greater").pvalue
    assert found.p_value == pytest.approx(0.000505, rel=1e-2)


@pytest.mark.parametrize(
    ("better", "worse", "outcome"),
    [
        (15, 40, Outcome.WORSE),
        (27, 28, Outcome.INCONCLUSIVE),
        (6, 0, Outcome.BETTER),
        (5, 0, Outcome.INCONCLUSIVE),
    ],
)
def test_sign_test_verdict(better: int, worse: int, outcome: Outcome) -> None:
    # 6 of 6 closer: p = 1/64 < 0.05; 5 of 5: p = 1/32 = 0.031 < 0.05 too, but below minPairs 6.
    found = sign_test_verdict(better, worse, 0, champion_mae=1.0, challenger_mae=1.0, min_pairs=6)
    assert found.outcome == outcome, found.message


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
