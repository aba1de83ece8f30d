"""GitOps safety: the operator's bookkeeping never shows up as drift.

A user (or Argo CD / Flux) applies manifests with server-side apply. Once the operator has
reconciled them, a server-side `kubectl diff` of those same manifests is empty, the objects'
`metadata.generation` is what the user's apply made it, none of kopf's annotations are on
them, and at idle (a minute, a dozen resync passes) their resourceVersion does not move.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from clusterkit import apply_yaml, kubectl, pods_of, run_pod_locally, status_of, wait_for, wait_ready
from test_inferenceservice import scraper

from conftest import OperatorRunner
from mlops_operator.kube import Kube
from mlops_operator.settings import Settings

IDLE_SECONDS = 60
# What a user keeps in Git: the operator fills in defaults through the CRD schema, never by writing spec.
USER_MANIFESTS = """
apiVersion: mlops.dev/v1alpha1
kind: TrainingJob
metadata:
  name: iris-lr
  labels: {mlops.dev/model: iris}
spec:
  model: iris
  data:
    source: {uri: builtin:iris}
  estimator:
    class: LogisticRegression
    params: {max_iter: 200}
  evaluation:
    gates: [{metric: accuracy, threshold: 0.8}]
  output: {uri: pvc://artifacts/models}
---
apiVersion: mlops.dev/v1alpha1
kind: InferenceService
metadata:
  name: iris
spec:
  model: iris
  policy: {select: latest}
  replicas: 1
  monitoring: {intervalSeconds: 5}
"""


@pytest.fixture
def gitops_operator(namespace: str, test_settings: Settings) -> Iterator[OperatorRunner]:
    runner = OperatorRunner(namespace, test_settings, scraper=scraper).start()
    yield runner
    runner.stop()


def snapshot(
    kube: Kube, namespace: str, objs: list[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for kind, name in objs:
        obj = kube.get(kind, namespace, name)
        assert obj is not None
        out[(kind, name)] = obj["metadata"]
    return out


def diff(kubeconfig: str, namespace: str) -> str:
    """`kubectl diff --server-side` of the user's manifests; '' when nothing would change."""
    out = kubectl(
        kubeconfig, "-n", namespace, "diff", "--server-side", "-f", "-", input=USER_MANIFESTS, check=False
    )
    assert out.returncode in (0, 1), out.stderr  # 1 = differences found, >1 = error
    return out.stdout


def test_reconciled_resources_show_no_drift_and_stay_still(
    kube: Kube, kubeconfig: str, namespace: str, gitops_operator: OperatorRunner, artifacts: Path
) -> None:
    apply_yaml(kubeconfig, namespace, USER_MANIFESTS)
    applied = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(USER_MANIFESTS)}
    generations = {
        key: meta["generation"] for key, meta in snapshot(kube, namespace, sorted(applied)).items()
    }

    # Drive the lifecycle to rest: train, register, verify, serve.
    pod = wait_for(
        lambda: pods_of(kube, namespace, {"mlops.dev/training-job": "iris-lr", "mlops.dev/step": "train"}),
        what="training pod",
    )[0]
    assert run_pod_locally(kube, namespace, pod, artifacts)[0] == 0
    mv = wait_for(lambda: status_of(kube, "TrainingJob", namespace, "iris-lr").get("modelVersion"), what="MV")
    vpod = wait_for(
        lambda: pods_of(
            kube, namespace, {"mlops.dev/model-version": mv, "app.kubernetes.io/component": "verifier"}
        ),
        what="verification pod",
    )[0]
    assert run_pod_locally(kube, namespace, vpod, artifacts)[0] == 0
    wait_ready(kube, "TrainingJob", namespace, "iris-lr")
    wait_ready(kube, "InferenceService", namespace, "iris")
    wait_for(
        lambda: status_of(kube, "ModelVersion", namespace, mv).get("stage") == "Production", what="served"
    )
    # Let the last watch events and the first scrapes settle (scrape interval 5 s).
    time.sleep(12)

    objs = [*sorted(applied), ("ModelVersion", mv)]
    before = snapshot(kube, namespace, objs)
    for (kind, name), meta in before.items():
        # Nothing of kopf's bookkeeping in metadata (no change handlers: no diff-base, no progress).
        kopf_marks = [
            k for k in meta.get("annotations") or {} if "kopf" in k or k.startswith("internal.mlops.dev")
        ]
        assert kopf_marks == [], (kind, name, kopf_marks)
        assert not meta.get("finalizers"), (kind, name)  # deletion never waits for the operator
        if (kind, name) in generations:  # status writes never bump generation; spec is never written
            assert meta["generation"] == generations[(kind, name)], (kind, name)
        # Our status is written under our field manager on the status subresource only.
        managers = {(m["manager"], m.get("subresource", "")) for m in meta["managedFields"]}
        assert ("mlops-operator", "") not in managers, (kind, name, managers)
        if kind in ("InferenceService", "ModelVersion", "TrainingJob"):
            assert ("mlops-operator", "status") in managers, (kind, name, managers)

    assert diff(kubeconfig, namespace) == ""

    time.sleep(IDLE_SECONDS)
    after = snapshot(kube, namespace, objs)
    moved = {
        key: (before[key]["resourceVersion"], after[key]["resourceVersion"])
        for key in objs
        if before[key]["resourceVersion"] != after[key]["resourceVersion"]
    }
    assert moved == {}, f"resourceVersion moved at idle: {moved}"
    assert diff(kubeconfig, namespace) == ""
    assert gitops_operator.error is None
