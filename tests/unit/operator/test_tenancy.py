"""The operator's own tenant policy (issue #19): settings read from the environment, and what
`tenancy.refused` refuses in a TrainingJob or InferenceService spec (the same rules the
ValidatingAdmissionPolicy in manifests/admission applies at admission)."""

from __future__ import annotations

from typing import Any

import pytest

from mlops_contract.api.inferenceservice import InferenceServiceSpec
from mlops_contract.api.trainingjob import TrainingJobSpec
from mlops_operator.settings import Settings
from mlops_operator.tenancy import refused

STRICT = Settings(
    allowed_image_prefixes=("registry.example.com/ml/", "mlops-operator/"), allow_service_account=False
)


def tj(**fields: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(
        {
            "model": "iris",
            "data": {"source": {"uri": "builtin:iris"}},
            "estimator": {"class": "LogisticRegression"},
            **fields,
        }
    )


def isvc(template: dict[str, Any] | None = None, **fields: Any) -> InferenceServiceSpec:
    spec: dict[str, Any] = {"model": "iris", "policy": {"select": "latest"}, **fields}
    if template is not None:
        spec["retraining"] = {
            "template": {
                "data": {"source": {"uri": "builtin:iris"}},
                "estimator": {"class": "LogisticRegression"},
                **template,
            }
        }
    return InferenceServiceSpec.model_validate(spec)


CASES: dict[str, tuple[TrainingJobSpec | InferenceServiceSpec, list[str]]] = {
    "tj-default-image": (tj(), []),
    "tj-allowed-image": (tj(image="registry.example.com/ml/trainer:1"), []),
    "tj-second-prefix": (tj(image="mlops-operator/trainer:dev"), []),
    "tj-lookalike-host": (
        tj(image="registry.example.com.evil/ml/trainer:1"),
        [
            "spec.image registry.example.com.evil/ml/trainer:1 is not under an allowed prefix "
            "(registry.example.com/ml/, mlops-operator/)"
        ],
    ),
    "tj-service-account": (
        tj(serviceAccountName="admin"),
        [
            "spec.serviceAccountName may not be set: this operator runs pods as the namespace's "
            "default ServiceAccount"
        ],
    ),
    "isvc-image-and-account": (
        isvc(image="evil/server", serviceAccountName="admin"),
        ["spec.image evil/server is not", "spec.serviceAccountName may not be set"],
    ),
    "isvc-template-image": (
        isvc(template={"image": "evil/trainer"}),
        ["spec.retraining.template.image evil/trainer is not under an allowed prefix"],
    ),
    "isvc-template-account": (
        isvc(template={"serviceAccountName": "admin"}),
        ["spec.retraining.template.serviceAccountName may not be set"],
    ),
    "isvc-allowed": (isvc(image="mlops-operator/server:dev", template={}), []),
}


@pytest.mark.parametrize(("spec", "expected"), CASES.values(), ids=CASES.keys())
def test_refused_under_a_strict_policy(
    spec: TrainingJobSpec | InferenceServiceSpec, expected: list[str]
) -> None:
    problems = refused(spec, STRICT)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problem


@pytest.mark.parametrize("spec", [s for s, _ in CASES.values()], ids=CASES.keys())
def test_the_default_settings_refuse_nothing(spec: TrainingJobSpec | InferenceServiceSpec) -> None:
    """Without settings (the operator run by hand, the cluster tier) any image and account go."""
    assert refused(spec, Settings()) == []


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "MLOPS_ALLOWED_IMAGE_PREFIXES": " registry.example.com/ml/, ,mlops-operator/,",
            "MLOPS_ALLOW_SERVICE_ACCOUNT": "False",
        }
    )
    assert settings.allowed_image_prefixes == ("registry.example.com/ml/", "mlops-operator/")
    assert settings.allow_service_account is False
    assert Settings.from_env({}).allowed_image_prefixes == ()
    assert Settings.from_env({}).allow_service_account is True
    assert Settings.from_env({"MLOPS_ALLOW_SERVICE_ACCOUNT": "TRUE"}).allow_service_account is True


def test_a_flag_that_is_neither_true_nor_false_stops_start_up() -> None:
    with pytest.raises(ValueError, match="expected true or false, got 'no'"):
        Settings.from_env({"MLOPS_ALLOW_SERVICE_ACCOUNT": "no"})
