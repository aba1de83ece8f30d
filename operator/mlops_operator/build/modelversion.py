"""Pure builders for a ModelVersion and its verification Job.

`model_version_manifest` is the ModelVersion a successful TrainingJob registers.

The Job runs `mlops-trainer verify` in the trainer image where the artifact is reachable
(its claim mounted read-only, or its s3:// Secret as the environment): sha256 check, safe load, a prediction on a sample built from
the signature. Exit code 3 (verification failed) fails the Job at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mlops_contract.api.common import API_VERSION, LABEL_MODEL_VERSION, LABEL_TRAINING_JOB, LABEL_VERSION
from mlops_contract.api.modelversion import ModelVersionSpec
from mlops_contract.api.trainingjob import TrainingJobSpec
from mlops_operator.build.common import child_name, labels, pvc_claims, pvc_volumes, secret_env
from mlops_operator.build.trainingjob import trainer_container, trainer_job
from mlops_operator.settings import Settings

COMPONENT: Final = "verifier"
PURGE_COMPONENT: Final = "purger"
RESOURCES: Final = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}


def verify_job_name(mv_name: str) -> str:
    return child_name(mv_name, "verify")


def storage_uris(spec: ModelVersionSpec) -> list[str]:
    """The locations the verification pod mounts (pvc:// ones need their claim)."""
    return [spec.artifact.uri]


def verification_job(mv: Mapping[str, Any], spec: ModelVersionSpec, settings: Settings) -> dict[str, Any]:
    name = mv["metadata"]["name"]
    lbls = labels(COMPONENT, name, spec.model, **{LABEL_MODEL_VERSION: name})
    claims = pvc_claims(storage_uris(spec))
    volumes, mounts = pvc_volumes(claims, settings, read_only=claims)
    args = ["verify", "--artifact", spec.artifact.uri, "--sha256", spec.artifact.sha256]
    container = trainer_container(
        settings.trainer_image, settings, args=args, mounts=mounts, resources=RESOURCES
    )
    env_from = secret_env([spec.artifact.secret_ref.name if spec.artifact.secret_ref else None])
    if env_from:
        container["envFrom"] = env_from
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


PURGE_TTL_SECONDS: Final = 600


def purge_job_name(mv_name: str) -> str:
    return child_name(mv_name, "purge")


def purgeable(spec: ModelVersionSpec, namespace: str) -> bool:
    """Whether retention deletes this version's artifact too (pure): an s3:// artifact the
    operator's own training run wrote, at the place it writes to (`<output>/<model>/<job>`).
    A version registered by hand, a pvc:// artifact or one elsewhere is left in place."""
    job = spec.source.training_job if spec.source else None
    uri = spec.artifact.uri.rstrip("/")
    return bool(namespace) and bool(job) and uri.startswith("s3://") and uri.endswith(f"/{spec.model}/{job}")


def purge_job(mv: Mapping[str, Any], spec: ModelVersionSpec, settings: Settings) -> dict[str, Any]:
    """The Job deleting a retired version's s3:// artifact (`mlops-trainer purge`), with the
    artifact's secretRef as envFrom: the operator itself never holds credentials. Not owned by
    the ModelVersion it outlives: it removes itself PURGE_TTL_SECONDS after it ends."""
    name, namespace = mv["metadata"]["name"], mv["metadata"]["namespace"]
    assert spec.source is not None and spec.source.training_job, "purge_job needs purgeable(spec)"
    args = [
        "purge", "--artifact", spec.artifact.uri, "--sha256", spec.artifact.sha256,
        "--namespace", namespace, "--training-job", spec.source.training_job,
    ]  # fmt: skip
    container = trainer_container(settings.trainer_image, settings, args=args, mounts=[], resources=RESOURCES)
    env_from = secret_env([spec.artifact.secret_ref.name if spec.artifact.secret_ref else None])
    if env_from:
        container["envFrom"] = env_from
    lbls = labels(PURGE_COMPONENT, name, spec.model, **{LABEL_MODEL_VERSION: name})
    job = trainer_job(
        mv,
        purge_job_name(name),
        lbls,
        container,
        [],
        settings=settings,
        backoff_limit=3,
        active_deadline_seconds=300,
    )
    job["metadata"].pop("ownerReferences", None)
    job["spec"]["ttlSecondsAfterFinished"] = PURGE_TTL_SECONDS
    return job


def model_version_name(model: str, version: int) -> str:
    return f"{model}-v{version}"


def data_sources(value: Any) -> list[dict[str, Any]]:
    """The trainer's record of rows read per source, kept only when well formed (pure)."""
    if not isinstance(value, list):
        return []
    return [
        {"uri": item["uri"], "rows": item["rows"]}
        for item in value[:64]
        if isinstance(item, dict)
        and isinstance(item.get("uri"), str)
        and isinstance(item.get("rows"), int)
        and not isinstance(item.get("rows"), bool)
        and item["rows"] >= 0
    ]


def model_version_manifest(
    tj: Mapping[str, Any], spec: TrainingJobSpec, result: Mapping[str, Any], version: int, default_image: str
) -> dict[str, Any]:
    """The ModelVersion for a successful run. Not owned by the TrainingJob: it outlives it."""
    name = tj["metadata"]["name"]
    mv_spec: dict[str, Any] = {
        "model": spec.model,
        "version": version,
        "artifact": {"uri": result["artifactUri"], "format": "skops", "sha256": result["sha256"]},
        "source": {
            "trainingJob": name,
            "dataUri": spec.data.source.uri,
            "trainerImage": spec.image or default_image,
            "estimator": spec.estimator.class_name,
        },
    }
    if spec.output.secret_ref is not None:  # the artifact is where the output went: same credentials
        mv_spec["artifact"]["secretRef"] = spec.output.secret_ref.to_dict()
    if result.get("dataDigest"):
        mv_spec["source"]["dataDigest"] = result["dataDigest"]
    if isinstance(result.get("params"), dict):
        mv_spec["source"]["params"] = result["params"]
    if sources := data_sources(result.get("dataSources")):
        mv_spec["source"]["dataSources"] = sources
    if isinstance(result.get("metrics"), dict):
        mv_spec["metrics"] = {
            k: float(v) for k, v in result["metrics"].items() if isinstance(v, (int, float))
        }
    if result.get("primaryMetric"):
        mv_spec["primaryMetric"] = result["primaryMetric"]
    baseline = result.get("baseline")
    if (
        isinstance(baseline, dict)
        and baseline.get("modelVersion")
        and isinstance(baseline.get("metrics"), dict)
    ):
        mv_spec["baseline"] = {
            "modelVersion": str(baseline["modelVersion"]),
            "metrics": {k: float(v) for k, v in baseline["metrics"].items() if isinstance(v, (int, float))},
        }
    if spec.evaluation.gates:
        mv_spec["gates"] = [g.to_dict() for g in spec.evaluation.gates]
    if isinstance(result.get("signature"), dict):
        mv_spec["signature"] = result["signature"]
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": {
            "name": model_version_name(spec.model, version),
            "namespace": tj["metadata"]["namespace"],
            "labels": labels("model", model_version_name(spec.model, version), spec.model)
            | {LABEL_VERSION: str(version), LABEL_TRAINING_JOB: name},
        },
        "spec": mv_spec,
    }
