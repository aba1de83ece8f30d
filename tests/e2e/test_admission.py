"""The tenant policy at admission, as installed (issue #19): `kubectl apply` of a TrainingJob whose
image is not under an allowed prefix, or that sets a ServiceAccount, is refused by the
ValidatingAdmissionPolicy the overlay ships (manifests/admission), with its message, and nothing
is created; the sample's own image is admitted."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml
from e2ekit import Cluster, sample

pytestmark = pytest.mark.e2e


def _apply(cluster: Cluster, namespace: str, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cluster.kubectl_bin, "--kubeconfig", cluster.kubeconfig, "-n", namespace, "apply", "-f", "-"],
        input=yaml.safe_dump(doc),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _trainingjob(name: str, **spec: Any) -> dict[str, Any]:
    doc = sample("trainingjob.yaml")
    doc["metadata"]["name"] = name
    doc["spec"].update(spec)
    return doc


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"image": "docker.io/someone/trainer:latest"}, "is not under an allowed prefix (mlops-operator/)"),
        ({"serviceAccountName": "builder"}, "spec.serviceAccountName may not be set"),
    ],
    ids=["foreign-image", "service-account"],
)
def test_a_disallowed_trainingjob_is_refused_at_admission(
    cluster: Cluster, namespace: str, spec: dict[str, Any], fragment: str
) -> None:
    refused = _apply(cluster, namespace, _trainingjob("refused", **spec))
    assert refused.returncode != 0, refused.stdout
    assert "ValidatingAdmissionPolicy" in refused.stderr and fragment in refused.stderr, refused.stderr
    assert cluster.get(namespace, "trainingjob", "refused") is None


def test_the_shipped_image_is_admitted(cluster: Cluster, namespace: str) -> None:
    admitted = _apply(cluster, namespace, _trainingjob("admitted", image="mlops-operator/trainer:dev"))
    assert admitted.returncode == 0, admitted.stderr
    assert cluster.get(namespace, "trainingjob", "admitted")["spec"]["image"] == "mlops-operator/trainer:dev"
    cluster.kubectl("-n", namespace, "delete", "trainingjob", "admitted", "--wait=false")
