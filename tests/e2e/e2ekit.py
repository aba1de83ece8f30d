"""Helpers of the end-to-end tier: everything goes through kubectl, as a user would, and every
request to a model is sent from a pod inside the cluster to the InferenceService's status.url
(the Service's DNS name, resolved by the cluster's DNS)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
SERVER_IMAGE = os.environ.get("MLOPS_E2E_SERVER_IMAGE", "mlops-operator/server:dev")


# A NetworkPolicy enforcer programs a new pod's address into its rules a moment after the pod
# starts (kube-router: into the ipsets of the namespaces' pods), and until then the pod's
# connections to a policy-guarded Service are refused, as any client's would be. So for their
# first 20 seconds the client pods retry a refused TCP connect (every 0.5 s); a refusal after
# that is the policy's answer and comes through at once.
PATIENT_CONNECT = """
import socket as _socket, time as _time
_connect, _until = _socket.create_connection, _time.monotonic() + 20
def _patient_connect(address, *args, **kwargs):
    while True:
        try:
            return _connect(address, *args, **kwargs)
        except ConnectionRefusedError:
            if _time.monotonic() > _until:
                raise
            _time.sleep(0.5)
_socket.create_connection = _patient_connect
"""


class Cluster:
    """kubectl against the cluster under test."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl_bin = os.environ.get("MLOPS_KUBECTL", "kubectl")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300) -> str:
        proc = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args],
            check=False,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc.stdout

    def apply(self, namespace: str, *docs: dict[str, Any]) -> None:
        self.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def get(self, namespace: str, resource: str, name: str = "", selector: str = "") -> Any:
        args = ["-n", namespace, "get", resource, "-o", "json"]
        if name:
            args.insert(4, name)
        if selector:
            args += ["-l", selector]
        out = self.kubectl(*args, check=False)
        return json.loads(out) if out.strip() else None

    def status(self, namespace: str, resource: str, name: str) -> dict[str, Any]:
        obj = self.get(namespace, resource, name)
        return (obj or {}).get("status") or {}

    def condition(self, namespace: str, resource: str, name: str, ctype: str) -> dict[str, Any]:
        for cond in self.status(namespace, resource, name).get("conditions") or []:
            if cond.get("type") == ctype:
                return dict(cond)
        return {}

    def wait(self, namespace: str, what: str, condition: str, timeout: int) -> None:
        """`kubectl wait --for=<condition>`, the way a user or a CI script waits."""
        self.kubectl(
            "-n", namespace, "wait", what, f"--for={condition}", f"--timeout={timeout}s", timeout=timeout + 30
        )

    def describe(self, namespace: str, *what: str) -> str:
        return self.kubectl("-n", namespace, "describe", *what, check=False)

    def run_python(
        self, namespace: str, name: str, code: str, timeout: int = 300, claim: str = "", as_root: bool = False
    ) -> str:
        """Run Python code in a pod of the server image and return its output; fails with the pod's
        logs unless it exits 0. Restricted security, except `as_root` for test plumbing (volume
        permissions); `claim` mounts that PersistentVolumeClaim at /data. The code runs after
        PATIENT_CONNECT (see there)."""
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "e2e-client"}},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {
                    "runAsNonRoot": not as_root,
                    "runAsUser": 0 if as_root else 10001,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "client",
                        "image": SERVER_IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["python3", "-c", PATIENT_CONNECT + textwrap.dedent(code)],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }
        if claim:
            pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
            pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        self.apply(namespace, pod)
        phase = wait_for(
            lambda: (
                (self.get(namespace, "pod", name) or {}).get("status", {}).get("phase")
                in ("Succeeded", "Failed")
                and self.get(namespace, "pod", name)["status"]["phase"]
            ),
            timeout=timeout,
            interval=1,
            what=f"pod {name} to finish",
        )
        logs = self.kubectl("-n", namespace, "logs", name, check=False)
        assert phase == "Succeeded", f"pod {name} {phase}:\n{logs}\n{self.describe(namespace, 'pod', name)}"
        return logs


def sample(*path: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "manifests" / "samples" / Path(*path)).read_text())
    assert isinstance(doc, dict)
    return doc


# --- Storage modes (issue #17): where artifacts, data, models and the prediction log live ------

STORAGE_MODES = ("pvc", "s3")
CLAIM = "mlops-artifacts"  # the claim the samples write to
S3_SECRET = "mlops-s3"  # the Secret a test namespace gets in S3 mode
HOST_ENDPOINT_ANNOTATION = "mlops-operator.dev/host-endpoint"


def storage_mode() -> str:
    """MLOPS_E2E_STORAGE (`make e2e STORAGE=...`): pvc (default) or s3."""
    mode = os.environ.get("MLOPS_E2E_STORAGE") or "pvc"
    if mode not in STORAGE_MODES:
        raise ValueError(f"MLOPS_E2E_STORAGE={mode!r}: choose one of {', '.join(STORAGE_MODES)}")
    return mode


