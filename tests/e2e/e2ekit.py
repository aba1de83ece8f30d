"""Helpers of the end-to-end tier: everything goes through kubectl, as a user would, and every
request to a model is sent from a pod inside the cluster to the InferenceService's status.url
(the Service's DNS name, resolved by the cluster's DNS)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
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
