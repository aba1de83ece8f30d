"""Retraining triggers over sequences of scrapes: drift K-in-a-row, accuracy, schedule, manual, blocks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlops_contract.api.inferenceservice import Retraining
from mlops_operator.monitor.triggers import (
    Reason,
    TriggerDecision,
    TriggerState,
    evaluate,
    retraining_condition,
    retraining_job_name,
    retraining_status,
    run_outcome,
)

T0 = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)  # a Monday
TEMPLATE = {"data": {"source": {"uri": "builtin:iris"}}, "estimator": {"class": "RandomForestClassifier"}}
DRIFT = {"drift": {"threshold": 0.25, "consecutive": 3}}
ACCURACY = {"accuracy": {"min": 0.85, "minSamples": 50}}


def retraining(triggers: dict[str, Any] | None = None, **fields: Any) -> Retraining:
    return Retraining.model_validate(
        {"template": TEMPLATE, "cooldownSeconds": 0, "triggers": triggers or {}, **fields}
    )


Step = tuple[float, dict[str, Any] | None, dict[str, str] | None]  # (minutes after T0, metrics, annotations)


def run(
    r: Retraining | None,
    steps: Sequence[Step],
    state: TriggerState | None = None,
    *,
    runs_finish: bool = True,
) -> tuple[list[TriggerDecision], TriggerState]:
    """Evaluate each step in turn, as the scrape loop would.

    With `runs_finish`, the caller's bookkeeping is simulated: runs created in a step have
    finished (left active_jobs) by the next one, so maxConcurrent does not interfere.
    """
    decisions = []
    current = state or TriggerState()
    for i, (minutes, metrics, notes) in enumerate(steps):
        if runs_finish and i > 0:
            current = replace(current, active_jobs=())
        decision, current = evaluate(
            r, current, metrics, notes, T0 + timedelta(minutes=minutes), isvc_name="iris"
        )
        decisions.append(decision)
    return decisions, current


def fired(decisions: Sequence[TriggerDecision]) -> list[str | None]:
    """The trigger of each step, or None where nothing fired."""
    return [d.trigger if d.fire else None for d in decisions]


def drifts(*values: float | None) -> list[Step]:
    return [(i, None if v is None else {"drift": v}, None) for i, v in enumerate(values)]


# --- drift: K consecutive scrapes -------------------------------------------------------------

DRIFT_CASES: list[tuple[str, list[Step], list[str | None], int]] = [
    ("fires-on-the-third-breach", drifts(0.3, 0.3, 0.3), [None, None, "drift"], 0),
    ("a-scrape-below-resets", drifts(0.3, 0.3, 0.2, 0.3, 0.3), [None] * 5, 2),
    ("at-threshold-is-not-above", drifts(0.3, 0.3, 0.25, 0.3), [None] * 4, 1),
    ("no-new-scrape-keeps-the-count", drifts(0.3, None, 0.3, None, 0.3), [None, None, None, None, "drift"], 0),
    (
        "drift-unknown-keeps-the-count",
        [(0, {"drift": 0.3}, None), (1, {"requests": 5}, None), (2, {"drift": 0.3}, None), (3, {"drift": 0.3}, None)],
        [None, None, None, "drift"],
        0,
    ),
    (
        "firing-resets-so-k-more-are-needed",
        drifts(0.3, 0.3, 0.3, 0.3, 0.3, 0.3),
        [None, None, "drift", None, None, "drift"],
        0,
    ),
    (
        "camel-case-status-metrics",
        [(i, {"drift": 0.9, "labelledSamples": 1}, None) for i in range(3)],
        [None, None, "drift"],
        0,
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "steps", "expected", "breaches"), DRIFT_CASES, ids=[c[0] for c in DRIFT_CASES]
)
def test_drift_trigger(name: str, steps: list[Step], expected: list[str | None], breaches: int) -> None:
    decisions, state = run(retraining(DRIFT), steps)
    assert fired(decisions) == expected
    assert state.drift_breaches == breaches


def test_drift_progress_is_reported() -> None:
    decisions, _ = run(retraining(DRIFT), drifts(0.3, 0.3))
    assert decisions[-1].reason == Reason.NO_TRIGGER
    assert "2/3" in decisions[-1].message


def test_drift_count_resets_without_a_drift_trigger() -> None:
    decisions, state = run(retraining(ACCURACY), drifts(0.9), TriggerState(drift_breaches=5))
    assert state.drift_breaches == 0
    assert fired(decisions) == [None]


# --- accuracy ---------------------------------------------------------------------------------

ACCURACY_CASES = [
    ("too-few-samples", {"accuracy": 0.5, "labelled_samples": 49}, None),
    ("low-with-enough-samples", {"accuracy": 0.5, "labelled_samples": 50}, "accuracy"),
    ("at-minimum-is-fine", {"accuracy": 0.85, "labelled_samples": 500}, None),
    ("no-accuracy-yet", {"labelled_samples": 500}, None),
    ("samples-unknown", {"accuracy": 0.1}, None),
    ("camel-case-status-metrics", {"accuracy": 0.5, "labelledSamples": 60}, "accuracy"),
]


@pytest.mark.parametrize(("name", "metrics", "expected"), ACCURACY_CASES, ids=[c[0] for c in ACCURACY_CASES])
def test_accuracy_trigger(name: str, metrics: dict[str, Any], expected: str | None) -> None:
    decisions, _ = run(retraining(ACCURACY), [(0, metrics, None)])
    assert fired(decisions) == [expected]


def test_accuracy_message_has_the_numbers() -> None:
    decisions, _ = run(retraining(ACCURACY), [(0, {"accuracy": 0.5, "labelled_samples": 60}, None)])
    assert decisions[0].reason == Reason.ACCURACY
    assert "0.5" in decisions[0].message
    assert "60" in decisions[0].message


ESTIMATE: dict[str, Any] = {"estimatedAccuracy": {"min": 0.8}}


@pytest.mark.parametrize(
    ("name", "metrics", "expected"),
    [
        ("below-fires-before-any-label", {"estimated_accuracy": 0.62}, "estimatedAccuracy"),
        ("at-minimum-does-not", {"estimated_accuracy": 0.8}, None),
        ("above-does-not", {"estimated_accuracy": 0.95}, None),
        ("no-estimate-yet", {"drift": 0.1}, None),
        ("camel-case-key", {"estimatedAccuracy": 0.5}, "estimatedAccuracy"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_estimated_accuracy_trigger(name: str, metrics: dict[str, Any], expected: str | None) -> None:
    decisions, _ = run(retraining(ESTIMATE), [(0, metrics, None)])
    assert fired(decisions) == [expected]
    if expected:
        assert decisions[0].reason == Reason.ESTIMATED_ACCURACY
        assert "before labels" in decisions[0].message


def test_estimated_accuracy_waits_for_a_scrape() -> None:
    decisions, _ = run(retraining(ESTIMATE), [(0, None, None)])
    assert fired(decisions) == [None]


# --- manual -----------------------------------------------------------------------------------

RETRAIN = "mlops.dev/retrain"

MANUAL_CASES: list[tuple[str, str | None, list[str | None], list[str | None]]] = [
    ("new-value-fires", None, ["now"], ["manual"]),
    ("same-value-fires-once", None, ["now", "now", "now"], ["manual", None, None]),
    ("another-value-fires-again", None, ["a", "a", "b"], ["manual", None, "manual"]),
    ("value-already-acted-on", "a", ["a"], [None]),
    ("empty-value-ignored", None, [""], [None]),
    ("removal-is-not-a-request", "a", [None], [None]),
]


@pytest.mark.parametrize(
    ("name", "last", "values", "expected"), MANUAL_CASES, ids=[c[0] for c in MANUAL_CASES]
)
def test_manual_trigger(
    name: str, last: str | None, values: list[str | None], expected: list[str | None]
) -> None:
    steps: list[Step] = [(i, None, {RETRAIN: v} if v is not None else {}) for i, v in enumerate(values)]
    decisions, state = run(retraining(), steps, TriggerState(last_manual=last))
    assert fired(decisions) == expected
    if "manual" in expected:
        assert state.last_manual == values[len(expected) - 1 - expected[::-1].index("manual")]


# --- schedule ---------------------------------------------------------------------------------


def test_schedule_first_sight_records_the_slot_without_firing() -> None:
    decisions, state = run(retraining({"schedule": "0 3 * * *"}), [(0, None, None)])
    assert fired(decisions) == [None]
    assert state.last_schedule == "2025-03-03T03:00:00Z"


def test_schedule_fires_once_per_slot_across_a_day_boundary() -> None:
    r = retraining({"schedule": "30 23 * * *"})
    steps: list[Step] = [
        (13 * 60, None, None),  # 23:00 Mon: first sight, slot Sun 23:30 recorded
        (13 * 60 + 31, None, None),  # 23:31 Mon: Mon 23:30 slot fires
        (13 * 60 + 45, None, None),  # 23:45 Mon: same slot
        (14 * 60 + 10, None, None),  # 00:10 Tue: still Mon 23:30
        (37 * 60 + 29, None, None),  # 23:29 Tue: still Mon 23:30
        (37 * 60 + 30, None, None),  # 23:30 Tue: the next slot
    ]
    decisions, state = run(r, steps)
    assert fired(decisions) == [None, "schedule", None, None, None, "schedule"]
    assert state.last_schedule == "2025-03-04T23:30:00Z"
    assert state.count == 2


def test_missed_slots_fire_once() -> None:
    r = retraining({"schedule": "0 * * * *"})
    state = TriggerState(last_schedule="2025-03-03T05:00:00Z")
    decisions, state = run(r, [(0, None, None), (1, None, None)], state)  # 10:00: five slots missed
    assert fired(decisions) == ["schedule", None]
    assert state.last_schedule == "2025-03-03T10:00:00Z"


def test_invalid_schedule_is_ignored_and_reported() -> None:
    r = retraining({"schedule": "0 0 31 2 *"})
    decisions, _ = run(r, [(0, None, None), (1, None, {RETRAIN: "x"})])
    assert decisions[0].reason == Reason.NO_TRIGGER
    assert "schedule ignored" in decisions[0].message.lower()
    assert fired(decisions) == [None, "manual"]


# --- blocks -----------------------------------------------------------------------------------


def test_cooldown_blocks_then_releases() -> None:
    r = retraining(DRIFT | ACCURACY, cooldownSeconds=600)
    low = {"accuracy": 0.5, "labelled_samples": 100}
    decisions, state = run(r, [(0, low, None), (5, low, None), (9, low, None), (10, low, None)])
    assert fired(decisions) == ["accuracy", None, None, "accuracy"]
    assert decisions[1].reason == Reason.COOLDOWN
    assert "2025-03-03T10:10:00Z" in decisions[1].message
    assert decisions[1].pending == ("accuracy",)
    assert state.count == 2


def test_max_concurrent_blocks_and_names_the_running_jobs() -> None:
    r = retraining(maxConcurrent=1)
    state = TriggerState(active_jobs=("iris-retrain-1",), count=1)
    decisions, state = run(r, [(0, None, {RETRAIN: "go"})], state)
    assert fired(decisions) == [None]
    assert decisions[0].reason == Reason.MAX_CONCURRENT
    assert "iris-retrain-1" in decisions[0].message
    assert state.last_manual is None  # not consumed: it fires once the run finishes
    decisions, state = run(r, [(1, None, {RETRAIN: "go"})], replace(state, active_jobs=()))
    assert fired(decisions) == ["manual"]
    assert state.active_jobs == ("iris-retrain-2",)


def test_max_concurrent_allows_up_to_the_limit() -> None:
    r = retraining(maxConcurrent=2)
    decisions, _ = run(r, [(0, None, {RETRAIN: "go"})], TriggerState(active_jobs=("a",)))
    assert fired(decisions) == ["manual"]


def test_disabled_blocks_without_consuming() -> None:
    paused = retraining({"schedule": "0 * * * *"} | DRIFT, enabled=False)
    steps: list[Step] = [
        (0, {"drift": 0.9}, None),
        (61, {"drift": 0.9}, {RETRAIN: "x"}),
        (62, {"drift": 0.9}, None),
    ]
    decisions, state = run(paused, steps)
    assert fired(decisions) == [None, None, None]
    assert decisions[0].reason == Reason.DISABLED
    assert decisions[1].reason == Reason.DISABLED
    assert set(decisions[1].pending) == {"manual", "schedule"}
    assert state.drift_breaches == 3  # observing goes on while paused
    enabled = retraining({"schedule": "0 * * * *"} | DRIFT)
    decisions, state = run(enabled, [(63, None, {RETRAIN: "x"})], state)
    assert fired(decisions) == ["manual"]
    assert set(decisions[0].pending) == {"manual", "drift", "schedule"}


def test_blocks_are_checked_in_order() -> None:
    r = retraining(enabled=False, cooldownSeconds=600, maxConcurrent=1)
    state = TriggerState(last_triggered_at=T0, active_jobs=("a",))
    decisions, _ = run(r, [(1, None, {RETRAIN: "x"})], state)
    assert decisions[0].reason == Reason.DISABLED
    decisions, _ = run(retraining(cooldownSeconds=600, maxConcurrent=1), [(1, None, {RETRAIN: "x"})], state)
    assert decisions[0].reason == Reason.COOLDOWN


def test_not_configured() -> None:
    decision, state = evaluate(
        None, TriggerState(drift_breaches=2), {"drift": 1.0}, {RETRAIN: "x"}, T0, isvc_name="iris"
    )
    assert (decision.fire, decision.reason) == (False, Reason.NOT_CONFIGURED)
    assert state.drift_breaches == 0


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(retraining(), TriggerState(), None, None, datetime(2025, 1, 1), isvc_name="iris")


# --- firing -----------------------------------------------------------------------------------


def test_one_run_settles_every_pending_trigger() -> None:
    r = retraining(DRIFT | ACCURACY | {"schedule": "0 * * * *"})
    state = TriggerState(drift_breaches=2, last_schedule="2025-03-03T09:00:00Z", count=4)
    metrics = {"drift": 0.9, "accuracy": 0.1, "labelled_samples": 100}
    decisions, state = run(r, [(0, metrics, {RETRAIN: "please"})], state)
    (d,) = decisions
    assert (d.fire, d.trigger, d.reason) == (True, "manual", Reason.MANUAL)
    assert d.pending == ("manual", "drift", "accuracy", "schedule")
    assert d.job_name == "iris-retrain-5"
    for fragment in ("please", "drift above 0.25", "accuracy 0.1", "slot 2025-03-03T10:00:00Z"):
        assert fragment in d.message
    assert state == TriggerState(
        drift_breaches=0,
        last_triggered_at=T0,
        active_jobs=("iris-retrain-5",),
        last_manual="please",
        last_schedule="2025-03-03T10:00:00Z",
        count=5,
    )


@pytest.mark.parametrize(
    ("triggers", "metrics", "first"),
    [
        (DRIFT | ACCURACY, {"drift": 0.9, "accuracy": 0.1, "labelled_samples": 100}, "drift"),
        (ACCURACY | {"schedule": "0 * * * *"}, {"accuracy": 0.1, "labelled_samples": 100}, "accuracy"),
    ],
    ids=["drift-before-accuracy", "accuracy-before-schedule"],
)
def test_trigger_precedence(triggers: dict[str, Any], metrics: dict[str, Any], first: str) -> None:
    state = TriggerState(drift_breaches=2, last_schedule="2025-03-03T09:00:00Z")
    decisions, _ = run(retraining(triggers), [(0, metrics, None)], state)
    assert decisions[0].trigger == first


def test_evaluate_is_deterministic() -> None:
    r = retraining(DRIFT | {"schedule": "*/5 * * * *"})
    steps = drifts(0.3, 0.3, 0.3, 0.1, 0.4)
    assert run(r, steps) == run(r, steps)


# --- names, status ----------------------------------------------------------------------------

NAME_CASES = [
    ("short", "iris", 1, "iris-retrain-1"),
    ("counter", "iris", 12, "iris-retrain-12"),
    ("fits-exactly", "x" * 39, 1, "x" * 39 + "-retrain-1"),
]


@pytest.mark.parametrize(("name", "isvc", "count", "job"), NAME_CASES, ids=[c[0] for c in NAME_CASES])
def test_retraining_job_name(name: str, isvc: str, count: int, job: str) -> None:
    assert retraining_job_name(isvc, count) == job


def test_long_job_names_are_bounded_unique_and_stable() -> None:
    names = {retraining_job_name("y" * 45, n) for n in range(1, 200)}
    assert len(names) == 199
    assert all(len(n) <= 50 for n in names)
    assert retraining_job_name("y" * 45, 7) == retraining_job_name("y" * 45, 7)
    assert retraining_job_name("y" * 45, 7).endswith("-retrain-7")


def test_state_from_status() -> None:
    status = {
        "metrics": {"driftBreaches": 2, "drift": 0.3},
        "retraining": {
            "count": 3,
            "activeJobs": ["iris-retrain-3"],
            "lastTriggeredAt": "2025-03-03T09:00:00Z",
            "lastManual": "a",
            "lastSchedule": "2025-03-03T03:00:00Z",
            "lastOutcome": "Promoted",
        },
    }
    assert TriggerState.from_status(status) == TriggerState(
        drift_breaches=2,
        last_triggered_at=T0 - timedelta(hours=1),
        active_jobs=("iris-retrain-3",),
        last_manual="a",
        last_schedule="2025-03-03T03:00:00Z",
        count=3,
    )
    assert TriggerState.from_status(None) == TriggerState()


def test_status_round_trip_after_firing() -> None:
    previous = {"count": 1, "lastOutcome": "Promoted", "lastTrigger": "schedule"}
    decision, state = evaluate(
        retraining(),
        TriggerState.from_status({"retraining": previous}),
        None,
        {RETRAIN: "x"},
        T0,
        isvc_name="iris",
    )
    out = retraining_status(previous, state, decision)
    assert out == {
        "count": 2,
        "activeJobs": ["iris-retrain-2"],
        "lastTriggeredAt": "2025-03-03T10:00:00Z",
        "lastManual": "x",
        "lastTrigger": "manual",
        "lastReason": decision.message,
        "lastOutcome": "Promoted",
    }
    assert TriggerState.from_status({"retraining": out}) == state


def test_status_without_firing_keeps_the_last_trigger() -> None:
    previous = {"count": 2, "lastTrigger": "drift", "lastReason": "r", "activeJobs": ["a"]}
    decision, state = evaluate(
        retraining(), TriggerState.from_status({"retraining": previous}), None, None, T0, isvc_name="iris"
    )
    out = retraining_status(previous, replace(state, active_jobs=()), decision)
    assert out == {"count": 2, "activeJobs": [], "lastTrigger": "drift", "lastReason": "r"}


def _tj(phase: str | None, mv: str | None = None, message: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if mv:
        status["modelVersion"] = mv
    if message:
        status["conditions"] = [{"type": "Stalled", "status": "True", "message": message}]
    return {"status": status}


def _mv(phase: str, gates: str = "True", message: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "GatesPassed", "status": gates}]}
    if message:
        status["message"] = message
    return {"status": status}


@pytest.mark.parametrize(
    ("tj", "mv", "serving", "canary", "expected"),
    [
        (None, None, "iris-v1", None, None),
        (_tj("Running"), None, "iris-v1", None, "iris-retrain-2 is Running"),
        (_tj(None), None, "iris-v1", None, "iris-retrain-2 is Pending"),
        (
            _tj("Failed", message="target 'y' not in data"),
            None,
            "iris-v1",
            None,
            "iris-retrain-2 failed: target 'y' not in data",
        ),
        (
            _tj("Succeeded", "iris-v3"),
            _mv("Verified"),
            "iris-v3",
            None,
            "iris-retrain-2 produced iris-v3, now serving",
        ),
        (
            _tj("Succeeded", "iris-v3"),
            _mv("Verified"),
            "iris-v1",
            "iris-v3",
            "iris-retrain-2 produced iris-v3, in canary analysis",
        ),
        (
            _tj("Succeeded", "iris-v3"),
            _mv("Verifying"),
            "iris-v1",
            None,
            "iris-retrain-2 produced iris-v3, awaiting verification",
        ),
        (
            _tj("Succeeded", "iris-v3"),
            _mv("Failed", message="sha256 mismatch"),
            "iris-v1",
            None,
            "iris-retrain-2 produced iris-v3, which failed verification: sha256 mismatch",
        ),
        (
            _tj("Succeeded", "iris-v3"),
            _mv("Verified", gates="False"),
            "iris-v1",
            None,
            "iris-retrain-2 produced iris-v3, which did not pass its gates",
        ),
        (
            _tj("Succeeded", "iris-v3"),
            _mv("Verified"),
            "iris-v1",
            None,
            "iris-retrain-2 produced iris-v3, not rolled out: Keeping iris-v1: not better.",
        ),
    ],
)
def test_run_outcome_says_what_became_of_the_last_run(
    tj: dict[str, Any] | None,
    mv: dict[str, Any] | None,
    serving: str,
    canary: str | None,
    expected: str | None,
) -> None:
    got = run_outcome(
        "iris-retrain-2", tj, mv, serving=serving, canary=canary, resolution="Keeping iris-v1: not better."
    )
    assert got == expected


@pytest.mark.parametrize(
    ("retraining", "expected"),
    [
        (None, (False, "NoRunYet", "no retraining run so far")),
        ({"count": 0, "activeJobs": []}, (False, "NoRunYet", "no retraining run so far")),
        (
            {
                "count": 1,
                "activeJobs": ["iris-retrain-1"],
                "lastTrigger": "drift",
                "lastReason": "drift 0.4 > 0.2",
            },
            (True, "DriftTrigger", "iris-retrain-1 running: drift 0.4 > 0.2"),
        ),
        (
            {"count": 1, "activeJobs": [], "lastOutcome": "iris-retrain-1 produced iris-v2, now serving"},
            (False, "LastRunFinished", "iris-retrain-1 produced iris-v2, now serving"),
        ),
    ],
)
def test_retraining_condition(retraining: dict[str, Any] | None, expected: tuple[bool, str, str]) -> None:
    assert retraining_condition(retraining) == expected
