"""The pure decisions of the TrainingJob and ModelVersion passes (issue #19): a best trial is
picked only from a complete set (or `tuning.minTrials`), and a verification Job's state is read
into ArtifactVerified without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from mlops_contract.api.modelversion import ModelVersionSpec
from mlops_contract.api.trainingjob import TrainingJobSpec
from mlops_operator.reconcile.modelversion import job_verification, settled
from mlops_operator.reconcile.pods import PodResult, failure_message, failure_reason, pod_result
from mlops_operator.reconcile.trainingjob import registered_facts, tuning_outcome
from mlops_operator.reconcile.trials import record_trials


def spec(**tuning: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(
        {
            "model": "iris",
            "data": {"source": {"uri": "builtin:iris"}},
            "estimator": {"class": "LogisticRegression"},
            "tuning": {"space": {"C": [0.1, 1.0, 10.0]}, **tuning},
        }
    )


def trial(index: int, score: float | None, phase: str = "Succeeded") -> PodResult:
    result = {"ok": True, "params": {"C": index}, "metric": "accuracy"}
    if score is not None:
        result["score"] = score
    return PodResult(f"p{index}", phase, 0, result, "", index)


OUTCOMES = {
    "complete: the best is picked": ({}, [trial(0, 0.5), trial(1, 0.9), trial(2, 0.7)], None, {"C": 1}, 3),
    "a trial without a score: refused": (
        {},
        [trial(0, 0.5), trial(1, None), trial(2, 0.7)],
        "IncompleteTuning",
        None,
        2,
    ),
    "a trial with no pod result at all: refused": (
        {},
        [trial(0, 0.5), trial(2, 0.7)],
        "IncompleteTuning",
        None,
        2,
    ),
    "minTrials allows fewer": ({"minTrials": 2}, [trial(0, 0.5), trial(2, 0.7)], None, {"C": 2}, 2),
    "below minTrials: refused": ({"minTrials": 3}, [trial(0, 0.5)], "IncompleteTuning", None, 1),
    "a re-run index counts once": (
        {},
        [trial(0, 0.5), trial(0, 0.6), trial(1, 0.7), trial(2, 0.1)],
        None,
        {"C": 1},
        3,
    ),
}


@pytest.mark.parametrize(
    ("tuning", "results", "reason", "best", "scored"), OUTCOMES.values(), ids=OUTCOMES.keys()
)
def test_tuning_outcome(
    tuning: dict[str, Any], results: list[PodResult], reason: str | None, best: Any, scored: int
) -> None:
    facts = tuning_outcome(spec(**tuning), 3, record_trials(None, results))
    assert facts.get("reason") == reason
    assert facts.get("bestParams") == best
    assert facts["trialsCompleted"] == scored
    if reason:
        assert facts["phase"] == "Failed"
        assert "minTrials" in facts["message"] and f"{scored} of 3 trials" in facts["message"]


MV = ModelVersionSpec.model_validate(
    {"model": "iris", "version": 1, "artifact": {"uri": "pvc://a/m", "format": "skops", "sha256": "0" * 64}}
)


def job(condition: str | None) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": condition, "status": "True"}] if condition else []}}


@pytest.mark.parametrize(
    ("condition", "exit_code", "status", "reason"),
    [
        (None, None, "Unknown", "Verifying"),
        ("Complete", 0, "True", "Verified"),
        ("Failed", 3, "False", "VerificationFailed"),
        ("Failed", 1, "False", "VerificationError"),
    ],
)
def test_job_verification(condition: str | None, exit_code: int | None, status: str, reason: str) -> None:
    ok = exit_code == 0
    pod = PodResult(
        "v", "Succeeded" if ok else "Failed", exit_code, {"ok": ok, "runtime": "arrays"}, "", None
    )
    v = job_verification("m-verify", job(condition), [pod], "now")
    assert (v.status, v.reason) == (status, reason)
    assert v.fields["verificationJob"] == "m-verify"
    if ok:
        assert v.fields["servingRuntime"] == "arrays" and v.fields["verifiedAt"] == "now"


def test_settled_decisions_need_no_job() -> None:
    duplicate = settled({}, "older", MV)
    assert duplicate is not None and duplicate.reason == "DuplicateVersion" and "older" in duplicate.message
    verified = {"conditions": [{"type": "ArtifactVerified", "status": "True"}], "verifiedAt": "t"}
    assert (v := settled(verified, None, MV)) is not None and v.fields["verifiedAt"] == "t"
    assert settled({}, None, MV) is None
    # Waiting for storage is not settled: the claim is looked for again.
    waiting = {"conditions": [{"type": "ArtifactVerified", "status": "Unknown", "reason": "StorageNotFound"}]}
    assert settled(waiting, None, MV) is None


def _pod(state: dict[str, Any], limit: str | None = "1Gi") -> dict[str, Any]:
    resources = {"limits": {"memory": limit}} if limit else {}
    return {
        "metadata": {
            "name": "tj-tune-0-abc",
            "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
        },
        "spec": {"containers": [{"name": "trainer", "resources": resources}]},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": "trainer", "state": {"terminated": state}}],
        },
    }


@pytest.mark.parametrize(
    ("state", "limit", "reason", "fragments"),
    [
        ({"exitCode": 137, "reason": "OOMKilled"}, "1Gi", "OOMKilled", ["tj-tune-0-abc", "OOMKilled", "(1Gi)"]),
        ({"exitCode": 137, "reason": "OOMKilled"}, None, "OOMKilled", ["the memory it had"]),
        ({"exitCode": 2, "reason": "Error", "message": '{"ok":false,"message":"no such column"}'}, "1Gi",
         "BadInput", ["no such column"]),
        ({"exitCode": 2, "reason": "Error", "message": '{"ok":false,"reason":"InsufficientMemory","message":"needs 900 MiB"}'},
         "256Mi", "InsufficientMemory", ["needs 900 MiB"]),
        ({"exitCode": 1, "reason": "Error", "message": "boom"}, "1Gi", "TuningFailed", ["boom"]),
    ],
    ids=["oom-with-limit", "oom-without-limit", "bad-input", "memory-preflight", "other"],
)  # fmt: skip
def test_failure_reason_and_message_name_an_oom_kill(
    state: dict[str, Any], limit: str | None, reason: str, fragments: list[str]
) -> None:
    result = pod_result(_pod(state, limit), "trainer")
    assert result.index == 0
    assert failure_reason(result, "TuningFailed") == reason
    message = failure_message(result, "tuning Job failed")
    for fragment in fragments:
        assert fragment in message


def test_registered_facts_say_what_the_run_trained_without() -> None:
    """Issue #19, case 1: the TrainingJob's message carries the trainer's notes (a retraining run
    that found no labelled rows yet says so)."""
    result = {
        "metrics": {"accuracy": 0.9},
        "primaryMetric": "accuracy",
        "notes": ["trained without s3://b/log"],
    }
    facts = registered_facts("iris-v2", result)
    assert facts["message"] == "ModelVersion iris-v2 registered; trained without s3://b/log"
    assert registered_facts("iris-v2", {"metrics": {}})["message"] == "ModelVersion iris-v2 registered"


def test_a_finished_prepare_job_names_its_data_and_a_missing_result_fails() -> None:
    from mlops_operator.reconcile.trainingjob import prepared_facts, prepared_ref

    done = PodResult("p", "Succeeded", 0, {"ok": True, "preparedUri": "pvc://a/p", "sha256": "ab"}, "", None)
    facts = prepared_facts([done])
    assert prepared_ref(facts) == {"uri": "pvc://a/p", "sha256": "ab"}
    empty = prepared_facts([PodResult("p", "Succeeded", 0, {"ok": True}, "", None)])
    assert empty["reason"] == "NoResult" and prepared_ref(empty) is None


def test_the_prepared_data_reaches_the_trials_and_the_refit_but_not_the_prepare_step() -> None:
    import json

    from mlops_operator.build import trainingjob as build
    from mlops_operator.settings import Settings

    tj = {
        "metadata": {"name": "t", "namespace": "n", "uid": "u"},
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "TrainingJob",
    }
    ref = {"uri": "pvc://a/p", "sha256": "ab"}

    def config(job: dict[str, Any]) -> dict[str, Any]:
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        loaded: dict[str, Any] = json.loads(next(e["value"] for e in env if e["name"] == "MLOPS_CONFIG"))
        return loaded

    settings = Settings()
    prepare = build.preparing_job(tj, spec(), settings)
    assert prepare["metadata"]["name"] == "t-prepare" and "prepared" not in config(prepare)
    assert prepare["spec"]["template"]["spec"]["containers"][0]["args"] == ["prepare"]
    assert config(build.tuning_job(tj, spec(), settings, 3, ref))["prepared"] == ref
    assert config(build.training_job(tj, spec(), settings, {"C": 1}, ref))["prepared"] == ref
