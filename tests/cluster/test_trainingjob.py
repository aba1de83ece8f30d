"""TrainingJob against the real API server: Jobs created from the spec, their pods run by the
real trainer program (this process acting as the kubelet for kwok's simulated pods), status,
exactly one ModelVersion, failures, invalid specs, and an operator restarted mid-run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clusterkit import (
    condition,
    create,
    events_for,
    finish_pod,
    pods_of,
    run_pod_locally,
    run_prepare_step,
    run_verification,
    status_of,
    trainingjob,
    wait_for,
)

from conftest import OperatorRunner
from mlops_operator.kube import Kube
from mlops_operator.settings import Settings


def run_step(
    kube: Kube, namespace: str, tj: str, step: str, pvc_root: Path, count: int = 1
) -> list[tuple[int, str]]:
    labels = {"mlops.dev/training-job": tj, "mlops.dev/step": step}
    pods = wait_for(
        lambda: len(pods_of(kube, namespace, labels)) >= count and pods_of(kube, namespace, labels),
        what=f"{step} pods Running",
    )
    return [run_pod_locally(kube, namespace, p, pvc_root) for p in pods[:count]]


def test_success_yields_succeeded_and_exactly_one_verified_modelversion(
    kube: Kube, namespace: str, operator: OperatorRunner, artifacts: Path
) -> None:
    create(kube, namespace, trainingjob("lr"))
    job = wait_for(lambda: kube.get("Job", namespace, "lr-train"), what="the training Job")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3]
    assert wait_for(
        lambda: status_of(kube, "TrainingJob", namespace, "lr").get("phase") == "Running", what="Running"
    )

    [(code, _)] = run_step(kube, namespace, "lr", "train", artifacts)
    assert code == 0
    status = wait_for(
        lambda: (s := status_of(kube, "TrainingJob", namespace, "lr")).get("phase") == "Succeeded" and s,
        what="Succeeded",
    )
    assert status["modelVersion"] == "iris-v1"
    assert status["metrics"]["accuracy"] > 0.8
    assert status["gatesPassed"] is True
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Stalled")["status"] == "False"
    mvs = kube.list("ModelVersion", namespace, {"mlops.dev/training-job": "lr"})
    assert [m["metadata"]["name"] for m in mvs] == ["iris-v1"]
    mv = mvs[0]
    assert mv["spec"]["version"] == 1
    assert mv["spec"]["artifact"]["sha256"] == status["artifactSha256"]
    assert mv["spec"]["source"]["trainingJob"] == "lr"
    assert "ownerReferences" not in mv["metadata"]  # outlives its TrainingJob

    # The ModelVersion is verified by a real verification pod reading the same artifact.
    [(vcode, _)] = run_verification(kube, namespace, "iris-v1", artifacts)
    assert vcode == 0
    mv_status = wait_for(
        lambda: (s := status_of(kube, "ModelVersion", namespace, "iris-v1")).get("phase") == "Verified" and s,
        what="Verified",
    )
    assert condition(mv_status, "ArtifactVerified")["status"] == "True"
    assert condition(mv_status, "GatesPassed")["status"] == "True"
    assert mv_status["stage"] == "Candidate"
    reasons = {e["reason"] for e in events_for(kube, namespace, "lr")}
    assert {"TrainingStarted", "ModelRegistered", "Succeeded"} <= reasons


def test_failure_reports_the_trainers_message(
    kube: Kube, namespace: str, operator: OperatorRunner, artifacts: Path
) -> None:
    create(
        kube,
        namespace,
        trainingjob("csv", data={"source": {"uri": "pvc://artifacts/data/missing.csv"}, "target": "species"}),
    )
    [(code, _message)] = run_step(kube, namespace, "csv", "train", artifacts)
    assert code == 2
    status = wait_for(
        lambda: (s := status_of(kube, "TrainingJob", namespace, "csv")).get("phase") == "Failed" and s,
        what="Failed",
    )
    assert "missing.csv" in status["message"]
    assert condition(status, "Stalled")["status"] == "True"
    assert condition(status, "Ready")["reason"] == "BadInput"
    # Bad input fails the Job at once (podFailurePolicy): no retry pod.
    assert len(kube.list("Pod", namespace, {"mlops.dev/training-job": "csv"})) == 1
    assert any(
        e["type"] == "Warning" and "missing.csv" in e["message"] for e in events_for(kube, namespace, "csv")
    )
    assert kube.list("ModelVersion", namespace) == []


def test_invalid_spec_never_creates_a_job(
    kube: Kube, namespace: str, operator: OperatorRunner, artifacts: Path
) -> None:
    create(
        kube,
        namespace,
        trainingjob("typo", estimator={"class": "RandomForestClassifier", "params": {"n_estimatorz": 10}}),
    )
    status = wait_for(
        lambda: (s := status_of(kube, "TrainingJob", namespace, "typo")).get("phase") == "Failed" and s,
        what="Failed",
    )
    assert condition(status, "Validated")["status"] == "False"
    assert "n_estimatorz" in status["message"]
    assert kube.list("Job", namespace) == []
    assert any(e["reason"] == "InvalidSpec" for e in events_for(kube, namespace, "typo"))


def test_tuning_runs_trials_in_an_indexed_job_and_refits_the_best(
    kube: Kube, namespace: str, operator: OperatorRunner, artifacts: Path
) -> None:
    spec = trainingjob(
        "tuned",
        estimator={"class": "LogisticRegression", "params": {"max_iter": 300}},
        tuning={
            "strategy": "grid",
            "space": {"C": [0.01, 1.0, 10.0, 100.0]},
            "maxTrials": 4,
            "parallelism": 2,
            "cv": 3,
        },
    )
    create(kube, namespace, spec)
    # Prepared once (issue #23): only the prepare pod reads the raw data, once.
    prepared = run_prepare_step(kube, namespace, "tuned", artifacts)
    assert prepared["reads"] == [{"uri": "builtin:iris", "kind": "raw", "rows": 150}]
    tune = wait_for(lambda: kube.get("Job", namespace, "tuned-tune"), what="the tuning Job")
    assert tune["spec"]["completionMode"] == "Indexed"
    assert (tune["spec"]["completions"], tune["spec"]["parallelism"]) == (4, 2)
    reads = [
        json.loads(m)["reads"] for _, m in run_step(kube, namespace, "tuned", "tune", artifacts, count=2)
    ]
    early = wait_for(
        lambda: (s := status_of(kube, "TrainingJob", namespace, "tuned")).get("progress") == "2/4" and s,
        what="progress 2/4",
    )
    # Each finished trial is in status as soon as it is seen (issue #23); a drain that deletes
    # the finished pods (and their termination messages) loses no score.
    assert len(early["trials"]) == 2 and all({"params", "score", "pod"} <= set(t) for t in early["trials"])
    for t in early["trials"]:
        assert kube.delete("Pod", namespace, t["pod"])
    wait_for(
        lambda: not any(kube.get("Pod", namespace, t["pod"]) for t in early["trials"]),
        what="the finished trial pods gone",
    )
    reads += [
        json.loads(m)["reads"] for _, m in run_step(kube, namespace, "tuned", "tune", artifacts, count=2)
    ]
    job = wait_for(lambda: kube.get("Job", namespace, "tuned-train"), what="the refit Job")
    reads += [json.loads(m)["reads"] for _, m in run_step(kube, namespace, "tuned", "train", artifacts)]
    # Each trial and the final fit read the prepared data, verified by its sha256, never the raw data.
    ref = {"uri": prepared["preparedUri"], "sha256": prepared["sha256"]}
    assert reads == [[{**ref, "kind": "prepared", "rows": 150}]] * 5, reads
    status = wait_for(
        lambda: (s := status_of(kube, "TrainingJob", namespace, "tuned")).get("phase") == "Succeeded" and s,
        what="Succeeded",
    )
    assert status["progress"] == "4/4"
    assert (status["preparedUri"], status["preparedSha256"]) == (ref["uri"], ref["sha256"])
    assert status["dataDigest"] == prepared["dataDigest"]
    meta = json.loads((artifacts / "artifacts/models/iris/tuned/model.json").read_text())
    assert meta["prepared"] == ref and meta["dataReads"] == [{**ref, "kind": "prepared", "rows": 150}]
    assert [t["index"] for t in status["trials"]] == [0, 1, 2, 3]
    assert early["trials"] == [
        t for t in status["trials"] if t["index"] in {e["index"] for e in early["trials"]}
    ]
    best = status["trials"][status["bestTrial"]]
    assert best["params"] == status["bestParams"] and best["score"] == max(
        t["score"] for t in status["trials"]
    )
    assert status["bestParams"]["C"] in (0.01, 1.0, 10.0, 100.0)
    assert status["bestParams"]["C"] != 0.01  # heavily regularised LR is the worst on iris
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert '"params":{"C":' in env["MLOPS_CONFIG"]


def test_restarted_operator_creates_no_duplicates(
    kube: Kube, namespace: str, test_settings: Settings, artifacts: Path
) -> None:
    first = OperatorRunner(namespace, test_settings).start()
    create(kube, namespace, trainingjob("restart"))
    wait_for(lambda: kube.get("Job", namespace, "restart-train"), what="the training Job")
    first.stop()
    run_step(kube, namespace, "restart", "train", artifacts)
    second = OperatorRunner(namespace, test_settings).start()
    try:
        wait_for(
            lambda: status_of(kube, "TrainingJob", namespace, "restart").get("phase") == "Succeeded",
            what="Succeeded",
        )
    finally:
        second.stop()
    third = OperatorRunner(namespace, test_settings).start()
    try:
        # A further restart after success changes nothing.
        wait_for(lambda: kube.get("Job", namespace, "iris-v1-verify"), what="verification Job")
    finally:
        third.stop()
    assert len(kube.list("Job", namespace, {"mlops.dev/training-job": "restart"})) == 1
    assert [m["metadata"]["name"] for m in kube.list("ModelVersion", namespace)] == ["iris-v1"]


def test_versions_increase_per_model(
    kube: Kube, namespace: str, operator: OperatorRunner, artifacts: Path
) -> None:
    for name in ("a", "b"):
        create(kube, namespace, trainingjob(name))
        run_step(kube, namespace, name, "train", artifacts)
        wait_for(
            lambda n=name: status_of(kube, "TrainingJob", namespace, n).get("phase") == "Succeeded",
            what="Succeeded",
        )
    versions = sorted(m["spec"]["version"] for m in kube.list("ModelVersion", namespace))
    assert versions == [1, 2]


@pytest.mark.parametrize("exit_code", [1])
def test_transient_failure_is_retried(
    kube: Kube, namespace: str, operator: OperatorRunner, artifacts: Path, exit_code: int
) -> None:
    create(kube, namespace, trainingjob("flaky", backoffLimit=1))
    labels = {"mlops.dev/training-job": "flaky", "mlops.dev/step": "train"}
    first = wait_for(lambda: pods_of(kube, namespace, labels), what="first pod")[0]
    finish_pod(
        kube, namespace, first, exit_code, '{"ok":false,"reason":"Transient","message":"connection reset"}'
    )
    second = wait_for(
        lambda: [
            p for p in pods_of(kube, namespace, labels) if p["metadata"]["name"] != first["metadata"]["name"]
        ],
        what="a retry pod",
    )
    assert second
    assert status_of(kube, "TrainingJob", namespace, "flaky").get("phase") == "Running"


def test_oom_killed_trial_is_reported_as_oomkilled(
    kube: Kube, namespace: str, operator: OperatorRunner, artifacts: Path
) -> None:
    """Issue #23: a trial the kernel killed for memory fails the run as OOMKilled, naming the
    pod and its limit, not as a generic failure."""
    create(
        kube,
        namespace,
        trainingjob(
            "hungry",
            backoffLimit=0,
            tuning={"strategy": "grid", "space": {"C": [0.5, 1.0]}, "maxTrials": 2, "parallelism": 1},
            resources={"limits": {"memory": "256Mi"}},
        ),
    )
    run_prepare_step(kube, namespace, "hungry", artifacts)
    labels = {"mlops.dev/training-job": "hungry", "mlops.dev/step": "tune"}
    trial = wait_for(lambda: pods_of(kube, namespace, labels), what="a trial pod")[0]
    finish_pod(kube, namespace, trial, 137, "", reason="OOMKilled")
    status = wait_for(
        lambda: (s := status_of(kube, "TrainingJob", namespace, "hungry")).get("phase") == "Failed" and s,
        what="Failed",
    )
    assert condition(status, "Ready")["reason"] == "OOMKilled", status
    assert trial["metadata"]["name"] in status["message"] and "256Mi" in status["message"], status
    assert any(
        e["type"] == "Warning" and e["reason"] == "OOMKilled" for e in events_for(kube, namespace, "hungry")
    )


def test_too_small_a_memory_limit_fails_before_training_with_the_estimate(
    kube: Kube, namespace: str, operator: OperatorRunner, artifacts: Path
) -> None:
    """Issue #23: the trainer pod estimates the data's training peak from its first rows and the
    pod's limit (MLOPS_MEMORY_LIMIT, from spec.resources) and fails at once, with the numbers."""
    rows = ["x,y,city,label"] + [f"{i * 0.5},{i % 7},c{i % 40},{i % 2}" for i in range(50_000)]
    data = artifacts / "artifacts" / "data" / "wide.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("\n".join(rows) + "\n")
    spec = {"source": {"uri": "pvc://artifacts/data/wide.csv"}, "target": "label"}
    create(kube, namespace, trainingjob("small", data=spec, resources={"limits": {"memory": "256Mi"}}))
    [(code, message)] = run_step(kube, namespace, "small", "train", artifacts)
    assert code == 2, message
    status = wait_for(
        lambda: (s := status_of(kube, "TrainingJob", namespace, "small")).get("phase") == "Failed" and s,
        what="Failed",
    )
    assert condition(status, "Ready")["reason"] == "InsufficientMemory", status
    for fragment in ("wide.csv", "256 MiB", "42 prepared columns", "spec.resources.limits.memory"):
        assert fragment in status["message"], status["message"]
    assert kube.list("ModelVersion", namespace) == []
    # Exit code 2 fails the Job at once: no retry pod.
    assert len(kube.list("Pod", namespace, {"mlops.dev/training-job": "small"})) == 1


def test_missing_storage_launches_no_pod(kube: Kube, namespace: str, operator: OperatorRunner) -> None:
    create(kube, namespace, trainingjob("nostore"))
    status = wait_for(
        lambda: (s := status_of(kube, "TrainingJob", namespace, "nostore")).get("message") and s,
        what="a message",
    )
    assert status["phase"] == "Pending"
    assert condition(status, "Ready")["reason"] == "StorageNotFound"
    assert "PersistentVolumeClaim artifacts not found" in status["message"]
    assert kube.list("Job", namespace) == []


def test_status_is_written_under_the_operators_field_manager(
    kube: Kube, namespace: str, operator: OperatorRunner
) -> None:
    """The README's claim, read back from the API server's managedFields (issue #19, case 9)."""
    create(kube, namespace, trainingjob("managed"))
    wait_for(lambda: status_of(kube, "TrainingJob", namespace, "managed").get("phase"), what="a status")
    obj = kube.get("TrainingJob", namespace, "managed")
    assert obj is not None
    managers = {(m["manager"], m.get("subresource", "")) for m in obj["metadata"]["managedFields"]}
    assert ("mlops-operator", "status") in managers, managers
    assert not [m for m, _ in managers if m.startswith("kopf")], managers
