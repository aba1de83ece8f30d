"""The retraining TrainingJob builder: name, labels, owner, annotations, spec from the template
or a copied TrainingJob, the labelled prediction log as a data source, the served baseline."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from mlops_contract.api.inferenceservice import InferenceServiceSpec
from mlops_operator.build.retraining import (
    SourceNotFound,
    retraining_base,
    retraining_job,
    retraining_spec,
)

TEMPLATE = {"data": {"source": {"uri": "builtin:iris"}}, "estimator": {"class": "RandomForestClassifier"}}


FEEDBACK = "pvc://artifacts/predictions/ml/iris"


def isvc_spec(**retraining_fields: Any) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(
        {"model": "iris", "version": 1, "retraining": {"template": TEMPLATE, **retraining_fields}}
    )


SPEC_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str | None, str, list[dict[str, Any]] | None]] = [
    ("model-filled-feedback-appended", {}, TEMPLATE, FEEDBACK, "iris", [{"uri": FEEDBACK, "format": "jsonl"}]),
    ("feedback-off", {"includeFeedback": False}, TEMPLATE, FEEDBACK, "iris", None),
    ("no-prediction-log", {}, TEMPLATE, None, "iris", None),
    ("template-model-kept", {}, TEMPLATE | {"model": "iris-v2"}, FEEDBACK, "iris-v2", [{"uri": FEEDBACK, "format": "jsonl"}]),
    (
        "existing-extra-sources-kept",
        {},
        {**TEMPLATE, "data": {"source": {"uri": "builtin:iris"}, "extraSources": [{"uri": "pvc://d/more.csv"}]}},
        FEEDBACK,
        "iris",
        [{"uri": "pvc://d/more.csv"}, {"uri": FEEDBACK, "format": "jsonl"}],
    ),
    (
        "feedback-not-duplicated",
        {},
        {**TEMPLATE, "data": {"source": {"uri": "builtin:iris"}, "extraSources": [{"uri": FEEDBACK, "format": "jsonl"}]}},
        FEEDBACK,
        "iris",
        [{"uri": FEEDBACK, "format": "jsonl"}],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "fields", "base", "feedback", "model", "extra"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES]
)
def test_retraining_spec(
    name: str,
    fields: dict[str, Any],
    base: dict[str, Any],
    feedback: str | None,
    model: str,
    extra: list[dict[str, Any]] | None,
) -> None:
    before = copy.deepcopy(base)
    out = retraining_spec(isvc_spec(**fields), base, feedback)
    assert base == before  # the template is never mutated
    assert out["model"] == model
    assert out["data"].get("extraSources") == extra
    assert out["estimator"] == TEMPLATE["estimator"]


def test_retraining_spec_from_a_copied_trainingjob() -> None:
    copied = {"model": "iris", **TEMPLATE, "tuning": {"space": {"n_estimators": [10, 50]}}}
    spec = InferenceServiceSpec.model_validate(
        {"model": "iris", "version": 1, "retraining": {"fromTrainingJob": "iris-train"}}
    )
    out = retraining_spec(spec, copied, FEEDBACK)
    assert out["tuning"] == {"space": {"n_estimators": [10, 50]}}
    assert out["data"]["extraSources"] == [{"uri": FEEDBACK, "format": "jsonl"}]


def test_retraining_spec_must_be_a_valid_trainingjob() -> None:
    with pytest.raises(ValidationError):
        retraining_spec(isvc_spec(), {"data": {"source": {"uri": "builtin:iris"}}}, None)


# --- status.retraining.lastOutcome ------------------------------------------------------------


def test_retraining_spec_scores_the_served_version_as_its_baseline() -> None:
    served = {
        "metadata": {"name": "iris-v4"},
        "spec": {"artifact": {"uri": "pvc://mlops-artifacts/models/iris/run-4", "sha256": "ab" * 32}},
    }
    out = retraining_spec(isvc_spec(), TEMPLATE, None, served)
    assert out["evaluation"]["baseline"] == {
        "modelVersion": "iris-v4",
        "uri": "pvc://mlops-artifacts/models/iris/run-4",
        "sha256": "ab" * 32,
    }
    assert "baseline" not in (retraining_spec(isvc_spec(), TEMPLATE, None).get("evaluation") or {})


def test_a_served_s3_version_lends_its_secret_to_the_baseline() -> None:
    served = {
        "metadata": {"name": "iris-v4"},
        "spec": {
            "artifact": {"uri": "s3://models/iris/run-4", "sha256": "ab" * 32, "secretRef": {"name": "c"}}
        },
    }
    out = retraining_spec(isvc_spec(), TEMPLATE, "s3://models/predictions/ml/iris", served, "c")
    assert out["evaluation"]["baseline"]["secretRef"] == {"name": "c"}
    assert out["data"]["extraSources"] == [
        {"uri": "s3://models/predictions/ml/iris", "format": "jsonl", "secretRef": {"name": "c"}}
    ]


# --- the whole TrainingJob ---------------------------------------------------------------------

ISVC = {
    "apiVersion": "mlops.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-7", "generation": 3},
}
SERVED = {
    "metadata": {"name": "iris-v4", "namespace": "ml"},
    "spec": {
        "model": "iris",
        "version": 4,
        "artifact": {"uri": "pvc://artifacts/models/iris/run-4", "sha256": "ab" * 32},
    },
}
COPIED = {
    "metadata": {"name": "iris-train", "namespace": "ml"},
    "spec": {"model": "iris", **TEMPLATE, "tuning": {"space": {"n_estimators": [10, 50]}}},
}


def body(retraining: dict[str, Any]) -> tuple[dict[str, Any], InferenceServiceSpec]:
    spec = {"model": "iris", "version": 4, "retraining": retraining}
    return {**ISVC, "spec": spec}, InferenceServiceSpec.model_validate(spec)


def job(
    retraining: dict[str, Any] | None = None,
    *,
    source: dict[str, Any] | None = None,
    served: dict[str, Any] | None = SERVED,
    reason: str = "drift 0.4 above 0.25 for 3 scrapes",
) -> dict[str, Any]:
    isvc, spec = body(retraining or {"template": TEMPLATE})
    return retraining_job(
        isvc, spec, name="iris-retrain-2", trigger="drift", reason=reason, source=source, served=served
    )


def test_name_namespace_labels_and_owner() -> None:
    tj = job()
    assert (tj["apiVersion"], tj["kind"]) == ("mlops.dev/v1alpha1", "TrainingJob")
    meta = tj["metadata"]
    assert (meta["name"], meta["namespace"]) == ("iris-retrain-2", "ml")
    assert meta["labels"]["mlops.dev/inference-service"] == "iris"
    assert meta["labels"]["app.kubernetes.io/component"] == "retraining"
    assert meta["labels"]["app.kubernetes.io/instance"] == "iris"
    assert meta["labels"]["mlops.dev/model"] == "iris"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "mlops-operator"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "mlops.dev/v1alpha1",
            "kind": "InferenceService",
            "name": "iris",
            "uid": "uid-7",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


@pytest.mark.parametrize(
    ("reason", "kept"),
    [("drift 0.4 above 0.25", "drift 0.4 above 0.25"), ("x" * 1500, "x" * 1000)],
    ids=["short-reason-kept", "long-reason-cut-to-1000"],
)
def test_annotations_say_which_trigger_and_why(reason: str, kept: str) -> None:
    annotations = job(reason=reason)["metadata"]["annotations"]
    assert annotations == {"mlops.dev/trigger": "drift", "mlops.dev/reason": kept}


LOG = {"predictionLog": {"uri": "pvc://logs/iris"}}
OFF = {"predictionLog": {"enabled": False}}
# (id, spec.retraining, spec.monitoring, served version, extraSources expected, baseline expected)
JOB_CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any] | None, list[dict[str, Any]] | None, str | None]] = [
    ("template-feedback-and-baseline", {"template": TEMPLATE}, {}, SERVED, [{"uri": "pvc://artifacts/predictions/ml/iris", "format": "jsonl"}], "iris-v4"),
    ("prediction-log-uri-from-the-spec", {"template": TEMPLATE}, LOG, SERVED, [{"uri": "pvc://logs/iris", "format": "jsonl"}], "iris-v4"),
    ("include-feedback-off", {"template": TEMPLATE, "includeFeedback": False}, {}, SERVED, None, "iris-v4"),
    ("prediction-log-off", {"template": TEMPLATE}, OFF, SERVED, None, "iris-v4"),
    ("nothing-served-no-feedback-no-baseline", {"template": TEMPLATE}, {}, None, None, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "retraining", "monitoring", "served", "extra", "baseline"),
    JOB_CASES,
    ids=[c[0] for c in JOB_CASES],
)
def test_spec_feedback_and_baseline(
    name: str,
    retraining: dict[str, Any],
    monitoring: dict[str, Any],
    served: dict[str, Any] | None,
    extra: list[dict[str, Any]] | None,
    baseline: str | None,
) -> None:
    spec = {"model": "iris", "version": 4, "retraining": retraining, "monitoring": monitoring}
    tj = retraining_job(
        {**ISVC, "spec": spec},
        InferenceServiceSpec.model_validate(spec),
        name="iris-retrain-2",
        trigger="drift",
        reason="r",
        source=None,
        served=served,
    )
    assert tj["spec"]["model"] == "iris"
    assert tj["spec"]["estimator"] == TEMPLATE["estimator"]
    assert tj["spec"]["data"].get("extraSources") == extra
    assert ((tj["spec"].get("evaluation") or {}).get("baseline") or {}).get("modelVersion") == baseline


def test_spec_copied_from_a_trainingjob() -> None:
    tj = job({"fromTrainingJob": "iris-train"}, source=COPIED)
    assert tj["spec"]["tuning"] == {"space": {"n_estimators": [10, 50]}}
    assert tj["spec"]["data"]["source"] == {"uri": "builtin:iris"}
    assert COPIED["spec"].get("evaluation") is None  # the source TrainingJob is never modified


def test_a_missing_source_trainingjob_is_named() -> None:
    with pytest.raises(SourceNotFound, match="retraining source TrainingJob iris-train not found"):
        job({"fromTrainingJob": "iris-train"}, source=None)


def test_base_prefers_the_template_and_needs_a_retraining_spec() -> None:
    _, spec = body({"template": TEMPLATE})
    base = retraining_base(spec, COPIED)
    assert base["estimator"] == {"class": "RandomForestClassifier"}
    assert "tuning" not in base
    with pytest.raises(ValueError, match=r"no spec\.retraining"):
        retraining_base(InferenceServiceSpec.model_validate({"model": "iris", "version": 1}), None)
