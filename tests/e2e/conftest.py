"""Fixtures of the end-to-end tier: a cluster with real nodes (the local cluster's NODE=real, or
kind), the operator deployed in it from manifests/, one namespace and artifact volume per module.

Cluster-agnostic: it needs only
  MLOPS_E2E_KUBECONFIG   the cluster's kubeconfig (`make e2e` sets it)
  MLOPS_E2E_OVERLAY      the manifests/ overlay to deploy (default manifests/overlays/local)
  MLOPS_E2E_LOAD_IMAGES  optional shell command run once first: puts the images on the nodes
                         (tests/cluster/local/load-images.sh, or `kind load image-archive ...`)
  MLOPS_KUBECTL          kubectl to use (default: kubectl on PATH)
  MLOPS_E2E_STORAGE      pvc (default) or s3 (`make e2e STORAGE=s3`): where artifacts, data, models
                         and the prediction log live (the `storage` fixture)
  MLOPS_E2E_S3_SECRET    S3 mode: namespace/name of the Secret describing the S3 server (default
                         mlops-system/mlops-s3, published by tests/cluster/local/s3.sh; see
                         e2ekit.S3Server for its keys)

The e2e loop (test_loop.py) runs in both storage modes unless MLOPS_E2E_STORAGE=s3 (then in S3 only).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2ekit import CLAIM, ROOT, Cluster, S3Server, Storage, storage_mode

# What runs once a module's namespace is gone (its pods stopped): the S3 mode's bucket removal.
_after_namespace: dict[str, list[Callable[[], None]]] = {}

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
def mode() -> str:
    """The storage mode of a module (MLOPS_E2E_STORAGE); test_loop.py parametrizes it."""
    return storage_mode()


@pytest.fixture(scope="module")
def namespace(cluster: Cluster, operator: None, mode: str, request: pytest.FixtureRequest) -> Iterator[str]:
    module = Path(str(request.node.path)).stem.removeprefix("test_").replace("_", "-")
    ns = f"e2e-{module}-{mode}-{secrets.token_hex(3)}"
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
    for after in _after_namespace.pop(ns, []):
        after()


@pytest.fixture(scope="module")
def storage(cluster: Cluster, namespace: str, mode: str) -> Iterator[Storage]:
    """Where the module's artifacts, data, models and prediction log live.

    pvc: the claim `mlops-artifacts` (what the samples write to), on a hostPath volume.
    s3: a bucket named after the namespace on the S3 server of MLOPS_E2E_S3_SECRET, and that
    server's Secret copied into the namespace (every S3 location's secretRef); no claim at all.
    The bucket is removed once the namespace is gone (its pods may ship a last log window).
    """
    if mode == "s3":
        server = S3Server(cluster)
        bucket = namespace
        server.client.create_bucket(Bucket=bucket)
        _after_namespace.setdefault(namespace, []).extend(
            [lambda: server.remove_bucket(bucket), server.client.close]
        )
        yield Storage("s3", f"s3://{bucket}", server.secret(cluster, namespace), server)
        return
    yield from _claim(cluster, namespace)


def _claim(cluster: Cluster, namespace: str) -> Iterator[Storage]:
    """PersistentVolumeClaim `mlops-artifacts`: a hostPath volume on the node, made writable for
    the non-root trainer and server by a one-off root pod."""
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
                "claimRef": {"namespace": namespace, "name": CLAIM},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "2Gi"}},
            },
        },
    )
    cluster.wait(namespace, f"pvc/{CLAIM}", "jsonpath={.status.phase}=Bound", timeout=60)
    cluster.run_python(
        namespace,
        "prepare-artifacts",
        "import os; os.chmod('/data', 0o1777)",
        claim=CLAIM,
        as_root=True,
    )
    yield Storage("pvc", f"pvc://{CLAIM}")
    cluster.run_python(
        namespace,
        "remove-artifacts",
        "import shutil, os; [shutil.rmtree(os.path.join('/data', p), ignore_errors=True) for p in os.listdir('/data')]",
        claim=CLAIM,
        as_root=True,
    )
    cluster.kubectl("delete", "pv", pv, "--wait=false", check=False)
