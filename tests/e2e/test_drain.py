"""Draining the node during tuning (issues #19, #23): every trial's result.

`kubectl drain` evicts the running trial pods (the eviction API, as a node upgrade or an
autoscaler would). Each trainer gets SIGTERM, exits 143 without a score, and the Job's
podFailurePolicy ignores the disruption (`DisruptionTarget`), so the evicted indexes run again
once the node takes pods again. A trial that had already finished when the drain came is
deleted with its pod, and its termination message with it; but the operator recorded its score
in `status.trials` when it saw it finish (issue #23). The TrainingJob must end Succeeded with
every trial's result (6/6), never with a best picked from the trials that survived.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from e2ekit import Cluster, Storage, sample

from waiting import wait_for

pytestmark = pytest.mark.e2e

NAME = "iris-drain"


def _trainingjob(storage: Storage) -> dict[str, Any]:
    doc = sample("trainingjob.yaml")
    doc["metadata"]["name"] = NAME
    doc["spec"]["output"] = storage.location("models")
    # Trials long enough to be caught running: 5-fold CV of up to 400 trees.
    doc["spec"]["tuning"] = {
        "strategy": "grid",
        "space": {"n_estimators": [200, 300, 400], "max_depth": [3, None]},
        "maxTrials": 6,
        "parallelism": 3,
        "cv": 5,
    }
    return doc


def _running_trials(cluster: Cluster, namespace: str) -> list[str]:
    pods = cluster.get(namespace, "pods", selector=f"mlops.dev/training-job={NAME}") or {"items": []}
    names = []
    for pod in pods["items"]:
        statuses = pod.get("status", {}).get("containerStatuses") or []
        if pod["metadata"]["name"].startswith(f"{NAME}-tune") and any(
            "running" in s.get("state", {}) for s in statuses
        ):
            names.append(pod["metadata"]["name"])
    return names


def test_draining_the_node_during_tuning_keeps_every_trial(
    cluster: Cluster, namespace: str, storage: Storage
) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json"))["items"]
    workers = [n["metadata"]["name"] for n in nodes if not n["spec"].get("unschedulable")]
    cluster.apply(namespace, _trainingjob(storage))
    wait_for(lambda: _running_trials(cluster, namespace), timeout=300, interval=0.2, what="a trial running")

    evicted: list[str] = []
    try:
        for node in workers:
            out = cluster.kubectl(
                "drain", node, f"--pod-selector=mlops.dev/training-job={NAME}", "--ignore-daemonsets",
                "--delete-emptydir-data", "--grace-period=30", "--timeout=120s", timeout=180,
            )  # fmt: skip
            evicted += [line.split()[0] for line in out.splitlines() if line.rstrip().endswith("evicted")]
        # While cordoned nothing may pick a best from fewer than six trials.
        time.sleep(5)
        status = cluster.status(namespace, "trainingjob", NAME)
        assert status.get("phase") != "Succeeded" or status.get("progress") == "6/6", status
    finally:
        for node in workers:
            cluster.kubectl("uncordon", node, check=False)

    # The drain evicted pods of this job (trials running or finished, the finished prepare pod)
    # and nothing else.
    assert any(pod.startswith(f"pod/{NAME}-tune") for pod in evicted), evicted
    assert all(pod.startswith((f"pod/{NAME}-tune", f"pod/{NAME}-prepare")) for pod in evicted), evicted
    status = wait_for(
        lambda: (
            (s := cluster.status(namespace, "trainingjob", NAME)).get("phase") in ("Succeeded", "Failed")
            and s
        ),
        timeout=900,
        interval=2,
        what="the TrainingJob's end",
    )
    tune = cluster.get(namespace, "job", f"{NAME}-tune")["status"]
    assert not tune.get("failed"), f"an evicted trial counted as a failure: {tune}"
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "6/6", status
    assert [t["index"] for t in status["trials"]] == list(range(6)), status["trials"]
    assert set(status["bestParams"]) == {"n_estimators", "max_depth"}
    assert status["trials"][status["bestTrial"]]["params"] == status["bestParams"]
    assert tune["succeeded"] == 6, tune
    assert cluster.get(namespace, "job", f"{NAME}-train") is not None
