"""Tuning trials recorded in status as they finish (issue #23): a recorded trial survives its
pod's deletion, is never rewritten, and the best is picked from the records."""

from __future__ import annotations

from typing import Any

import pytest

from mlops_contract.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from mlops_operator.reconcile.pods import PodResult, pod_result
from mlops_operator.reconcile.trainingjob import compute_status, tuning_outcome
from mlops_operator.reconcile.trials import best_record, record_trials, trial_record


def trial(index: int | None, score: Any, phase: str = "Succeeded", metric: str = "accuracy") -> PodResult:
    result: dict[str, Any] = {"ok": True, "params": {"C": index}, "metric": metric, "score": score}
    return PodResult(
        f"p{index}", phase, 0, result, "", index, None, None, "2026-12-07T01:00:00Z", "2026-12-07T01:00:42Z"
    )


SPEC = TrainingJobSpec.model_validate(
    {
        "model": "iris",
        "data": {"source": {"uri": "builtin:iris"}},
        "estimator": {"class": "LogisticRegression"},
        "tuning": {"space": {"C": [0.1, 1.0, 10.0]}},
    }
)


def test_a_trial_record_keeps_index_params_score_metric_duration_and_pod() -> None:
    assert trial_record(trial(2, 0.75)) == {
        "index": 2,
        "params": {"C": 2},
        "score": 0.75,
        "metric": "accuracy",
        "pod": "p2",
        "durationSeconds": 42,
    }


@pytest.mark.parametrize(
    "result",
    [trial(None, 0.5), trial(1, None), trial(1, True), trial(1, "0.5"), trial(1, 0.5, phase="Failed")],
    ids=["no index", "no score", "a bool score", "a string score", "a failed pod"],
)
def test_a_trial_without_a_usable_score_is_not_recorded(result: PodResult) -> None:
    assert record_trials(None, [result]) == []


def test_a_recorded_trial_survives_its_pods_deletion_and_is_never_rewritten() -> None:
    first = record_trials(None, [trial(0, 0.5), trial(1, 0.9)])
    # The drain deleted pod p1; index 0 ran again (its record still wins), index 2 finished.
    later = record_trials(first, [trial(0, 0.1), trial(2, 0.7)])
    assert [(t["index"], t["score"]) for t in later] == [(0, 0.5), (1, 0.9), (2, 0.7)]
    assert record_trials(later, []) == later  # a pass that sees no pod changes nothing
    facts = tuning_outcome(SPEC, 3, later)
    assert facts["bestParams"] == {"C": 1} and facts["bestTrial"] == 1 and facts["trialsCompleted"] == 3


def test_a_record_without_a_score_in_status_is_ignored() -> None:
    assert record_trials([{"index": 0, "params": {}}, {"score": 0.3}], []) == []


@pytest.mark.parametrize(
    ("metric", "best"),
    [("accuracy", 1), ("rmse", 0)],
    ids=["higher is better", "lower is better"],
)
def test_the_best_record_follows_the_metrics_direction(metric: str, best: int) -> None:
    records = record_trials(None, [trial(0, 0.5, metric=metric), trial(1, 0.9, metric=metric)])
    chosen = best_record(records)
    assert chosen is not None and chosen["index"] == best


def test_equal_scores_pick_the_lowest_index() -> None:
    chosen = best_record(record_trials(None, [trial(2, 0.5), trial(1, 0.5)]))
    assert chosen is not None and chosen["index"] == 1


def test_the_trials_go_into_status_and_validate_against_its_schema() -> None:
    tj = {"metadata": {"generation": 1}, "status": {}}
    trials = record_trials(None, [trial(0, 0.5), trial(1, 0.9)])
    status = compute_status(
        tj, {"phase": "Running", "trials": trials, "trialsCompleted": 2, "trialsTotal": 3}, "now"
    )
    assert status["trials"] == trials and status["progress"] == "2/3"
    parsed = TrainingJobStatus.model_validate(status)
    assert parsed.trials is not None and [t.duration_seconds for t in parsed.trials] == [42, 42]


def test_the_times_of_a_terminated_container_are_read() -> None:
    pod = {
        "metadata": {"name": "t-0", "annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "message": '{"ok":true,"score":0.5,"params":{},"metric":"f1"}',
                            "startedAt": "2026-12-07T01:00:00Z",
                            "finishedAt": "2026-12-07T01:01:05Z",
                        }
                    },
                }
            ],
        },
    }
    record = trial_record(pod_result(pod, "trainer"))
    assert record is not None and record["durationSeconds"] == 65 and record["metric"] == "f1"


def _finished_pod(name: str, index: int, score: float) -> dict[str, Any]:
    message = f'{{"ok":true,"score":{score},"params":{{"C":{index}}},"metric":"accuracy"}}'
    return {
        "metadata": {"name": name, "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": 0, "message": message}}}
            ],
        },
    }


def test_a_trial_pod_seen_by_the_watch_is_recorded_after_its_deletion_and_then_forgotten() -> None:
    from mlops_operator.reconcile.context import Context
    from mlops_operator.settings import Settings

    ctx = Context(kube=None, settings=Settings())  # type: ignore[arg-type]  # no API call here
    ctx.saw_trial_pod("ns", "tj", _finished_pod("tj-tune-1-x", 1, 0.8))
    ctx.saw_trial_pod("ns", "tj", _finished_pod("tj-tune-2-y", 2, 0.7))
    ctx.saw_trial_pod("ns", "tj", {"metadata": {"name": "running"}, "status": {"phase": "Running"}})
    # The pods are gone from the API (a drain deleted them); the watch's copies still count.
    seen = [pod_result(p, "trainer") for p in ctx.seen_trial_pods("ns", "tj")]
    trials = record_trials(None, seen)
    assert [(t["index"], t["pod"]) for t in trials] == [(1, "tj-tune-1-x"), (2, "tj-tune-2-y")]
    ctx.forget_trial_pods("ns", "tj", ["tj-tune-1-x"])  # a pass recorded only this one
    assert [p["metadata"]["name"] for p in ctx.seen_trial_pods("ns", "tj")] == ["tj-tune-2-y"]
    ctx.forget_trial_pods("ns", "tj")
    assert ctx.seen_trial_pods("ns", "tj") == [] and ctx.trial_pods == {}
