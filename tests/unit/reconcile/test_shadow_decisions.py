"""Shadow mode in the InferenceService pass (issue #22): rollout steps, the verdict's wiring into
status.canary, the ShadowVerdict condition and Event, and the metrics read from pods or PromQL."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from test_inferenceservice_decisions import (
    NOW,
    NOW_S,
    SETTINGS,
    Facts,
    deployed,
    describe,
    isvc,
    mv,
    parsed,
    seen,
)

from mlops_contract.timeutil import format_time
from mlops_operator.build import inferenceservice as build
from mlops_operator.build import networkpolicy
from mlops_operator.monitor import promql, scrape
from mlops_operator.reconcile.inferenceservice import (
    canary_step,
    compute_status,
    decide_rollout,
    from_prometheus,
    service_steps,
)
from mlops_operator.serving.canary import CanaryStats
from mlops_operator.serving.shadow import CLASSIFICATION_OUTCOMES, ShadowCounts

SHADOW = {"mode": "shadow", "shadow": {"minPairs": 50, "deadlineSeconds": 600}}


def body(**canary: Any) -> dict[str, Any]:
    return isvc(canary={**SHADOW, **canary})


def started(elapsed: float = 60) -> tuple[dict[str, Any], Any]:
    b = body()
    observed = seen([1, 2], 1)
    return b, decide_rollout(b, parsed(b), observed, SETTINGS, format_time(NOW - timedelta(seconds=elapsed)))


def pairs(*counts: int) -> ShadowCounts:
    """Counts of (both right, champion only, challenger only, neither); agreement follows."""
    table = dict(zip(CLASSIFICATION_OUTCOMES, counts, strict=True))
    return ShadowCounts(table, agree=counts[0] + counts[3], disagree=counts[1] + counts[2])


def test_the_challenger_serves_no_user_and_the_champion_keeps_every_replica() -> None:
    _, ro = started()
    assert [describe(s) for s in ro.steps] == [
        "event CanaryStarted",
        "apply Deployment/iris-canary iris-v2 x1 ->canary",
        "apply Deployment/iris-predictor iris-v1 x2",
    ]
    assert ro.canary is not None and ro.canary["mode"] == "shadow" and ro.analyse
    b = body()
    spec = parsed(b)
    service, shadow_service = (s.manifest for s in service_steps(b, spec, False)[:2])  # type: ignore[union-attr]
    assert service["spec"]["selector"] == {"mlops.dev/inference-service": "iris", "mlops.dev/track": "stable"}
    assert shadow_service["metadata"]["name"] == "iris-shadow"
    assert shadow_service["spec"]["selector"] == {
        "mlops.dev/inference-service": "iris",
        "mlops.dev/track": "canary",
    }
    stable = build.deployment(b, spec, mv(1), SETTINGS, track="stable", replicas=2)
    args = stable["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--shadow-url") + 1] == "http://iris-shadow.ml.svc:80"
    challenger = build.deployment(b, spec, mv(2), SETTINGS, track="canary", replicas=1)
    c_args = challenger["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--shadow-url" not in c_args and "--prediction-log" not in c_args
    assert "--prediction-log" in args


def test_leaving_shadow_mode_deletes_the_shadow_service() -> None:
    b = isvc(canary={"mode": "split"})
    steps = [describe(s) for s in service_steps(b, parsed(b), False, True)]
    assert steps == ["apply Service/iris", "delete Service/iris-shadow"]


def test_the_network_policy_lets_the_champion_reach_the_challenger() -> None:
    b = isvc(canary=SHADOW, access={"predictionFrom": ["apps"]})
    policy = networkpolicy.network_policy(b, parsed(b), SETTINGS)
    assert policy is not None
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"mlops.dev/inference-service": "iris"}}} in peers


# (id, counts, elapsed, steps added, phase, verdict)
STEP_CASES: list[tuple[str, ShadowCounts, float, list[str], str, str]] = [
    ("too-few-pairs-waits-quietly", pairs(10, 0, 5, 0), 60, [], "Progressing", "Inconclusive"),
    ("better-is-promoted", pairs(60, 3, 25, 12), 60, ["apply Deployment/iris-predictor iris-v2 x2 ->stable", "delete Deployment/iris-canary", "event CanaryPromoted"], "Promoted", "Better"),
    ("worse-is-rolled-back", pairs(60, 25, 3, 12), 60, ["delete Deployment/iris-canary", "apply Deployment/iris-predictor iris-v1 x2", "event CanaryRolledBack warning"], "RolledBack", "Worse"),
    ("inconclusive-at-the-deadline-rolls-back", pairs(35, 1, 1, 13), 601, ["delete Deployment/iris-canary", "apply Deployment/iris-predictor iris-v1 x2", "event CanaryRolledBack warning"], "RolledBack", "Inconclusive"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "counts", "elapsed", "steps", "phase", "verdict"), STEP_CASES, ids=[c[0] for c in STEP_CASES]
)
def test_canary_step_in_shadow_mode(
    name: str, counts: ShadowCounts, elapsed: float, steps: list[str], phase: str, verdict: str
) -> None:
    b, ro = started(elapsed)
    before = [describe(s) for s in ro.steps]
    after = canary_step(
        b,
        parsed(b),
        ro,
        CanaryStats(40, 0),
        versions=seen([1, 2]).versions,
        settings=SETTINGS,
        now=NOW,
        counts=counts,
    )
    verdict_event = (
        []
        if verdict == "Inconclusive"
        else [f"event ShadowVerdict{' warning' if verdict == 'Worse' else ''}"]
    )
    assert [describe(s) for s in after.steps] == before + verdict_event + steps
    assert after.canary is not None
    assert (after.canary["phase"], after.canary["verdict"], after.canary["pairs"]) == (
        phase,
        verdict,
        sum(counts.pairs.values()),
    )
    assert after.canary["agreement"] == round(counts.agreement or 0, 4)
    assert after.serving == ("iris-v2" if phase == "Promoted" else "iris-v1")


def test_the_verdict_event_fires_only_when_the_verdict_changes() -> None:
    b, ro = started()
    ro = dataclasses.replace(ro, canary={**(ro.canary or {}), "verdict": "Inconclusive"}, steps=())
    kwargs: dict[str, Any] = {"versions": seen([1, 2]).versions, "settings": SETTINGS, "now": NOW}
    same = canary_step(b, parsed(b), ro, CanaryStats(40, 0), counts=pairs(30, 0, 0, 5), **kwargs)
    assert same.steps == ()
    assert same.canary is not None
    again = canary_step(
        b,
        parsed(b),
        dataclasses.replace(same, steps=()),
        CanaryStats(40, 0),
        counts=pairs(30, 0, 0, 5),
        **kwargs,
    )
    assert again.canary == same.canary  # nothing moved: no status change, so no write


def test_status_shows_the_verdict_as_a_condition_and_all_traffic_on_the_champion() -> None:
    b, ro = started()
    after = canary_step(
        b, parsed(b), ro, CanaryStats(40, 0), versions=seen([1, 2]).versions, settings=SETTINGS, now=NOW,
        counts=pairs(30, 5, 3, 12),
    )  # fmt: skip
    facts = Facts(after, {"iris-v1": mv(1), "iris-v2": mv(2)}, deployed(1), deployed(2, "canary", 1), {})
    status = compute_status(b, parsed(b), facts, NOW_S)
    cond = next(c for c in status["conditions"] if c["type"] == "ShadowVerdict")
    assert (cond["status"], cond["reason"]) == ("Unknown", "Inconclusive")
    assert "50 labelled pairs" in cond["message"]
    assert status["traffic"] == [
        {"modelVersion": "iris-v1", "percent": 100, "replicas": 2},
        {"modelVersion": "iris-v2", "percent": 0, "replicas": 1},
    ]
    assert status["canary"]["championScore"] == 0.7 and status["canary"]["challengerScore"] == 0.66


def test_shadow_counts_from_pod_scrapes() -> None:
    text = """
