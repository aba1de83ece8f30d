"""Which ModelVersion to serve: pinned versions, latest/best policies, approval, minImprovement, rollbacks."""

from __future__ import annotations

from typing import Any

import pytest

from mlops_contract.api.inferenceservice import InferenceServiceSpec
from mlops_operator.serving.resolve import Reason, Resolution, resolve


def mv(
    version: int,
    *,
    phase: str | None = "Verified",
    gates: bool | None = True,
    metrics: dict[str, float] | None = None,
    primary: str | None = "accuracy",
    approved: str | None = None,
    model: str = "iris",
    deleting: bool = False,
    message: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"{model}-{version}", "namespace": "ml"}
    if approved is not None:
        meta["annotations"] = {"mlops.dev/approved-by": approved}
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    spec: dict[str, Any] = {
        "model": model,
        "version": version,
        "artifact": {"uri": f"pvc://a/{version}", "sha256": "a" * 64},
    }
    if metrics is not None:
        spec["metrics"] = metrics
    if primary is not None:
        spec["primaryMetric"] = primary
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if gates is not None:
        status["conditions"] = [
            {"type": "ArtifactVerified", "status": "True" if phase == "Verified" else "False"},
            {"type": "GatesPassed", "status": "True" if gates else "False"},
        ]
    if message:
        status["message"] = message
    return {"metadata": meta, "spec": spec, "status": status}


def with_baseline(version: dict[str, Any], baseline: str, metrics: dict[str, float]) -> dict[str, Any]:
    version["spec"]["baseline"] = {"modelVersion": baseline, "metrics": metrics}
    return version


def acc(value: float) -> dict[str, float]:
    return {"accuracy": value}


def spec(**fields: Any) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({"model": "iris", **fields})


LATEST = {"policy": {"select": "latest"}}
BEST = {"policy": {"select": "best"}}
MANUAL = {"policy": {"select": "latest", "promotion": "manual"}}


def policy(**fields: Any) -> dict[str, Any]:
    return {"policy": fields}


