"""Helpers the cluster tests import (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from mlops_operator.kube import Kube
from waiting import wait_for  # the cluster tests import it from here too

ROOT = Path(__file__).resolve().parents[2]


def kubectl(
    kubeconfig: str, *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.environ.get("MLOPS_KUBECTL", "kubectl"), "--kubeconfig", kubeconfig, *args],
        input=input,
        capture_output=True,
        text=True,
        check=check,
    )


# --- Driving simulated pods (kwok keeps them Running; tests end them) ------------------------
def finish_pod(kube: Kube, namespace: str, pod: dict[str, Any], exit_code: int, message: str) -> None:
    """End a pod as a kubelet would: phase, Ready=False, and the container's terminated state."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    container = pod["spec"]["containers"][0]
    patch = {
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
                {
                    "type": "ContainersReady",
                    "status": "False",
                    "reason": "PodCompleted",
                    "lastTransitionTime": now,
                },
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": "Completed" if exit_code == 0 else "Error",
                            "message": message,
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        }
    }
    kube.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/status",
        body=patch,
        content_type="application/merge-patch+json",
    )


def running_pods(kube: Kube, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        p for p in kube.list("Pod", namespace, labels) if (p.get("status") or {}).get("phase") == "Running"
    ]


def result_message(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def apply_yaml(
    kubeconfig: str, namespace: str, text: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return kubectl(kubeconfig, "-n", namespace, "apply", "--server-side", "-f", "-", input=text, check=check)


def load_sample(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "manifests" / "samples" / name).read_text())
    return doc


def run_pod_locally(kube: Kube, namespace: str, pod: dict[str, Any], pvc_root: Path) -> tuple[int, str]:
    """Act as the kubelet for a simulated pod: run its container's real program here, with the
    pod's command, args and env (pvc:// volumes mapped under `pvc_root`), then end the pod with
    the program's exit code and termination message. Returns (exit code, message)."""
    import os
    import sys
    import tempfile

    container = pod["spec"]["containers"][0]
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
    env["MLOPS_PVC_ROOT"] = str(pvc_root)
    index = (pod["metadata"].get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = index
    program = container["command"][0]
    module = {"mlops-trainer": "mlops_trainer", "mlops-server": "mlops_server"}[program]
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        env["MLOPS_RESULT_PATH"] = result.name
        env["PYTHONPATH"] = os.pathsep.join(
            str(ROOT / p) for p in ("operator", "images/trainer", "images/server")
        )
        proc = subprocess.run(
            [sys.executable, "-m", module, *container.get("args", [])],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        message = Path(result.name).read_text()
    finish_pod(kube, namespace, pod, proc.returncode, message or proc.stderr[-2000:])
    return proc.returncode, message


def pods_of(
    kube: Kube, namespace: str, labels: dict[str, str], phase: str = "Running"
) -> list[dict[str, Any]]:
    return [p for p in kube.list("Pod", namespace, labels) if (p.get("status") or {}).get("phase") == phase]


def status_of(kube: Kube, kind: str, namespace: str, name: str) -> dict[str, Any]:
    obj = kube.get(kind, namespace, name)
    return (obj or {}).get("status") or {}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in status.get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def events_for(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return [e for e in kube.list("Event", namespace) if e["involvedObject"].get("name") == name]


def wait_ready(kube: Kube, kind: str, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    """Wait for the object's Ready condition to be True; -> its status."""
    status: dict[str, Any] = wait_for(
        lambda: (
            (s := status_of(kube, kind, namespace, name))
            and condition(s, "Ready").get("status") == "True"
            and s
        ),
        timeout=timeout,
        what=f"{kind} {name} Ready",
    )
    return status
