"""Two operator replicas with kopf peering (as overlays/production runs them): exactly one
acts, every child exists once, and the standby takes over when the active one stops.

Both run in this process in namespaced mode, so they meet in a KopfPeering in the test's
namespace (the production Deployment runs cluster-wide and meets in the ClusterKopfPeering
`mlops-operator`; the mechanism is the same)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterkit import ROOT, kubectl, pods_of, run_pod_locally, status_of, wait_for, wait_ready
from test_trainingjob import create, trainingjob

from conftest import OperatorRunner
from mlops_operator.kube import Kube
from mlops_operator.settings import Settings

PEERING = "mlops-operator"


@pytest.fixture(scope="module")
def peering_crds(kubeconfig: str) -> None:
    kubectl(kubeconfig, "apply", "--server-side", "-f", str(ROOT / "manifests" / "peering" / "crds.yaml"))
    kubectl(
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/kopfpeerings.kopf.dev",
        "crd/clusterkopfpeerings.kopf.dev",
    )


@pytest.fixture
def replicas(
    kube: Kube, kubeconfig: str, namespace: str, test_settings: Settings, peering_crds: None
) -> Iterator[tuple[OperatorRunner, OperatorRunner]]:
    kube.request(
        "POST",
        f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings",
        body={"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
    )
    active = OperatorRunner(namespace, test_settings, peering=PEERING, priority=200).start()
    standby = OperatorRunner(namespace, test_settings, peering=PEERING, priority=100).start()
    yield active, standby
    standby.stop()
    active.stop()


def passes(runner: OperatorRunner, kind: str) -> float:
    """Reconcile passes this replica ran over objects of `kind` (its own metrics)."""
    registry = runner.memo["ctx"].metrics.registry
    return sum(
        registry.get_sample_value("mlops_operator_reconciles_total", {"kind": kind, "outcome": outcome})
        or 0.0
        for outcome in ("success", "error")
    )


def peers(kube: Kube, namespace: str) -> dict[str, int]:
    obj = kube.request("GET", f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{PEERING}")
    return {ident: info["priority"] for ident, info in (obj.get("status") or {}).items()}


def test_only_the_highest_priority_replica_acts(
    kube: Kube, namespace: str, replicas: tuple[OperatorRunner, OperatorRunner], artifacts: Path
) -> None:
    active, standby = replicas
    wait_for(
        lambda: sorted(peers(kube, namespace).values()) == [100, 200], what="both replicas in the peering"
    )

    for i in range(3):
        create(kube, namespace, trainingjob(f"tj{i}"))
    for i in range(3):
        pod = wait_for(
            lambda i=i: pods_of(
                kube, namespace, {"mlops.dev/training-job": f"tj{i}", "mlops.dev/step": "train"}
            ),
            what=f"tj{i} training pod",
        )[0]
        assert run_pod_locally(kube, namespace, pod, artifacts)[0] == 0
    for i in range(3):
        wait_for(
            lambda i=i: status_of(kube, "TrainingJob", namespace, f"tj{i}").get("modelVersion"), what="MV"
        )
    time.sleep(3)  # room for a second actor to make a duplicate, if there were one

    # Exactly one of each child: version numbers are assigned by one replica's lock, so two
    # actors would have registered a TrainingJob's model twice (iris-v4...).
    mvs = sorted(m["metadata"]["name"] for m in kube.list("ModelVersion", namespace))
    assert mvs == ["iris-v1", "iris-v2", "iris-v3"]
    assert {
        (m["metadata"]["labels"] or {}).get("mlops.dev/training-job")
        for m in kube.list("ModelVersion", namespace)
    } == {
        "tj0",
        "tj1",
        "tj2",
    }
    jobs = sorted(j["metadata"]["name"] for j in kube.list("Job", namespace))
    assert [j for j in jobs if j.endswith("-train")] == ["tj0-train", "tj1-train", "tj2-train"]
    assert len(kube.list("Pod", namespace, {"mlops.dev/step": "train"})) == 3
    # ...and only the active replica reconciles.
    assert passes(active, "TrainingJob") >= 3
    assert sum(passes(standby, kind) for kind in ("TrainingJob", "ModelVersion", "InferenceService")) == 0

    # The active replica stops (it removes itself from the peering on the way out): the
    # standby resumes and finishes the work, verifying the ModelVersions.
    active.stop()
    wait_for(lambda: list(peers(kube, namespace).values()) == [100], what="the active replica gone")
    vpod = wait_for(
        lambda: pods_of(
            kube, namespace, {"mlops.dev/model-version": "iris-v1", "app.kubernetes.io/component": "verifier"}
        ),
        what="verification pod",
    )[0]
    assert run_pod_locally(kube, namespace, vpod, artifacts)[0] == 0
    wait_ready(kube, "ModelVersion", namespace, "iris-v1")
    assert passes(standby, "ModelVersion") > 0
    assert standby.error is None
