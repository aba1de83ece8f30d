"""Fixtures of the cluster tier: the local cluster's real API server, CRDs, a namespace per
test, and the operator running in-process.

The cluster is the local one from tests/cluster/local (started here if it is not up), or
an existing cluster named explicitly by MLOPS_TEST_KUBECONFIG. An ambient KUBECONFIG is never
used, so these tests cannot touch someone's real cluster by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterkit import kubectl, train_locally, wait_for

from mlops_operator.kube import Kube, KubeError
from mlops_operator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "tests" / "cluster" / "local"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    explicit = os.environ.get("MLOPS_TEST_KUBECONFIG")
    if explicit:
        path = explicit
    else:
        subprocess.run([str(LOCAL / "up.sh")], check=True)
        path = subprocess.run(
            [str(LOCAL / "kubeconfig.sh")], check=True, capture_output=True, text=True
        ).stdout.strip()
    # kopf and the kubernetes client in this process read it from here, and only in tests.
    os.environ["KUBECONFIG"] = path
    return path


@pytest.fixture(scope="session")
def kube(kubeconfig: str) -> Iterator[Kube]:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    kube = Kube(client.ApiClient(cfg))
    yield kube
    kube.close()  # its pooled connections, not the garbage collector (ResourceWarning is an error)


@pytest.fixture(scope="session")
def crds(kubeconfig: str) -> None:
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    # Up to 3 minutes: on a loaded machine a fresh API server took over 60 s to establish the
    # three CRDs (their CEL rules are compiled first); the last answer is kept for the failure.
    names = [f"crd/{p}.mlops.dev" for p in ("trainingjobs", "modelversions", "inferenceservices")]
    deadline = time.monotonic() + 180
    while (
        waited := kubectl(
            kubeconfig, "wait", "--for=condition=Established", "--timeout=30s", *names, check=False
        )
    ).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"CRDs not Established after 180 s: {waited.stdout}{waited.stderr}")
        time.sleep(1)
    # Discovery caches may lag the Established condition by a moment.
    deadline = time.monotonic() + 30
    while kubectl(kubeconfig, "get", "mlops", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the mlops category never appeared in discovery"
        time.sleep(0.5)


@pytest.fixture
def namespace(kube: Kube, crds: None) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.request(
        "POST", "/api/v1/namespaces", body={"metadata": {"name": name, "labels": {"mlops.dev/test": "true"}}}
    )
    yield name
    # The operator may be stopped by now; its finalizers would keep the namespace Terminating.
    for kind in ("InferenceService", "TrainingJob", "ModelVersion"):
        for obj in kube.list(kind, name):
            with contextlib.suppress(KubeError):
                kube.request(
                    "PATCH",
                    f"/apis/mlops.dev/v1alpha1/namespaces/{name}/{kind.lower()}s/{obj['metadata']['name']}",
                    body={"metadata": {"finalizers": None}},
                    content_type="application/merge-patch+json",
                )
    with contextlib.suppress(KubeError):
        kube.request("DELETE", f"/api/v1/namespaces/{name}")


class OperatorRunner:
    """The real operator (kopf + our handlers) in a thread with its own event loop."""

    def __init__(
        self,
        namespace: str,
        settings: Settings,
        scraper: Any = None,
        *,
        peering: str | None = None,
        priority: int = 0,
    ) -> None:
        self.namespace = namespace
        self.settings = settings
        self.scraper = scraper
        # With a peering name the operator joins that KopfPeering in its namespace (mandatory
        # peering, as overlays/production runs it); without one it runs standalone.
        self.peering = peering
        self.priority = priority
        self.memo: Any = None
        self.thread: threading.Thread | None = None
        self.stop_flag: threading.Event | None = None
        self.error: BaseException | None = None

    def start(self) -> OperatorRunner:
        import kopf

        from mlops_operator import handlers  # noqa: F401  # registers the handlers

        ready = threading.Event()
        self.stop_flag = threading.Event()
        stop_flag = self.stop_flag
        self.memo = kopf.Memo(settings=self.settings, scraper=self.scraper)

        async def operate() -> None:
            await kopf.operator(
                namespaces=[self.namespace],
                standalone=self.peering is None,
                peering_name=self.peering,
                priority=self.priority,
                memo=self.memo,
                ready_flag=ready,
                stop_flag=stop_flag,
            )
            # kopf has closed its aiohttp session; the TLS shutdown of its connections finishes
            # in the background on this loop. Give it a moment before asyncio.run closes the loop.
            await asyncio.sleep(0.5)

        def main() -> None:
            try:
                asyncio.run(operate())
            except BaseException as e:  # surfaced by stop()
                self.error = e
                ready.set()
            finally:
                # A connection whose TLS shutdown outlived the loop is never closed; left to the
                # garbage collector, its ResourceWarning would fail whichever test runs then
                # (filterwarnings = error). Collect it here, while stop() waits for this thread.
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="unclosed", category=ResourceWarning)
                    gc.collect()

        self.thread = threading.Thread(target=main, name=f"operator-{self.namespace}", daemon=True)
        self.thread.start()
        assert ready.wait(60), "the operator did not become ready"
        if self.error:
            raise self.error
        return self

    def stop(self) -> None:
        if self.thread is None or self.stop_flag is None:
            return
        self.stop_flag.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the operator did not stop"
        self.thread = None
        if self.error:
            raise self.error


@pytest.fixture
def artifacts(kube: Kube, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """A bound PersistentVolumeClaim `artifacts` (a hostPath PV); its files are under the returned dir,
    which tests pass as the pvc root (<root>/artifacts/...) when they run pods' programs locally."""
    pv = f"{namespace}-artifacts"
    (tmp_path / "pvc" / "artifacts").mkdir(parents=True)
    kube.request(
        "POST",
        "/api/v1/persistentvolumes",
        body={
            "metadata": {"name": pv, "labels": {"mlops.dev/test": "true"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(tmp_path / "pvc" / "artifacts")},
                "claimRef": {"namespace": namespace, "name": "artifacts"},
            },
        },
    )
    kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
        body={
            "metadata": {"name": "artifacts"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    # A pod created while its claim is still unbound can sit unschedulable in the scheduler's
    # backoff queue for a long time; start the test with the claim Bound.
    wait_for(
        lambda: (
            (kube.get("PersistentVolumeClaim", namespace, "artifacts") or {}).get("status", {}).get("phase")
            == "Bound"
        ),
        what="PersistentVolumeClaim artifacts Bound",
    )
    yield tmp_path / "pvc"
    with contextlib.suppress(KubeError):
        kube.request("DELETE", f"/api/v1/persistentvolumes/{pv}")


@pytest.fixture
def test_settings() -> Settings:
    return Settings(
        resync_seconds=5.0,
        retention_keep=20,
        trainer_image="mlops-operator/trainer:test",
        server_image="mlops-operator/server:test",
    )


@pytest.fixture
def operator(namespace: str, kubeconfig: str, test_settings: Settings) -> Iterator[OperatorRunner]:
    runner = OperatorRunner(namespace, test_settings).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="session")
def trained_elsewhere(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One iris model trained once per session by the real trainer outside the cluster:
    (its pvc root, the trainer's result). Tests install a copy with `iris_artifact`."""
    root = tmp_path_factory.mktemp("elsewhere")
    (root / "artifacts").mkdir()
    return root, train_locally(root, "elsewhere")


@pytest.fixture
def iris_artifact(trained_elsewhere: tuple[Path, dict[str, Any]], artifacts: Path) -> dict[str, Any]:
    """The session's model copied into this test's `artifacts` claim, at the same pvc:// URI;
    returns the trainer's result (artifactUri, sha256, metrics, signature, …)."""
    root, result = trained_elsewhere
    shutil.copytree(root / "artifacts", artifacts / "artifacts", dirs_exist_ok=True)
    return result


class ClusterS3:
    """The local cluster's S3 server (tests/cluster/local/s3.sh, started by up.sh): the Secret
    mlops-system/mlops-s3 holds what pods get; the host reaches the server at the endpoint in its
    annotation. Tests get a fresh bucket and a copy of the Secret in their namespace."""

    def __init__(self, kube: Kube) -> None:
        import base64

        import boto3
        from botocore.config import Config

        # Read with the test's credentials (the operator's client never reads Secrets).
        secret = kube.request("GET", "/api/v1/namespaces/mlops-system/secrets/mlops-s3")
        self.data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        endpoint = secret["metadata"]["annotations"]["mlops-operator.dev/host-endpoint"]
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=self.data["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.data["AWS_SECRET_ACCESS_KEY"],
            region_name=self.data["AWS_REGION"],
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def secret(self, kube: Kube, namespace: str, name: str, **override: str) -> str:
        """Create Secret `name` in `namespace` with the server's variables (some overridden)."""
        kube.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/secrets",
            body={"metadata": {"name": name}, "stringData": {**self.data, **override}},
        )
        return name


@pytest.fixture(scope="session")
def cluster_s3(kube: Kube) -> Iterator[ClusterS3]:
    s3 = ClusterS3(kube)
    yield s3
    s3.client.close()


@pytest.fixture
def s3_bucket_in_cluster(cluster_s3: ClusterS3, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the cluster's S3 server, named after the test."""
    from s3kit import bucket_name

    name = bucket_name(request.node.name)
    cluster_s3.client.create_bucket(Bucket=name)
    return name