# (id, spec fields, versions, serving, rolled_back, expected name, expected reason, message fragments)
CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]], str | None, set[str], str | None, Reason, list[str]]] = [
    # --- pinned ---
    ("pinned-verified", {"version": 2}, [mv(1), mv(2), mv(3)], None, set(), "iris-2", Reason.PINNED, ["pinned"]),
    ("pinned-missing", {"version": 7}, [mv(1)], None, set(), None, Reason.VERSION_NOT_FOUND, ["version 7"]),
    ("pinned-pending", {"version": 1}, [mv(1, phase="Pending")], None, set(), None, Reason.VERSION_NOT_VERIFIED, ["Pending"]),
    ("pinned-no-status-yet", {"version": 1}, [mv(1, phase=None, gates=None)], None, set(), None, Reason.VERSION_NOT_VERIFIED, ["Pending"]),
    (
        "pinned-failed-says-why",
        {"version": 1},
        [mv(1, phase="Failed", message="sha256 mismatch")],
        None, set(), None, Reason.VERSION_FAILED, ["sha256 mismatch"],
    ),
    ("pinned-ignores-gates", {"version": 1}, [mv(1, gates=False)], None, set(), "iris-1", Reason.PINNED, []),
    ("pinned-overrides-served", {"version": 1, "policy": None}, [mv(1)], "iris-9", set(), "iris-1", Reason.PINNED, []),
    ("pinned-rolled-back", {"version": 2}, [mv(1), mv(2)], "iris-1", {"iris-2"}, None, Reason.VERSION_ROLLED_BACK, ["rolled back"]),
    ("pinned-other-model-ignored", {"version": 1}, [mv(1, model="wine")], None, set(), None, Reason.VERSION_NOT_FOUND, []),
    ("pinned-being-deleted-ignored", {"version": 1}, [mv(1, deleting=True)], None, set(), None, Reason.VERSION_NOT_FOUND, []),
    # --- latest ---
    ("latest-newest-verified", LATEST, [mv(1), mv(2), mv(3, phase="Verifying")], None, set(), "iris-2", Reason.LATEST, ["Chose iris-2"]),
    ("latest-skips-failed-gates", LATEST, [mv(1), mv(2, gates=False)], None, set(), "iris-1", Reason.LATEST, []),
    ("latest-needs-gates-condition", LATEST, [mv(1), mv(2, gates=None)], None, set(), "iris-1", Reason.LATEST, []),
    ("latest-order-independent", LATEST, [mv(3), mv(1), mv(2)], None, set(), "iris-3", Reason.LATEST, []),
    ("latest-nothing-servable", LATEST, [mv(1, phase="Failed")], None, set(), None, Reason.NO_CANDIDATE, ["Nothing to serve"]),
    ("latest-no-versions", LATEST, [], None, set(), None, Reason.NO_CANDIDATE, []),
    ("latest-already-served", LATEST, [mv(1), mv(2)], "iris-2", set(), "iris-2", Reason.LATEST, ["Serving iris-2"]),
    ("latest-upgrades", LATEST, [mv(1), mv(2)], "iris-1", set(), "iris-2", Reason.LATEST, ["Chose iris-2"]),
    (
        "latest-skips-rolled-back",
        LATEST, [mv(1), mv(2), mv(3)], "iris-2", {"iris-3"}, "iris-2", Reason.LATEST, ["iris-3 (v3) was rolled back"],
    ),
    (
        "latest-never-downgrades",
        LATEST, [mv(2), mv(3, gates=False)], "iris-3", set(), "iris-3", Reason.LATEST, ["newer than every candidate"],
    ),
    (
        "served-failed-is-replaced",
        LATEST, [mv(1), mv(2, phase="Failed")], "iris-2", set(), "iris-1", Reason.LATEST, ["iris-2 is Failed"],
    ),
    ("served-gone-is-replaced", LATEST, [mv(1)], "iris-9", set(), "iris-1", Reason.LATEST, ["iris-9 no longer exists"]),
    (
        "served-gone-nothing-else",
        LATEST, [mv(1, phase="Pending")], "iris-9", set(), None, Reason.NO_CANDIDATE, ["no longer exists"],
    ),
    (
        "served-ungated-kept-without-candidate",
        LATEST, [mv(1, gates=False)], "iris-1", set(), "iris-1", Reason.NO_CANDIDATE, ["Keeping iris-1"],
    ),
    ("no-policy-means-latest", {}, [mv(1), mv(2)], None, set(), "iris-2", Reason.LATEST, []),
    # --- best ---
    (
        "best-highest-accuracy",
        BEST, [mv(1, metrics=acc(0.9)), mv(2, metrics=acc(0.95)), mv(3, metrics=acc(0.93))],
        None, set(), "iris-2", Reason.BEST, ["accuracy 0.95"],
    ),
    (
        "best-lowest-rmse",
        policy(select="best", metric="rmse"),
        [mv(1, metrics={"rmse": 0.5}), mv(2, metrics={"rmse": 0.3}), mv(3, metrics={"rmse": 0.4})],
        None, set(), "iris-2", Reason.BEST, ["rmse 0.3"],
    ),
    (
        "best-default-is-primary-metric",
        BEST,
        [mv(1, metrics={"accuracy": 0.99, "f1": 0.5}, primary="f1"), mv(2, metrics={"accuracy": 0.9, "f1": 0.8}, primary="f1")],
        None, set(), "iris-2", Reason.BEST, ["f1 0.8"],
    ),
    (
        "best-tie-goes-to-newer",
        BEST, [mv(1, metrics=acc(0.9)), mv(2, metrics=acc(0.9))], None, set(), "iris-2", Reason.BEST, [],
    ),
    (
        "best-skips-unranked",
        BEST, [mv(1, metrics=acc(0.9)), mv(2, metrics={"f1": 0.99})], None, set(), "iris-1", Reason.BEST, [],
    ),
    (
        "best-no-metric-anywhere",
        BEST, [mv(1, primary=None), mv(2, primary=None)], None, set(), None, Reason.NO_CANDIDATE, ["no candidate has a value"],
    ),
    (
        "best-unknown-metric-higher-wins",
        policy(select="best", metric="custom"),
        [mv(1, metrics={"custom": 2.0}), mv(2, metrics={"custom": 1.0})],
        None, set(), "iris-1", Reason.BEST, [],
    ),
    (
        "best-keeps-served-best",
        BEST, [mv(1, metrics=acc(0.97)), mv(2, metrics=acc(0.9))], "iris-1", set(), "iris-1", Reason.BEST, ["Serving iris-1"],
    ),
    (
        "best-older-but-better-replaces",
        BEST, [mv(1, metrics=acc(0.97)), mv(2, metrics=acc(0.9))], "iris-2", set(), "iris-1", Reason.BEST, [],
    ),
    (
        "best-skips-rolled-back",
        BEST, [mv(1, metrics=acc(0.9)), mv(2, metrics=acc(0.99))], "iris-1", {"iris-2"}, "iris-1", Reason.BEST, ["rolled back"],
    ),
    # --- minImprovement ---
    (
        "latest-not-better-by-min",
        policy(select="latest", minImprovement=0.01),
        [mv(1, metrics=acc(0.9)), mv(2, metrics=acc(0.905))],
        "iris-1", set(), "iris-1", Reason.NOT_BETTER, ["0.905", "0.9", "minImprovement 0.01"],
    ),
    (
        "latest-better-by-exactly-min-despite-float-noise",
        policy(select="latest", minImprovement=0.1),
        [mv(1, metrics=acc(0.8)), mv(2, metrics=acc(0.9))],
        "iris-1", set(), "iris-2", Reason.LATEST, [],
    ),
    (
        "latest-worse-is-not-better-even-with-zero-min",
        LATEST, [mv(1, metrics=acc(0.95)), mv(2, metrics=acc(0.9))], "iris-1", set(), "iris-1", Reason.NOT_BETTER, [],
    ),
    (
        "latest-equal-passes-zero-min",
        LATEST, [mv(1, metrics=acc(0.9)), mv(2, metrics=acc(0.9))], "iris-1", set(), "iris-2", Reason.LATEST, [],
    ),
    (
        "latest-nothing-to-compare-replaces",
        policy(select="latest", minImprovement=0.5), [mv(1), mv(2)], "iris-1", set(), "iris-2", Reason.LATEST, [],
    ),
    (
        "min-improvement-lower-is-better",
        policy(select="best", metric="rmse", minImprovement=0.1),
        [mv(1, metrics={"rmse": 0.5}), mv(2, metrics={"rmse": 0.45})],
        "iris-1", set(), "iris-1", Reason.NOT_BETTER, ["rmse 0.45", "0.5"],
    ),
    (
        "min-improvement-lower-is-better-enough",
        policy(select="best", metric="rmse", minImprovement=0.1),
        [mv(1, metrics={"rmse": 0.5}), mv(2, metrics={"rmse": 0.35})],
        "iris-1", set(), "iris-2", Reason.BEST, [],
    ),
    # --- like-for-like: the candidate's run scored the served version on its own held-out rows ---
    (
        "baseline-on-same-rows-lets-a-better-model-through",
        LATEST,
        [mv(1, metrics=acc(1.0)), with_baseline(mv(2, metrics=acc(0.87)), "iris-1", acc(0.7))],
        "iris-1", set(), "iris-2", Reason.LATEST, [],
    ),
    (
        "baseline-on-same-rows-holds-a-worse-model-back",
        LATEST,
        [mv(1, metrics=acc(0.8)), with_baseline(mv(2, metrics=acc(0.9)), "iris-1", acc(0.95))],
        "iris-1", set(), "iris-1", Reason.NOT_BETTER, ["0.9", "iris-1's 0.95", "on the same held-out rows"],
    ),
    (
        "baseline-of-another-version-is-ignored",
        LATEST,
        [mv(1, metrics=acc(0.97)), with_baseline(mv(2, metrics=acc(0.9)), "iris-0", acc(0.5))],
        "iris-1", set(), "iris-1", Reason.NOT_BETTER, ["iris-1's 0.97", "each on its own held-out rows"],
    ),
    (
        "no-comparison-with-unverified-served",
        policy(select="latest", minImprovement=0.5),
        [mv(1, metrics=acc(0.99), phase="Failed"), mv(2, metrics=acc(0.5))],
        "iris-1", set(), "iris-2", Reason.LATEST, ["iris-1 is Failed"],
    ),
    (
        "first-choice-needs-no-comparison",
        policy(select="latest", minImprovement=0.5), [mv(1, metrics=acc(0.5))], None, set(), "iris-1", Reason.LATEST, [],
    ),
    # --- manual promotion ---
    (
        "manual-only-approved",
        MANUAL, [mv(1, approved="ana"), mv(2)], None, set(), "iris-1", Reason.LATEST, ["iris-2 (v2) awaits approval"],
    ),
    (
        "manual-served-kept-newer-awaits",
        MANUAL, [mv(1, approved="ana"), mv(2)], "iris-1", set(), "iris-1", Reason.AWAITING_APPROVAL, ["awaits approval"],
    ),
    (
        "manual-nothing-approved",
        MANUAL, [mv(1), mv(2)], None, set(), None, Reason.AWAITING_APPROVAL, ["iris-2 (v2) awaits approval"],
    ),
    ("manual-approved-newer-replaces", MANUAL, [mv(1, approved="ana"), mv(2, approved="bo")], "iris-1", set(), "iris-2", Reason.LATEST, []),
    (
        "manual-blank-annotation-is-no-approval",
        MANUAL, [mv(1, approved="ana"), mv(2, approved="  ")], "iris-1", set(), "iris-1", Reason.AWAITING_APPROVAL, [],
    ),
    (
        "manual-served-unapproved-not-downgraded",
        MANUAL, [mv(1, approved="ana"), mv(2)], "iris-2", set(), "iris-2", Reason.LATEST, ["newer than every candidate"],
    ),
    (
        "manual-best",
        policy(select="best", promotion="manual"),
        [mv(1, metrics=acc(0.9), approved="ana"), mv(2, metrics=acc(0.99))],
        "iris-1", set(), "iris-1", Reason.AWAITING_APPROVAL, ["iris-2 (v2) awaits approval"],
    ),
    (
        "manual-rolled-back-approved-not-chosen",
        MANUAL, [mv(1, approved="ana"), mv(2, approved="bo")], "iris-1", {"iris-2"}, "iris-1", Reason.LATEST, ["rolled back"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "fields", "versions", "serving", "rolled_back", "expected", "reason", "fragments"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_resolve(
    name: str,
    fields: dict[str, Any],
    versions: list[dict[str, Any]],
    serving: str | None,
    rolled_back: set[str],
    expected: str | None,
    reason: Reason,
    fragments: list[str],
) -> None:
    fields = {k: v for k, v in fields.items() if v is not None}
    result = resolve(spec(**fields), versions, serving, rolled_back)
    assert (result.name, result.reason) == (expected, reason), result.message
    for fragment in fragments:
        assert fragment in result.message
    if expected is not None:
        assert result.version == int(expected.rsplit("-", 1)[1])
    else:
        assert result.version is None


def test_resolve_is_deterministic() -> None:
    versions = [mv(1, metrics=acc(0.9)), mv(2, metrics=acc(0.95), approved="x"), mv(3)]
    s = spec(**BEST)
    first = resolve(s, versions, "iris-1", {"iris-3"})
    assert resolve(s, list(reversed(versions)), "iris-1", {"iris-3"}) == first
    assert isinstance(first, Resolution)


def test_reasons_are_camel_case_condition_reasons() -> None:
    for reason in Reason:
        assert reason.value[0].isupper()
        assert reason.value.isalnum()


def test_shadow_mode_lets_live_traffic_judge_a_version_worse_offline() -> None:
    """Issue #22: in shadow mode the offline comparison does not hold a candidate back (the
    shadow verdict on live labelled pairs decides); in split mode it does."""
    versions = [mv(1, metrics=acc(0.95)), mv(2, metrics=acc(0.9))]
    split = resolve(spec(**LATEST, canary={"mode": "split"}), versions, "iris-1")
    assert (split.name, split.reason) == ("iris-1", Reason.NOT_BETTER)
    shadow = resolve(spec(**LATEST, canary={"mode": "shadow"}), versions, "iris-1")
    assert shadow.name == "iris-2"
