"""Pure builder for a ModelVersion's verification Job.

The Job runs `mlops-trainer verify` in the trainer image where the artifact is reachable
(its claim mounted read-only): sha256 check, safe load, a prediction on a sample built from
the signature. Exit code 3 (verification failed) fails the Job at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mlops_contract.api.common import LABEL_MODEL_VERSION
from mlops_contract.api.modelversion import ModelVersionSpec
from mlops_operator.build.common import child_name, labels, pvc_claims, pvc_volumes
from mlops_operator.build.trainingjob import trainer_container, trainer_job
from mlops_operator.settings import Settings

COMPONENT: Final = "verifier"
RESOURCES: Final = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}


def verify_job_name(mv_name: str) -> str:
    return child_name(mv_name, "verify")


def verification_job(mv: Mapping[str, Any], spec: ModelVersionSpec, settings: Settings) -> dict[str, Any]:
    name = mv["metadata"]["name"]
    lbls = labels(COMPONENT, name, spec.model, **{LABEL_MODEL_VERSION: name})
    claims = pvc_claims([spec.artifact.uri])
    volumes, mounts = pvc_volumes(claims, settings, read_only=claims)
    args = ["verify", "--artifact", spec.artifact.uri, "--sha256", spec.artifact.sha256]
    container = trainer_container(
        settings.trainer_image, settings, args=args, mounts=mounts, resources=RESOURCES
    )
    return trainer_job(
        mv,
        verify_job_name(name),
        lbls,
        container,
        volumes,
        settings=settings,
        backoff_limit=2,
        active_deadline_seconds=600,
    )
