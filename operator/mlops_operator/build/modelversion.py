"""Pure builder for a ModelVersion's verification Job.

The Job runs `mlops-trainer verify` in the trainer image where the artifact is reachable
(its claim mounted read-only): sha256 check, safe load, a prediction on a sample built from
the signature. Exit code 3 (verification failed) fails the Job at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mlops_operator.api.modelversion import ModelVersionSpec
from mlops_operator.build.common import (
    child_name,
    container_security_context,
    labels,
    object_meta,
    pod_security_context,
    pvc_claims,
    pvc_volumes,
)
from mlops_operator.build.trainingjob import CONTAINER, EXIT_BAD_INPUT, EXIT_VERIFY_FAILED
from mlops_operator.settings import Settings

LABEL_MODEL_VERSION: Final = "mlops.dev/model-version"


def verify_job_name(mv_name: str) -> str:
    return child_name(mv_name, "verify")


def verification_job(mv: Mapping[str, Any], spec: ModelVersionSpec, settings: Settings) -> dict[str, Any]:
    name = mv["metadata"]["name"]
    lbls = labels("verifier", name, spec.model, **{LABEL_MODEL_VERSION: name})
    claims = pvc_claims([spec.artifact.uri])
    volumes, mounts = pvc_volumes(claims, settings, read_only=claims)
    container = {
        "name": CONTAINER,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mlops-trainer"],
        "args": ["verify", "--artifact", spec.artifact.uri, "--sha256", spec.artifact.sha256],
        "env": [
            {"name": "MLOPS_PVC_ROOT", "value": settings.pvc_root},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(verify_job_name(name), mv, lbls),
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 600,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [EXIT_BAD_INPUT, EXIT_VERIFY_FAILED],
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": {"labels": lbls},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(settings),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
