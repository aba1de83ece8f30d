"""Fixtures of the end-to-end tier: a cluster with real nodes (the local cluster's NODE=real, or
kind), the operator deployed in it from manifests/, one namespace and artifact volume per module.

Cluster-agnostic: it needs only
  MLOPS_E2E_KUBECONFIG   the cluster's kubeconfig (`make e2e` sets it)
  MLOPS_E2E_OVERLAY      the manifests/ overlay to deploy (default manifests/overlays/local)
  MLOPS_E2E_LOAD_IMAGES  optional shell command run once first: puts the images on the nodes
                         (tests/cluster/local/load-images.sh, or `kind load image-archive ...`)
  MLOPS_KUBECTL          kubectl to use (default: kubectl on PATH)
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2ekit import ROOT, Cluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    kubeconfig = os.environ.get("MLOPS_E2E_KUBECONFIG")
    if not kubeconfig:
        pytest.fail("MLOPS_E2E_KUBECONFIG is not set: run the e2e tier with `make e2e` (see README)")
    return Cluster(kubeconfig)


@pytest.fixture(scope="session")
def operator(cluster: Cluster) -> Iterator[None]:
    """The operator installed the documented way (`kubectl apply -k`) and rolled out."""
    hook = os.environ.get("MLOPS_E2E_LOAD_IMAGES")
    if hook:
        subprocess.run(hook, shell=True, check=True, cwd=ROOT)
    overlay = os.environ.get("MLOPS_E2E_OVERLAY", str(ROOT / "manifests" / "overlays" / "local"))
    cluster.kubectl("apply", "--server-side", "-k", overlay)
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd", "-l", "app.kubernetes.io/part-of=mlops-operator"
    )
    cluster.kubectl("-n", "mlops-system", "rollout", "status", "deployment/mlops-operator", "--timeout=300s")
    yield


@pytest.fixture(scope="module")
def namespace(cluster: Cluster, operator: None, request: pytest.FixtureRequest) -> Iterator[str]:
    module = Path(str(request.node.path)).stem.removeprefix("test_").replace("_", "-")
    ns = f"e2e-{module}-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", ns)
    failed_before = request.session.testsfailed
    yield ns
    if request.session.testsfailed > failed_before:
        # What a user would look at, printed into the test report.
        print(
            cluster.kubectl(
                "-n", ns, "get", "mlops,jobs,deployments,pods,services", "-o", "wide", check=False
            )
        )
        print(cluster.kubectl("-n", ns, "get", "events", "--sort-by=.lastTimestamp", check=False)[-6000:])
        print(
            cluster.kubectl(
                "-n", "mlops-system", "logs", "deployment/mlops-operator", "--tail=80", check=False
            )
        )
    # Resources first, while the operator runs to release its finalizers; then the namespace.
    cluster.kubectl("-n", ns, "delete", "mlops", "--all", "--timeout=120s", check=False)
    cluster.kubectl("delete", "namespace", ns, "--timeout=180s", check=False)


@pytest.fixture(scope="module")
def artifacts(cluster: Cluster, namespace: str) -> Iterator[str]:
    """PersistentVolumeClaim `mlops-artifacts` (what the samples write to): a hostPath volume on
    the node, made writable for the non-root trainer and server by a one-off root pod."""
    pv = f"{namespace}-artifacts"
    host_dir = f"/var/tmp/mlops-e2e/{namespace}"
    cluster.apply(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv, "labels": {"mlops.dev/test": "e2e"}},
            "spec": {
                "capacity": {"storage": "2Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": host_dir, "type": "DirectoryOrCreate"},
                "claimRef": {"namespace": namespace, "name": "mlops-artifacts"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "mlops-artifacts", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "2Gi"}},
            },
        },
    )
    cluster.wait(namespace, "pvc/mlops-artifacts", "jsonpath={.status.phase}=Bound", timeout=60)
    cluster.run_python(
        namespace,
        "prepare-artifacts",
        "import os; os.chmod('/data', 0o1777)",
        claim="mlops-artifacts",
        as_root=True,
    )
    yield "mlops-artifacts"
    cluster.run_python(
        namespace,
        "remove-artifacts",
        "import shutil, os; [shutil.rmtree(os.path.join('/data', p), ignore_errors=True) for p in os.listdir('/data')]",
        claim="mlops-artifacts",
        as_root=True,
    )
    cluster.kubectl("delete", "pv", pv, "--wait=false", check=False)
