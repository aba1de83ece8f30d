"""Helpers the cluster tests import (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from mlops_contract.api.common import API_VERSION
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
def finish_pod(
    kube: Kube, namespace: str, pod: dict[str, Any], exit_code: int, message: str, reason: str | None = None
) -> None:
    """End a pod as a kubelet would: phase, Ready=False, and the container's terminated state
    (`reason` as the kubelet gives it: Completed, Error, or OOMKilled with exit code 137)."""
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
                            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
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


def run_program_locally(
    program: str, args: list[str], env_vars: dict[str, str], pvc_root: Path
) -> tuple[int, str, str]:
    """Run one of the project's container programs (mlops-trainer, mlops-server) here, as its
    container would, with pvc:// volumes mapped under `pvc_root`. Returns (exit code, result
    message, stderr)."""
    import sys
    import tempfile

    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    env.update(env_vars)
    env["MLOPS_PVC_ROOT"] = str(pvc_root)
    module = {"mlops-trainer": "mlops_trainer", "mlops-server": "mlops_server"}[program]
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        env["MLOPS_RESULT_PATH"] = result.name
        env["PYTHONPATH"] = os.pathsep.join(
            str(ROOT / p) for p in ("operator", "images/trainer", "images/server")
        )
        proc = subprocess.run(
            [sys.executable, "-m", module, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return proc.returncode, Path(result.name).read_text(), proc.stderr


def _core(kube: Kube, namespace: str, plural: str, name: str) -> dict[str, Any]:
    """A Secret or ConfigMap, read with the test's credentials (the operator's client knows
    neither kind: it never reads them)."""
    obj: dict[str, Any] = kube.request("GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}")
    return obj


def _secret(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    import base64

    secret = _core(kube, namespace, "secrets", name)
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def _config_map(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    return dict(_core(kube, namespace, "configmaps", name).get("data") or {})


def container_env(kube: Kube, namespace: str, container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet makes it: envFrom (Secrets and ConfigMaps, with
    their prefix) first, then env (literal values, secretKeyRef, configMapKeyRef) over it."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "secretRef" in source:
            data = _secret(kube, namespace, source["secretRef"]["name"])
        else:
            data = _config_map(kube, namespace, source["configMapRef"]["name"])
        env.update({source.get("prefix", "") + k: v for k, v in data.items()})
    for item in container.get("env") or []:
        ref = item.get("valueFrom") or {}
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in ref:
            env[item["name"]] = _secret(kube, namespace, ref["secretKeyRef"]["name"])[
                ref["secretKeyRef"]["key"]
            ]
        elif "configMapKeyRef" in ref:
            env[item["name"]] = _config_map(kube, namespace, ref["configMapKeyRef"]["name"])[
                ref["configMapKeyRef"]["key"]
            ]
    return env


def run_init_locally(
    kube: Kube, namespace: str, pod: dict[str, Any], scratch: Path
) -> tuple[int, str, dict[str, Path]]:
    """Act as the kubelet for a simulated pod's first init container: run its real program here
    with its command, args and env (Secrets resolved), its emptyDir mounts mapped to directories
    under `scratch`. kwok completed the init containers at once and made the pod Ready; when the
    program fails, the pod's status becomes what a kubelet reports for a failing init container
    (Pending, not Ready, the init container backing off with its last termination message).
    Returns (exit code, message, {mount path: local directory})."""
    container = pod["spec"]["initContainers"][0]
    empty = {v["name"] for v in pod["spec"].get("volumes") or [] if "emptyDir" in v}
    mapped = {
        m["mountPath"]: scratch / m["name"] for m in container.get("volumeMounts") or [] if m["name"] in empty
    }
    args = [str(mapped.get(a, a)) for a in container.get("args", [])]
    code, message, stderr = run_program_locally(
        container["command"][0], args, container_env(kube, namespace, container), scratch
    )
    if code != 0:
        fail_init_container(kube, namespace, pod, code, message or stderr[-2000:])
    return code, message, mapped


def fail_init_container(
    kube: Kube, namespace: str, pod: dict[str, Any], exit_code: int, message: str
) -> None:
    """Report a pod whose init container failed and is backing off (restartPolicy Always)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    init, main = pod["spec"]["initContainers"][0], pod["spec"]["containers"][0]
    not_ready = {"status": "False", "reason": "ContainersNotInitialized", "lastTransitionTime": now}
    status = {
        "phase": "Pending",
        "conditions": [
            {"type": "Initialized", **not_ready},
            {"type": "Ready", **not_ready},
            {"type": "ContainersReady", **not_ready},
        ],
        "initContainerStatuses": [
            {
                "name": init["name"], "image": init["image"], "imageID": "", "ready": False, "started": False,
                "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}},
                "lastState": {"terminated": {"exitCode": exit_code, "reason": "Error", "message": message,
                                             "startedAt": now, "finishedAt": now}},
            }
        ],
        "containerStatuses": [
            {"name": main["name"], "image": main["image"], "imageID": "", "ready": False, "started": False,
             "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        ],
    }  # fmt: skip
    kube.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/status",
        body={"status": status},
        content_type="application/merge-patch+json",
    )


def run_pod_locally(kube: Kube, namespace: str, pod: dict[str, Any], pvc_root: Path) -> tuple[int, str]:
    """Act as the kubelet for a simulated pod: run its container's real program here, with the
    pod's command, args and env (pvc:// volumes mapped under `pvc_root`; Secrets and ConfigMaps
    resolved as a kubelet does), then end the pod with the program's exit code and termination
    message. Returns (exit code, message)."""
    container = pod["spec"]["containers"][0]
    env = container_env(kube, namespace, container)
    index = (pod["metadata"].get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = index
    code, message, stderr = run_program_locally(
        container["command"][0], container.get("args", []), env, pvc_root
    )
    finish_pod(kube, namespace, pod, code, message or stderr[-2000:])
    return code, message


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


# --- The model lifecycle, driven for real (the trainer program run here) ---------------------
def create(kube: Kube, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    """POST one of our custom resources; returns the stored object."""
    created: dict[str, Any] = kube.request(
        "POST", f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/{obj['kind'].lower()}s", body=obj
    )
    return created


def trainingjob(name: str, **spec: Any) -> dict[str, Any]:
    """A small, quick TrainingJob (iris, logistic regression, an accuracy gate it passes)."""
    base: dict[str, Any] = {
        "model": "iris",
        "data": {"source": {"uri": "builtin:iris"}},
        "estimator": {"class": "LogisticRegression", "params": {"max_iter": 200}},
        "evaluation": {"gates": [{"metric": "accuracy", "threshold": 0.8}]},
        "output": {"uri": "pvc://artifacts/models"},
    }
    base.update(spec)
    return {"apiVersion": API_VERSION, "kind": "TrainingJob", "metadata": {"name": name}, "spec": base}


def run_verification(kube: Kube, namespace: str, mv: str, pvc_root: Path) -> list[tuple[int, str]]:
    """Run a ModelVersion's verification pod with the real `mlops-trainer verify`."""
    labels = {"mlops.dev/model-version": mv, "app.kubernetes.io/component": "verifier"}
    pods = wait_for(
        lambda: pods_of(kube, namespace, labels), timeout=120, what=f"verification pod of {mv} Running"
    )
    return [run_pod_locally(kube, namespace, pods[0], pvc_root)]


def train_version(kube: Kube, namespace: str, name: str, artifacts: Path, **spec: Any) -> str:
    """A real TrainingJob → ModelVersion → verification, the pods run by the real trainer.
    Returns the ModelVersion's name once it is Verified."""
    create(kube, namespace, trainingjob(name, **spec))
    labels = {"mlops.dev/training-job": name, "mlops.dev/step": "train"}
    pod = wait_for(lambda: pods_of(kube, namespace, labels), timeout=120, what="training pod")[0]
    run_pod_locally(kube, namespace, pod, artifacts)
    mv = wait_for(
        lambda: status_of(kube, "TrainingJob", namespace, name).get("modelVersion"),
        timeout=120,
        what="ModelVersion",
    )
    run_verification(kube, namespace, mv, artifacts)
    wait_for(
        lambda: status_of(kube, "ModelVersion", namespace, mv).get("phase") == "Verified",
        what=f"{mv} Verified",
    )
    return str(mv)


def train_locally(pvc_root: Path, name: str, **spec: Any) -> dict[str, Any]:
    """Train with the real trainer here, outside the cluster (a model "trained elsewhere"), into
    the claim `artifacts` under `pvc_root`. Returns the trainer's result (artifactUri, sha256, …)."""
    config = {"name": name, "spec": trainingjob(name, **spec)["spec"]}
    code, message, stderr = run_program_locally(
        "mlops-trainer", ["train"], {"MLOPS_CONFIG": json.dumps(config)}, pvc_root
    )
    assert code == 0, stderr[-2000:]
    result: dict[str, Any] = json.loads(message)
    return result


def modelversion(name: str, version: int, artifact_uri: str, sha256: str, **spec: Any) -> dict[str, Any]:
    """A ModelVersion as a user registers one by hand (no TrainingJob)."""
    body: dict[str, Any] = {
        "model": "iris",
        "version": version,
        "artifact": {"uri": artifact_uri, "format": "skops", "sha256": sha256},
    }
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "ModelVersion", "metadata": {"name": name}, "spec": body}


def inferenceservice(name: str, **spec: Any) -> dict[str, Any]:
    """An InferenceService of iris (policy latest, 2 replicas); a field given as None is left out."""
    body: dict[str, Any] = {"model": "iris", "policy": {"select": "latest"}, "replicas": 2}
    body.update(spec)
    body = {k: v for k, v in body.items() if v is not None}
    return {"apiVersion": API_VERSION, "kind": "InferenceService", "metadata": {"name": name}, "spec": body}


def reconciled_now(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    """A barrier: change an InferenceService's spec (one more replica) and wait until the
    operator has reconciled that generation, so its status reflects everything that existed
    before this call. Returns that status."""
    obj = kube.get("InferenceService", namespace, name)
    assert obj is not None
    patched = kube.request(
        "PATCH",
        f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices/{name}",
        body={"spec": {"replicas": int(obj["spec"].get("replicas", 1)) + 1}},
        content_type="application/merge-patch+json",
    )
    generation = patched["metadata"]["generation"]
    status: dict[str, Any] = wait_for(
        lambda: (
            (s := status_of(kube, "InferenceService", namespace, name)).get("observedGeneration")
            == generation
            and s
        ),
        what=f"{name} reconciled at generation {generation}",
    )
    return status


def served(kube: Kube, namespace: str, deployment: str) -> str | None:
    """The ModelVersion a Deployment's pod template serves, or None without a Deployment."""
    d = kube.get("Deployment", namespace, deployment)
    return d["spec"]["template"]["metadata"]["labels"].get("mlops.dev/model-version") if d else None


def run_prepare_step(kube: Kube, namespace: str, tj: str, pvc_root: Path) -> dict[str, Any]:
    """A tuned TrainingJob's first step (issue #23): run its prepare pod's real trainer here and
    end the pod; returns the trainer's result (preparedUri, sha256, reads)."""
    labels = {"mlops.dev/training-job": tj, "mlops.dev/step": "prepare"}
    pod = wait_for(lambda: pods_of(kube, namespace, labels), what=f"the prepare pod of {tj}")[0]
    code, message = run_pod_locally(kube, namespace, pod, pvc_root)
    assert code == 0, message
    result: dict[str, Any] = json.loads(message)
    return result