mlops_shadow_pairs_total{model="iris",version="iris-v1",challenger="iris-v2",outcome="both"} 7
mlops_shadow_pairs_total{model="iris",version="iris-v1",challenger="iris-v2",outcome="challenger_only"} 2
mlops_shadow_pairs_total{model="iris",version="iris-v1",challenger="iris-v0",outcome="both"} 100
mlops_shadow_rows_total{model="iris",version="iris-v1",challenger="iris-v2",agreement="agree"} 9
mlops_shadow_rows_total{model="iris",version="iris-v1",challenger="iris-v2",agreement="disagree"} 3
mlops_shadow_error_products_total{model="iris",version="iris-v1",challenger="iris-v2",term="cross"} 1.5
mlops_shadow_error_products_total{model="iris",version="iris-v1",challenger="iris-v0",term="cross"} 100
"""
    samples = [scrape.parse(text, "a"), scrape.parse(text, "b")]
    counts = scrape.shadow_counts(samples, "iris-v2")
    assert dict(counts.pairs) == {"both": 14, "challenger_only": 4}  # summed over pods, iris-v0 apart
    assert (counts.agree, counts.disagree) == (18, 6)
    assert dict(counts.products) == {"cross": 3.0}


def test_shadow_counts_from_prometheus() -> None:
    expr = promql.query(
        "ml", "iris", window_seconds=None, canary=promql.CanaryWindow("iris-v2", 90, shadow=True)
    )
    assert (
        'sum by (outcome) (last_over_time(mlops_shadow_pairs_total{namespace="ml",inference_service="iris",'
        'track="stable",challenger="iris-v2"}[90s]))' in expr
    )
    answer = [
        promql.Sample({"signal": "canary_pods", "pod": "c"}, 1),
        promql.Sample({"signal": "canary_requests"}, 40),
        promql.Sample({"signal": "shadow_pairs", "outcome": "both"}, 60),
        promql.Sample({"signal": "shadow_pairs", "outcome": "champion_only"}, 3),
        promql.Sample({"signal": "shadow_pairs", "outcome": "challenger_only"}, 25),
        promql.Sample({"signal": "shadow_pairs", "outcome": "neither"}, 12),
        promql.Sample({"signal": "shadow_rows", "agreement": "agree"}, 72),
        promql.Sample({"signal": "shadow_products", "term": "cross"}, 4.5),
    ]
    b = isvc(canary=SHADOW, monitoring={"prometheusUrl": "http://prometheus.monitoring:9090"})
    _, ro = started()
    result = from_prometheus(
        b, parsed(b), ro, answer, due=False, previous=None, versions=seen([1, 2]).versions, settings=SETTINGS, now=NOW
    )  # fmt: skip
    assert result.rollout.canary is not None
    assert (result.rollout.canary["verdict"], result.rollout.canary["phase"]) == ("Better", "Promoted")
    assert "sum by (term) (last_over_time(mlops_shadow_error_products_total{" in expr
    assert dict(promql.signals(answer).shadow.products) == {"cross": 4.5}
