"""s3:// end to end on the real API server and the local cluster's real S3 server (issue #17).

No PersistentVolumeClaim anywhere: the TrainingJob reads its data from S3 and writes its
artifact there, the verification pod reads it back (sha256 checked), and the serving pods' init
container fetches it into an emptyDir. Every pod's program is the real one run here (this process
acting as the kubelet for kwok's simulated pods) with the pod's env, its Secrets resolved as a
kubelet does. Failures: a tampered object, wrong credentials, a missing bucket, an artifact
that cannot be fetched at serving time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clusterkit import (
    condition,
    create,
    events_for,
    inferenceservice,
    pods_of,
    run_init_locally,
    run_pod_locally,
    run_verification,
    status_of,
    trainingjob,
    wait_for,
    wait_ready,
)

from conftest import ClusterS3, OperatorRunner
from mlops_contract import artifact, storage
from mlops_operator.kube import Kube
from mlops_operator.settings import Settings

SECRET = "s3-creds"


def put_iris_csv(s3: ClusterS3, bucket: str) -> str:
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    s3.client.put_object(Bucket=bucket, Key="data/iris.csv", Body=frame.to_csv(index=False).encode())
    return f"s3://{bucket}/data/iris.csv"


def s3_trainingjob(
    name: str, bucket: str, *, data: str | None = None, secret: str = SECRET
) -> dict[str, Any]:
    spec: dict[str, Any] = {"output": {"uri": f"s3://{bucket}/models", "secretRef": {"name": secret}}}
    if data:
        spec["data"] = {"source": {"uri": data, "secretRef": {"name": secret}}, "target": "target"}
    return trainingjob(name, **spec)


def train(kube: Kube, namespace: str, name: str, scratch: Path) -> tuple[int, str, dict[str, Any]]:
    """Run the TrainingJob's training pod with the real trainer; -> (exit code, message, pod)."""
    labels = {"mlops.dev/training-job": name, "mlops.dev/step": "train"}
    pod = wait_for(lambda: pods_of(kube, namespace, labels), what="training pod")[0]
    code, message = run_pod_locally(kube, namespace, pod, scratch)
    return code, message, pod


def claims_of(pod_spec: dict[str, Any]) -> list[Any]:
    return [v for v in pod_spec.get("volumes") or [] if "persistentVolumeClaim" in v]


@dataclass
class Case:
    """What every test here works with: the API, its namespace, the S3 server and a fresh bucket."""

    kube: Kube
    namespace: str
    s3: ClusterS3
    bucket: str
    scratch: Path

    def parts(self) -> tuple[Kube, str, ClusterS3, str, Path]:
        return self.kube, self.namespace, self.s3, self.bucket, self.scratch


@pytest.fixture
def case(
    kube: Kube,
    namespace: str,
    operator: OperatorRunner,
    cluster_s3: ClusterS3,
    s3_bucket_in_cluster: str,
    tmp_path: Path,
) -> Case:
    """The operator running, and `Case` (no Secret yet: each test makes the one it needs)."""
    return Case(kube, namespace, cluster_s3, s3_bucket_in_cluster, tmp_path)


def wait_condition(c: Case, kind: str, name: str, type_: str, reason: str) -> dict[str, Any]:
    """Wait until the object's condition `type_` has `reason`; -> its status."""
    status: dict[str, Any] = wait_for(
        lambda: (
            (s := status_of(c.kube, kind, c.namespace, name))
            and condition(s, type_).get("reason") == reason
            and s
        ),
        what=f"{kind} {name} {type_} {reason}",
    )
    return status


def tamper(s3: ClusterS3, uri: str) -> None:
    parsed = storage.parse_uri(uri)
    key = f"{parsed.path}/{artifact.MODEL_FILE}"
    blob = s3.client.get_object(Bucket=parsed.bucket, Key=key)["Body"].read()
    s3.client.put_object(Bucket=parsed.bucket, Key=key, Body=blob[:-1] + bytes([blob[-1] ^ 1]))


