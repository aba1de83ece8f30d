"""The CRDs on a real API server: samples apply, the schema and CEL refuse bad specs with
clear messages, immutability holds, and status goes through the status subresource."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from clusterkit import apply_yaml, kubectl, load_sample

from mlops_operator.kube import Kube, KubeError

SAMPLES = ["trainingjob.yaml", "modelversion.yaml", "inferenceservice.yaml"]


@pytest.mark.parametrize("sample", SAMPLES)
def test_sample_applies(kubeconfig: str, namespace: str, sample: str) -> None:
    doc = load_sample(sample)
    apply_yaml(kubeconfig, namespace, yaml.safe_dump(doc))
    out = kubectl(
        kubeconfig, "-n", namespace, "get", doc["kind"].lower(), doc["metadata"]["name"], "-o", "yaml"
    ).stdout
    stored = yaml.safe_load(out)
    assert stored["spec"]["model"] == doc["spec"]["model"]


def test_kubectl_get_mlops_lists_all_three_kinds(kubeconfig: str, namespace: str) -> None:
    for sample in SAMPLES:
        apply_yaml(kubeconfig, namespace, yaml.safe_dump(load_sample(sample)))
    out = kubectl(kubeconfig, "-n", namespace, "get", "mlops").stdout
    assert "trainingjob.mlops.dev/iris-rf-1" in out
    assert "modelversion.mlops.dev/churn-v1" in out
    assert "inferenceservice.mlops.dev/iris" in out


def test_defaults_are_applied_by_the_server(kubeconfig: str, namespace: str) -> None:
    tj = {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "defaults"},
        "spec": {
            "model": "iris",
            "data": {"source": {"uri": "builtin:iris"}},
            "estimator": {"class": "LogisticRegression"},
        },
    }
    apply_yaml(kubeconfig, namespace, yaml.safe_dump(tj))
    stored = yaml.safe_load(
        kubectl(kubeconfig, "-n", namespace, "get", "tj", "defaults", "-o", "yaml").stdout
    )
    assert stored["spec"]["data"]["split"] == {"testSize": 0.2, "stratify": True, "seed": 42}
    assert stored["spec"]["output"]["uri"] == "pvc://mlops-artifacts/models"
    assert stored["spec"]["backoffLimit"] == 2


TJ: dict[str, Any] = {
    "apiVersion": "mlops.dev/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "bad"},
    "spec": {
        "model": "iris",
        "data": {"source": {"uri": "builtin:iris"}},
        "estimator": {"class": "LogisticRegression"},
    },
}
IS: dict[str, Any] = {
    "apiVersion": "mlops.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "bad"},
    "spec": {"model": "iris", "version": 1},
}


def with_spec(base: dict[str, Any], **spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    doc["spec"].update(spec)
    return doc


INVALID = [
    ("unknown-estimator", with_spec(TJ, estimator={"class": "os.system"}), 'Unsupported value: "os.system"'),
    (
        "parallelism-above-max-trials",
        with_spec(TJ, tuning={"space": {"C": [1, 2]}, "maxTrials": 2, "parallelism": 5}),
        "parallelism must not exceed maxTrials",
    ),
    ("unknown-builtin", with_spec(TJ, data={"source": {"uri": "builtin:mnist"}}), "builtin datasets are"),
    ("bad-uri-scheme", with_spec(TJ, data={"source": {"uri": "ftp://host/x.csv"}}), "spec.data.source.uri"),
    (
        "long-name",
        {**copy.deepcopy(TJ), "metadata": {"name": "x" * 60}},
        "name must be at most 50 characters",
    ),
    (
        "version-and-policy",
        with_spec(IS, policy={"select": "latest"}),
        "set exactly one of version or policy",
    ),
    (
        "neither-version-nor-policy",
        {**copy.deepcopy(IS), "spec": {"model": "iris"}},
        "set exactly one of version or policy",
    ),
    (
        "autoscaling-min-above-max",
        with_spec(IS, autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "minReplicas must not exceed maxReplicas",
    ),
    (
        "retraining-template-and-ref",
        with_spec(
            IS,
            retraining={
                "template": {"data": {"source": {"uri": "builtin:iris"}}, "estimator": {"class": "Ridge"}},
                "fromTrainingJob": "x",
            },
        ),
        "set exactly one of template or fromTrainingJob",
    ),
    ("canary-percent", with_spec(IS, canary={"trafficPercent": 150}), "spec.canary.trafficPercent"),
]


@pytest.mark.parametrize(("doc", "message"), [(d, m) for _, d, m in INVALID], ids=[n for n, _, _ in INVALID])
def test_server_refuses_invalid_specs(
    kubeconfig: str, namespace: str, doc: dict[str, Any], message: str
) -> None:
    result = apply_yaml(kubeconfig, namespace, yaml.safe_dump(doc), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "patch",
    [
        '{"spec": {"metrics": {"accuracy": 0.99}}}',
        '{"spec": {"artifact": {"sha256": "' + "0" * 64 + '"}}}',
        '{"spec": {"version": 2}}',
    ],
    ids=["metrics", "sha256", "version"],
)
def test_modelversion_spec_is_immutable(kubeconfig: str, namespace: str, patch: str) -> None:
    doc = load_sample("modelversion.yaml")
    apply_yaml(kubeconfig, namespace, yaml.safe_dump(doc))
    name = doc["metadata"]["name"]
    result = kubectl(
        kubeconfig, "-n", namespace, "patch", "mv", name, "--type=merge", "-p", patch, check=False
    )
    assert result.returncode != 0
    assert "ModelVersion spec is immutable" in result.stderr
    # Metadata stays editable: approval for manual promotion is an annotation.
    kubectl(kubeconfig, "-n", namespace, "annotate", "mv", name, "mlops.dev/approved-by=alice")


def test_trainingjob_spec_is_immutable(kubeconfig: str, namespace: str) -> None:
    apply_yaml(kubeconfig, namespace, yaml.safe_dump(TJ | {"metadata": {"name": "fixed"}}))
    result = kubectl(
        kubeconfig,
        "-n",
        namespace,
        "patch",
        "tj",
        "fixed",
        "--type=merge",
        "-p",
        '{"spec": {"backoffLimit": 5}}',
        check=False,
    )
    assert result.returncode != 0
    assert "TrainingJob spec is immutable" in result.stderr


def test_status_goes_through_the_status_subresource(kube: Kube, kubeconfig: str, namespace: str) -> None:
    apply_yaml(kubeconfig, namespace, yaml.safe_dump(TJ | {"metadata": {"name": "st"}}))
    kube.patch_status("TrainingJob", namespace, "st", {"phase": "Running", "progress": "2/6", "score": 0.5})
    got = kube.get("TrainingJob", namespace, "st")
    assert got is not None
    assert got["status"] == {"phase": "Running", "progress": "2/6", "score": 0.5}
    # Status written through the main resource is ignored.
    kube.request(
        "PATCH",
        f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/trainingjobs/st",
        body={"status": {"phase": "Failed"}},
        content_type="application/merge-patch+json",
    )
    after = kube.get("TrainingJob", namespace, "st")
    assert after is not None and after["status"]["phase"] == "Running"
    columns = kubectl(kubeconfig, "-n", namespace, "get", "tj", "st").stdout
    assert "Running" in columns and "2/6" in columns


def test_status_writes_work_with_nulls_in_free_form_spec_values(
    kube: Kube, kubeconfig: str, namespace: str
) -> None:
    # `max_depth: [3, null]` in a tuning space and `max_depth: null` in params are normal
    # scikit-learn values; the spec's CEL rules must still evaluate on every later status write.
    doc = load_sample("trainingjob.yaml")
    doc["metadata"]["name"] = "nulls"
    doc["spec"]["estimator"]["params"] = {"n_estimators": 10, "max_depth": None}
    assert None in doc["spec"]["tuning"]["space"]["max_depth"]
    apply_yaml(kubeconfig, namespace, yaml.safe_dump(doc))
    kube.patch_status("TrainingJob", namespace, "nulls", {"phase": "Running"})
    got = kube.get("TrainingJob", namespace, "nulls")
    assert got is not None and got["status"]["phase"] == "Running"
    assert got["spec"]["tuning"]["space"]["max_depth"] == [3, None]
    assert got["spec"]["estimator"]["params"]["max_depth"] is None


def test_status_rejects_undeclared_enum_values(kube: Kube, kubeconfig: str, namespace: str) -> None:
    apply_yaml(kubeconfig, namespace, yaml.safe_dump(TJ | {"metadata": {"name": "st2"}}))
    with pytest.raises(KubeError) as err:
        kube.patch_status("TrainingJob", namespace, "st2", {"phase": "Exploded"})
    assert err.value.status == 422


def test_scale_subresource(kube: Kube, kubeconfig: str, namespace: str) -> None:
    apply_yaml(kubeconfig, namespace, yaml.safe_dump(IS | {"metadata": {"name": "scaled"}}))
    kubectl(kubeconfig, "-n", namespace, "scale", "inferenceservice/scaled", "--replicas=3")
    got = kube.get("InferenceService", namespace, "scaled")
    assert got is not None and got["spec"]["replicas"] == 3
