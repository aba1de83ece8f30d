"""The tenant policy the operator enforces before it creates a pod (issue #19). Pure.

The right to create a TrainingJob or an InferenceService must not be the right to run any
image under any ServiceAccount of the namespace. Two operator settings say what a spec may
name (settings.py): `allowed_image_prefixes` for `image` and `allow_service_account` for
`serviceAccountName`. The ValidatingAdmissionPolicy in manifests/components/admission-policy
refuses the same specs at admission from the same ConfigMap; this module is the operator's
own check for clusters without that policy (or objects created before it), so a refused spec
ends in a condition with reason NotPermitted and a Warning Event, never in a pod.

An InferenceService's retraining template is checked with it: the TrainingJobs it would create
run the template's image and ServiceAccount.
"""

from __future__ import annotations

from typing import Final

from mlops_contract.api.common import PodOptions
from mlops_contract.api.inferenceservice import InferenceServiceSpec
from mlops_contract.api.trainingjob import TrainingJobSpec
from mlops_operator.settings import Settings

NOT_PERMITTED: Final = "NotPermitted"


def _refused(options: PodOptions, settings: Settings, where: str) -> list[str]:
    problems = []
    image = options.image
    prefixes = settings.allowed_image_prefixes
    if image is not None and prefixes and not image.startswith(prefixes):
        allowed = ", ".join(prefixes)
        problems.append(f"{where}.image {image} is not under an allowed prefix ({allowed})")
    if options.service_account_name is not None and not settings.allow_service_account:
        problems.append(
            f"{where}.serviceAccountName may not be set: this operator runs pods as the namespace's "
            "default ServiceAccount"
        )
    return problems


def refused(spec: TrainingJobSpec | InferenceServiceSpec, settings: Settings) -> list[str]:
    """What the tenant policy refuses in a spec, one message per field; [] when it is allowed."""
    problems = _refused(spec, settings, "spec")
    if isinstance(spec, InferenceServiceSpec) and spec.retraining and spec.retraining.template:
        problems += _refused(spec.retraining.template, settings, "spec.retraining.template")
    return problems