class S3Server:
    """The S3 server the pods use, described by a Secret: MLOPS_E2E_S3_SECRET (namespace/name,
    default mlops-system/mlops-s3, what tests/cluster/local/s3.sh publishes) holds the variables
    pods get (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, ...); its
    annotation mlops-operator.dev/host-endpoint, when present, is where this host reaches the same
    server (else AWS_ENDPOINT_URL). Any cluster that publishes such a Secret (kind included) runs
    the S3 mode."""

    def __init__(self, cluster: Cluster) -> None:
        import base64

        import boto3
        from botocore.config import Config

        where = os.environ.get("MLOPS_E2E_S3_SECRET") or "mlops-system/mlops-s3"
        namespace, _, name = where.partition("/")
        secret = cluster.get(namespace, "secret", name)
        if not secret:
            raise AssertionError(f"no Secret {where} (MLOPS_E2E_S3_SECRET): the S3 mode needs the server's")
        self.data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        annotations = secret["metadata"].get("annotations") or {}
        self.host_endpoint = annotations.get(HOST_ENDPOINT_ANNOTATION) or self.data["AWS_ENDPOINT_URL"]
        self.client = boto3.client(
            "s3",
            endpoint_url=self.host_endpoint,
            aws_access_key_id=self.data["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.data["AWS_SECRET_ACCESS_KEY"],
            region_name=self.data.get("AWS_REGION") or "us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3},
                connect_timeout=10,
                read_timeout=60,
            ),
        )

    def secret(self, cluster: Cluster, namespace: str, name: str = S3_SECRET) -> str:
        """The server's variables as Secret `name` in `namespace` (values through stdin only)."""
        doc = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": self.data,
        }
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(doc))
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents") or []]
        return keys

    def remove_bucket(self, bucket: str) -> None:
        keys = self.keys(bucket)
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
        self.client.delete_bucket(Bucket=bucket)


@dataclass(frozen=True)
class Storage:
    """Where one module's artifacts, data, models and prediction log live: `base` (pvc://<claim>
    or s3://<bucket>), with `secret` the Secret named by every S3 location's secretRef. The code
    paths are the same for both; only the locations differ."""

    mode: str
    base: str
    secret: str | None = None
    s3: S3Server | None = None

    @property
    def claim(self) -> str | None:
        return self.base.removeprefix("pvc://") if self.mode == "pvc" else None

    @property
    def bucket(self) -> str:
        assert self.mode == "s3", self
        return self.base.removeprefix("s3://")

    def uri(self, path: str) -> str:
        return f"{self.base}/{path.strip('/')}"

    def location(self, path: str) -> dict[str, Any]:
        """`{"uri": ..., "secretRef": ...}`: a TrainingJob's output or data source."""
        doc: dict[str, Any] = {"uri": self.uri(path)}
        if self.secret:
            doc["secretRef"] = {"name": self.secret}
        return doc

    def put_iris(self, key: str = "data/iris.csv") -> dict[str, Any]:
        """scikit-learn's iris as a CSV object (target column `target`, as builtin:iris has it); ->
        the data source. S3 mode only: on a claim the builtin dataset is the data."""
        from sklearn.datasets import load_iris

        assert self.s3 is not None
        body = load_iris(as_frame=True).frame.to_csv(index=False).encode()
        self.s3.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        return self.location(key)

    def read_lines(self, cluster: Cluster, namespace: str, uri: str, pattern: str) -> list[str]:
        """The lines of every file matching `pattern` (a glob on the name) under directory or
        prefix `uri`: from the bucket (S3) or from a pod mounting the claim (PVC)."""
        import fnmatch

        if self.mode == "s3":
            assert self.s3 is not None and uri.startswith(self.base + "/"), uri
            prefix = uri[len(self.base) + 1 :].rstrip("/") + "/"
            lines: list[str] = []
            for key in sorted(self.s3.keys(self.bucket, prefix)):
                if fnmatch.fnmatch(key.rsplit("/", 1)[-1], pattern):
                    body = self.s3.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                    lines += body.decode().splitlines()
            return lines
        assert uri.startswith(self.base + "/"), uri
        directory = "/data/" + uri[len(self.base) + 1 :]
        pod = "read-lines"
        cluster.kubectl("-n", namespace, "delete", "pod", pod, "--ignore-not-found")
        out = cluster.run_python(
            namespace,
            pod,
            f"""
            import glob, json
            lines = []
            for path in sorted(glob.glob({directory!r} + "/" + {pattern!r})):
                with open(path) as f:
                    lines += f.read().splitlines()
            print(json.dumps(lines))
            """,
            claim=self.base.removeprefix("pvc://"),
        )
        return list(json.loads(out.strip().splitlines()[-1]))
