"""Draining the node during tuning (issue #19): every trial's result, or a clear failure.

`kubectl drain` evicts the running trial pods (the eviction API, as a node upgrade or an
autoscaler would). Each trainer gets SIGTERM, exits 143 without a score, and the Job's
podFailurePolicy ignores the disruption (`DisruptionTarget`), so the evicted indexes run again
once the node takes pods again. The TrainingJob must end Succeeded with all six trials scored,
never with a best picked from the trials that happened to survive.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from e2ekit import Cluster, sample

from waiting import wait_for

pytestmark = pytest.mark.e2e

NAME = "iris-drain"


def _trainingjob() -> dict[str, Any]:
    doc = sample("trainingjob.yaml")
    doc["metadata"]["name"] = NAME
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
    cluster: Cluster, namespace: str, artifacts: str
) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json"))["items"]
    workers = [n["metadata"]["name"] for n in nodes if not n["spec"].get("unschedulable")]
    cluster.apply(namespace, _trainingjob())
    wait_for(lambda: _running_trials(cluster, namespace), timeout=300, interval=0.2, what="a trial running")

    evicted: list[str] = []
    try:
        for node in workers:
            out = cluster.kubectl(
                "drain", node, f"--pod-selector=mlops.dev/training-job={NAME}", "--ignore-daemonsets",
                "--delete-emptydir-data", "--grace-period=30", "--timeout=120s", timeout=180,
            )  # fmt: skip
            evicted += [line.split()[0] for line in out.splitlines() if line.rstrip().endswith("evicted")]
        # While cordoned, the evicted trials wait: nothing may pick a best from the rest.
        time.sleep(5)
        status = cluster.status(namespace, "trainingjob", NAME)
        assert status.get("phase") == "Running", status
        assert "bestParams" not in status, status
    finally:
        for node in workers:
            cluster.kubectl("uncordon", node, check=False)

    # At least one trial was stopped mid-way, and nothing but this job's trials was touched.
    assert evicted, "the drain evicted no trial pod"
    assert all(pod.startswith(f"pod/{NAME}-tune") for pod in evicted), evicted
    cluster.wait(namespace, f"trainingjob/{NAME}", "jsonpath={.status.phase}=Succeeded", timeout=900)
    status = cluster.status(namespace, "trainingjob", NAME)
    assert status["progress"] == "6/6", status
    assert set(status["bestParams"]) == {"n_estimators", "max_depth"}
    tune = cluster.get(namespace, "job", f"{NAME}-tune")["status"]
    assert tune["succeeded"] == 6, tune
    assert not tune.get("failed"), f"an evicted trial counted as a failure: {tune}"
