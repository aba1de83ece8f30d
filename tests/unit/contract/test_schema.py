"""The API models are the single source of truth: samples validate, bad specs are refused,
and the committed CRDs are exactly what the models generate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from mlops_contract.api import crdgen
from mlops_contract.api.inferenceservice import InferenceServiceSpec
from mlops_contract.api.modelversion import ModelVersionSpec
from mlops_contract.api.trainingjob import TrainingJobSpec

ROOT = Path(__file__).resolve().parents[3]
SPECS: dict[str, type[BaseModel]] = {
    "TrainingJob": TrainingJobSpec,
    "ModelVersion": ModelVersionSpec,
    "InferenceService": InferenceServiceSpec,
}


def samples() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "manifests" / "samples").rglob("*.yaml")):
        docs += [
            d
            for d in yaml.safe_load_all(path.read_text())
            if d and d.get("apiVersion") == "mlops.dev/v1alpha1"
        ]
    return docs


def test_there_is_a_sample_per_kind() -> None:
    assert {d["kind"] for d in samples()} == set(SPECS)


@pytest.mark.parametrize("doc", samples(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_samples_validate(doc: dict[str, Any]) -> None:
    SPECS[doc["kind"]].model_validate(doc["spec"])


TJ = {
    "model": "iris",
    "data": {"source": {"uri": "builtin:iris"}},
    "estimator": {"class": "LogisticRegression"},
}
MV = {"model": "iris", "version": 1, "artifact": {"uri": "pvc://artifacts/iris/1", "sha256": "a" * 64}}
IS = {"model": "iris", "version": 1}


def merged(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {**base}
    for key, value in changes.items():
        out[key] = value
    return out


INVALID = [
    (
        "tj-unknown-estimator",
        TrainingJobSpec,
        merged(TJ, estimator={"class": "os.system"}),
        "estimator.class",
    ),
    ("tj-bad-model-name", TrainingJobSpec, merged(TJ, model="Iris_Model"), "String should match pattern"),
    (
        "tj-bad-uri",
        TrainingJobSpec,
        merged(TJ, data={"source": {"uri": "ftp://x/y"}}),
        "String should match pattern",
    ),
    ("tj-unknown-field", TrainingJobSpec, merged(TJ, epochs=3), "Extra inputs are not permitted"),
    (
        "tj-test-size",
        TrainingJobSpec,
        merged(TJ, data={"source": {"uri": "builtin:iris"}, "split": {"testSize": 1.5}}),
        "less than 1",
    ),
    (
        "tj-max-trials",
        TrainingJobSpec,
        merged(TJ, tuning={"space": {"C": [1]}, "maxTrials": 0}),
        "greater than or equal to 1",
    ),
    (
        "tj-gate-op",
        TrainingJobSpec,
        merged(TJ, evaluation={"gates": [{"metric": "accuracy", "op": "=", "threshold": 1}]}),
        "evaluation.gates.0.op",
    ),
    (
        "tj-output-https",
        TrainingJobSpec,
        merged(TJ, output={"uri": "https://example.invalid/x"}),
        "output.uri",
    ),
    (
        "mv-bad-sha",
        ModelVersionSpec,
        merged(MV, artifact={"uri": "pvc://a/b", "sha256": "xyz"}),
        "artifact.sha256",
    ),
    (
        "mv-pickle",
        ModelVersionSpec,
        merged(MV, artifact={"uri": "pvc://a/b", "sha256": "a" * 64, "format": "pickle"}),
        "artifact.format",
    ),
    ("mv-version-zero", ModelVersionSpec, merged(MV, version=0), "greater than or equal to 1"),
    ("is-negative-replicas", InferenceServiceSpec, merged(IS, replicas=-1), "greater than or equal to 0"),
    (
        "is-canary-100",
        InferenceServiceSpec,
        merged(IS, canary={"trafficPercent": 100}),
        "less than or equal to 99",
    ),
    (
        "is-bad-cron",
        InferenceServiceSpec,
        merged(IS, retraining={"template": {}, "triggers": {"schedule": "daily"}}),
        "String should match pattern",
    ),
]


@pytest.mark.parametrize(("name", "model", "spec", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_specs_are_refused(
    name: str, model: type[BaseModel], spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as err:
        model.model_validate(spec)
    assert message in str(err.value)


def test_committed_crds_match_the_models() -> None:
    assert crdgen.main(["--check", "--out", str(ROOT / "crds")]) == 0


def test_every_field_has_a_description() -> None:
    assert crdgen.undescribed_fields() == []


def _structural_problems(node: dict[str, Any], path: str) -> list[str]:
    problems = []
    if not ({"type", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string"} & node.keys()):
        problems.append(f"{path}: no type")
    for banned in ("anyOf", "oneOf", "allOf", "$ref", "const", "title"):
        if banned in node:
            problems.append(f"{path}: {banned}")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties false")
    for name, sub in node.get("properties", {}).items():
        problems += _structural_problems(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            problems += _structural_problems(node[key], f"{path}.{key}")
    return problems


@pytest.mark.parametrize("name", sorted(crdgen.all_crds()))
def test_crds_are_structural(name: str) -> None:
    manifest = crdgen.all_crds()[name]
    schema = manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _structural_problems(schema, "") == []
    assert manifest["spec"]["names"]["categories"] == ["mlops"]
    assert "isvc" not in manifest["spec"]["names"]["shortNames"]


def test_inferenceservice_has_scale_subresource() -> None:
    crd = crdgen.all_crds()["mlops.dev_inferenceservices.yaml"]
    scale = crd["spec"]["versions"][0]["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_cel_rules_are_present() -> None:
    crds = crdgen.all_crds()
    tj = crds["mlops.dev_trainingjobs.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = [v["rule"] for v in tj["properties"]["spec"]["x-kubernetes-validations"]]
    assert "self == oldSelf" in rules
    tuning = tj["properties"]["spec"]["properties"]["tuning"]
    assert tuning["x-kubernetes-validations"][0]["rule"] == "self.parallelism <= self.maxTrials"
    isvc = crds["mlops.dev_inferenceservices.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "has(self.version) != has(self.policy)" in [
        v["rule"] for v in isvc["properties"]["spec"]["x-kubernetes-validations"]
    ]