def test_s3_data_to_a_verified_s3_artifact_served_from_an_emptydir(case: Case) -> None:
    kube, namespace, cluster_s3, bucket, tmp_path = case.parts()
    cluster_s3.secret(kube, namespace, SECRET)
    create(kube, namespace, s3_trainingjob("s3-lr", bucket, data=put_iris_csv(cluster_s3, bucket)))

    code, message, pod = train(kube, namespace, "s3-lr", tmp_path)
    assert code == 0, message
    assert pod["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": SECRET}}]
    assert claims_of(pod["spec"]) == []
    status = wait_for(
        lambda: (s := status_of(kube, "TrainingJob", namespace, "s3-lr")).get("phase") == "Succeeded" and s,
        what="Succeeded",
    )
    mv = kube.get("ModelVersion", namespace, status["modelVersion"])
    assert mv is not None
    uri = mv["spec"]["artifact"]["uri"]
    assert uri == f"s3://{bucket}/models/iris/s3-lr"
    assert mv["spec"]["artifact"]["secretRef"] == {"name": SECRET}
    assert mv["spec"]["source"]["dataUri"] == f"s3://{bucket}/data/iris.csv"

    [(vcode, vmessage)] = run_verification(kube, namespace, mv["metadata"]["name"], tmp_path)
    assert vcode == 0, vmessage
    job = kube.get("Job", namespace, f"{mv['metadata']['name']}-verify")
    assert job is not None
    assert job["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": SECRET}}]
    assert claims_of(job["spec"]["template"]["spec"]) == []
    wait_for(
        lambda: status_of(kube, "ModelVersion", namespace, "iris-v1").get("phase") == "Verified",
        what="Verified",
    )

    # Served: the init container fetches the artifact into the emptyDir the server reads.
    create(kube, namespace, inferenceservice("iris", replicas=1))
    deploy = wait_for(lambda: kube.get("Deployment", namespace, "iris-predictor"), what="Deployment")
    pod_spec = deploy["spec"]["template"]["spec"]
    init, ship = pod_spec["initContainers"]  # the fetch, then the prediction log's sidecar
    assert ship["args"][:5] == [
        "ship-logs",
        "--dir",
        "/var/lib/mlops/prediction-log",
        "--to",
        f"s3://{bucket}/predictions/{namespace}/iris",
    ]
    assert ship["restartPolicy"] == "Always" and ship["envFrom"] == [{"secretRef": {"name": SECRET}}]
    assert init["command"] == ["mlops-trainer"] and init["args"][:3] == ["fetch", "--artifact", uri]
    assert init["envFrom"] == [{"secretRef": {"name": SECRET}}]
    server = pod_spec["containers"][0]
    assert "envFrom" not in server and claims_of(pod_spec) == []
    assert server["args"][server["args"].index("--artifact") + 1] == "/mnt/model"
    serving_pod = wait_for(
        lambda: pods_of(kube, namespace, {"mlops.dev/inference-service": "iris"}), what="pod"
    )[0]
    fcode, fmessage, mapped = run_init_locally(kube, namespace, serving_pod, tmp_path / "iris-pod")
    assert fcode == 0, fmessage
    artifact.load_verified(mapped["/mnt/model"], mv["spec"]["artifact"]["sha256"])  # what the server loads
    wait_ready(kube, "InferenceService", namespace, "iris")
    assert kube.list("PersistentVolumeClaim", namespace) == []

    # The object changes under a second service: its pod cannot fetch a file with the recorded
    # digest, and the service says so; the first one keeps serving from its verified copy.
    tamper(cluster_s3, uri)
    create(kube, namespace, inferenceservice("iris-b", replicas=1))
    labels = {"mlops.dev/inference-service": "iris-b"}
    b_pod = wait_for(lambda: pods_of(kube, namespace, labels), what="iris-b pod")[0]
    bcode, bmessage, _ = run_init_locally(kube, namespace, b_pod, tmp_path / "iris-b-pod")
    assert bcode == 2, bmessage
    b_status = wait_condition(case, "InferenceService", "iris-b", "RolledOut", "ArtifactFetchFailed")
    rolled = condition(b_status, "RolledOut")
    assert rolled["status"] == "False"
    assert uri in rolled["message"] and "sha256 mismatch" in rolled["message"]
    assert condition(b_status, "Ready")["status"] == "False"
    warnings = [e for e in events_for(kube, namespace, "iris-b") if e["reason"] == "ArtifactFetchFailed"]
    assert [e["type"] for e in warnings] == ["Warning"] and uri in warnings[0]["message"]
    assert condition(status_of(kube, "InferenceService", namespace, "iris"), "Ready")["status"] == "True"


def test_a_tampered_artifact_fails_verification_and_nothing_is_served(case: Case) -> None:
    kube, namespace, cluster_s3, tmp_path = case.kube, case.namespace, case.s3, case.scratch
    cluster_s3.secret(kube, namespace, SECRET)
    create(kube, namespace, s3_trainingjob("s3-t", case.bucket))
    code, message, _ = train(kube, namespace, "s3-t", tmp_path)
    assert code == 0, message
    mv_name = wait_for(
        lambda: status_of(kube, "TrainingJob", namespace, "s3-t").get("modelVersion"), what="MV"
    )
    mv = kube.get("ModelVersion", namespace, mv_name)
    assert mv is not None
    tamper(cluster_s3, mv["spec"]["artifact"]["uri"])
    create(kube, namespace, inferenceservice("iris", replicas=1))

    [(vcode, _)] = run_verification(kube, namespace, mv_name, tmp_path)
    assert vcode == 3
    status = wait_for(
        lambda: (s := status_of(kube, "ModelVersion", namespace, mv_name)).get("phase") == "Failed" and s,
        what="Failed",
    )
    verified = condition(status, "ArtifactVerified")
    assert (verified["status"], verified["reason"]) == ("False", "VerificationFailed")
    assert "sha256 mismatch" in verified["message"]
    isvc = wait_condition(case, "InferenceService", "iris", "Ready", "NoServableVersion")
    assert "modelVersion" not in isvc
    assert kube.get("Deployment", namespace, "iris-predictor") is None


@pytest.mark.parametrize("fault", ["wrong-secret-key", "missing-output-bucket"])
def test_bad_credentials_or_bucket_fail_once_with_the_uri_and_cause(case: Case, fault: str) -> None:
    kube, namespace, cluster_s3, bucket, tmp_path = case.parts()
    data = put_iris_csv(cluster_s3, bucket)
    if fault == "wrong-secret-key":
        cluster_s3.secret(kube, namespace, SECRET, AWS_SECRET_ACCESS_KEY="not-the-secret")
        uri, cause = data, "SignatureDoesNotMatch"
    else:
        cluster_s3.secret(kube, namespace, SECRET)
        bucket = bucket + "-gone"
        uri, cause = f"s3://{bucket}/models/iris/bad", "NoSuchBucket"
    create(kube, namespace, s3_trainingjob("bad", bucket, data=data))

    code, message, _ = train(kube, namespace, "bad", tmp_path)
    assert code == 2, message  # permanent: the podFailurePolicy fails the Job at once
    status = wait_for(
        lambda: (s := status_of(kube, "TrainingJob", namespace, "bad")).get("phase") == "Failed" and s,
        what="Failed",
    )
    assert uri in status["message"] and cause in status["message"], status["message"]
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "BadInput")
    assert condition(status, "Stalled")["status"] == "True"
    job = wait_for(
        lambda: (
            (j := kube.get("Job", namespace, "bad-train"))
            and any(
                c["type"] == "Failed" and c["status"] == "True" for c in j["status"].get("conditions") or []
            )
            and j
        ),
        what="Job Failed",
    )
    assert job["status"].get("failed") == 1
    assert len(kube.list("Pod", namespace, {"mlops.dev/training-job": "bad"})) == 1  # no retry, no crash loop
    assert any(e["type"] == "Warning" and uri in e["message"] for e in events_for(kube, namespace, "bad"))
    assert kube.list("ModelVersion", namespace) == []


@pytest.fixture
def keep_one(
    kube: Kube,
    namespace: str,
    test_settings: Settings,
    cluster_s3: ClusterS3,
    s3_bucket_in_cluster: str,
    tmp_path: Path,
) -> Iterator[Case]:
    """The operator keeping one version per model (retention_keep=1), and `Case`."""
    runner = OperatorRunner(namespace, dataclasses.replace(test_settings, retention_keep=1)).start()
    yield Case(kube, namespace, cluster_s3, s3_bucket_in_cluster, tmp_path)
    runner.stop()


def test_retention_deletes_the_retired_versions_s3_artifact_and_nothing_else(keep_one: Case) -> None:
    """Retention's purge Job (the real `mlops-trainer purge`, with the artifact's Secret) deletes the
    two objects the retired version's run wrote; a user's data in the bucket, an object inside the
    artifact's prefix that the run did not write, and the kept version's artifact stay."""
    kube, namespace, cluster_s3, bucket, tmp_path = keep_one.parts()
    cluster_s3.secret(kube, namespace, SECRET)
    data = put_iris_csv(cluster_s3, bucket)
    versions = []
    for name in ("s3-one", "s3-two"):
        create(kube, namespace, s3_trainingjob(name, bucket, data=data))
        code, message, _ = train(kube, namespace, name, tmp_path)
        assert code == 0, message
        mv = wait_for(
            lambda n=name: status_of(kube, "TrainingJob", namespace, n).get("modelVersion"), what="MV"
        )
        versions.append(mv)
        if name == "s3-one":  # a user's object inside the first artifact's prefix: not the run's
            cluster_s3.client.put_object(Bucket=bucket, Key="models/iris/s3-one/README.txt", Body=b"mine")
        [(vcode, vmessage)] = run_verification(kube, namespace, mv, tmp_path)
        assert vcode == 0, vmessage
    assert versions == ["iris-v1", "iris-v2"]

    wait_for(lambda: kube.get("ModelVersion", namespace, "iris-v1") is None, what="iris-v1 retired")
    purge = kube.get("Job", namespace, "iris-v1-purge")
    assert purge is not None and "ownerReferences" not in purge["metadata"]
    labels = {"mlops.dev/model-version": "iris-v1", "app.kubernetes.io/component": "purger"}
    pod = wait_for(lambda: pods_of(kube, namespace, labels), what="purge pod")[0]
    assert pod["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": SECRET}}]
    code, message = run_pod_locally(kube, namespace, pod, tmp_path)
    assert code == 0, message

    keys = sorted(o["Key"] for o in cluster_s3.client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [
        "data/iris.csv",
        "models/iris/s3-one/README.txt",
        f"models/iris/s3-two/{artifact.METADATA_FILE}",
        f"models/iris/s3-two/{artifact.MODEL_FILE}",
    ]
    retired = [e["message"] for e in kube.list("Event", namespace) if e["reason"] == "Retired"]
    assert retired and all("iris-v1" in m and "Job iris-v1-purge" in m for m in retired), retired
    assert kube.get("ModelVersion", namespace, "iris-v2") is not None
