"""Pure builders for a TrainingJob's children: the tuning Indexed Job, the training Job.

Both Jobs run the trainer image with the TrainingJob spec as JSON in MLOPS_CONFIG. Exit
codes are a contract with the trainer (mlops_trainer): 2 = bad input and 3 = artifact
verification failed fail the Job at once through the podFailurePolicy; anything else is
retried up to spec.backoffLimit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from mlops_contract.api.common import LABEL_TRAINING_JOB, PodOptions
from mlops_contract.api.trainingjob import TrainingJobSpec
from mlops_operator.build.common import (
    child_name,
    container_security_context,
    labels,
    object_meta,
    pod_security_context,
    pvc_claims,
    pvc_volumes,
    quantity,
    quantity_bytes,
    resources,
    scheduling,
    secret_env,
    spread_over_nodes,
)
from mlops_operator.settings import Settings

LABEL_STEP: Final = "mlops.dev/step"
EXIT_BAD_INPUT: Final = 2
EXIT_VERIFY_FAILED: Final = 3
CONTAINER: Final = "trainer"
DEFAULT_RESOURCES: Final = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}


def train_job_name(tj_name: str) -> str:
    return child_name(tj_name, "train")


def tune_job_name(tj_name: str) -> str:
    return child_name(tj_name, "tune")


def prepare_job_name(tj_name: str) -> str:
    return child_name(tj_name, "prepare")


def trainer_config(
    tj: Mapping[str, Any],
    spec: TrainingJobSpec,
    settings: Settings,
    params: Mapping[str, Any] | None,
    prepared: Mapping[str, str] | None = None,
) -> str:
    """The trainer's MLOPS_CONFIG; `prepared` ({uri, sha256}) names the data the prepare step
    wrote, which the trials and the final fit read instead of the raw sources (issue #23)."""
    config: dict[str, Any] = {
        "name": tj["metadata"]["name"],
        "namespace": tj["metadata"]["namespace"],
        "spec": spec.to_dict(),
        "trainerImage": spec.image or settings.trainer_image,
    }
    if params:
        config["params"] = dict(params)
    if prepared:
        config["prepared"] = dict(prepared)
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def _uris(spec: TrainingJobSpec) -> tuple[list[str], list[str]]:
    """(read-only data URIs, writable output URIs)."""
    sources = [spec.data.source.uri] + [s.uri for s in spec.data.extra_sources or []]
    if spec.evaluation.baseline is not None:
        sources.append(spec.evaluation.baseline.uri)  # read to score it on the same rows
    return sources, [spec.output.uri]


def storage_uris(spec: TrainingJobSpec) -> list[str]:
    """Every location the trainer pods mount (pvc:// ones need their claim)."""
    sources, outputs = _uris(spec)
    return sources + outputs


def _secret_env(spec: TrainingJobSpec) -> list[dict[str, Any]]:
    """The Secrets of every location the trainer reads or writes: data, baseline, output."""
    locations = [spec.data.source, *(spec.data.extra_sources or []), spec.evaluation.baseline, spec.output]
    return secret_env(loc.secret_ref.name for loc in locations if loc is not None and loc.secret_ref)


def trainer_container(
    image: str,
    settings: Settings,
    *,
    args: list[str],
    mounts: list[dict[str, Any]],
    resources: Mapping[str, Any],
    env: list[dict[str, Any]] | None = None,
    shares_node: bool = False,
) -> dict[str, Any]:
    """The trainer program's container; `env` comes before the variables every trainer pod gets.

    MLOPS_MEMORY_LIMIT (bytes, from the memory limit) lets the trainer refuse data it cannot
    train on before an OOM kill (issue #23, mlops_trainer.memory). The native thread pools
    (OpenMP, BLAS) are sized by `trainer_threads`."""
    limit = quantity_bytes(str((resources.get("limits") or {}).get("memory") or ""))
    memory = [{"name": "MLOPS_MEMORY_LIMIT", "value": str(limit)}] if limit else []
    threads = trainer_threads(resources, shares_node=shares_node)
    if threads is not None:
        memory += [{"name": name, "value": str(threads)} for name in THREAD_VARIABLES]
    return {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mlops-trainer"],
        "args": args,
        "env": [
            *(env or []),
            {"name": "MLOPS_PVC_ROOT", "value": settings.pvc_root},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            *memory,
        ],
        "resources": dict(resources),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


# The variables that size the native thread pools scikit-learn's estimators use.
THREAD_VARIABLES: Final = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def trainer_threads(resources: Mapping[str, Any], *, shares_node: bool) -> int | None:
    """Threads for a trainer pod's native pools: its CPU limit, rounded up; a pod that shares
    the node with its siblings (tuning trials, `parallelism` at a time) and has no CPU limit
    gets its CPU request instead. Without either, None: the libraries pick (every core).

    Without this, each of two trial pods on a 2-core node ran an OpenMP pool of 2 threads on
    the same cores: the first trials of `make bench-training` took 23 s and 40 s, the last one,
    alone, 9 s (issue #23)."""
    for key in ("limits", "requests") if shares_node else ("limits",):
        cpu = quantity(str((resources.get(key) or {}).get("cpu") or ""))  # "500m" -> 0.5
        if cpu and math.isfinite(cpu):
            return max(1, math.ceil(cpu))
    return None


def trainer_job(
    owner: Mapping[str, Any],
    name: str,
    lbls: Mapping[str, str],
    container: Mapping[str, Any],
    volumes: list[dict[str, Any]],
    *,
    settings: Settings,
    backoff_limit: int,
    active_deadline_seconds: int,
    options: PodOptions | None = None,
    indexed: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """A batch/v1 Job running one trainer container, owned by `owner`.

    Bad input (exit 2) and a failed verification (exit 3) fail the Job at once; other exit
    codes are retried up to `backoff_limit`; evictions are not counted.
    """
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": pod_security_context(settings),
        "automountServiceAccountToken": False,
        "containers": [dict(container)],
        "volumes": volumes,
        **(scheduling(options) if options else {}),
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": backoff_limit,
        "activeDeadlineSeconds": active_deadline_seconds,
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
        "template": {"metadata": {"labels": dict(lbls)}, "spec": pod_spec},
    }
    if indexed:
        completions, parallelism = indexed
        job_spec.update({"completionMode": "Indexed", "completions": completions, "parallelism": parallelism})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(name, owner, lbls),
        "spec": job_spec,
    }


def _job(
    tj: Mapping[str, Any],
    spec: TrainingJobSpec,
    settings: Settings,
    *,
    step: str,
    name: str,
    args: list[str],
    params: Mapping[str, Any] | None = None,
    indexed: tuple[int, int] | None = None,
    prepared: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    tj_name = tj["metadata"]["name"]
    lbls = labels("trainer", tj_name, spec.model, **{LABEL_TRAINING_JOB: tj_name, LABEL_STEP: step})
    sources, outputs = _uris(spec)
    output_claims = pvc_claims(outputs)
    claims = pvc_claims(sources + outputs)
    volumes, mounts = pvc_volumes(claims, settings, read_only=[c for c in claims if c not in output_claims])
    container = trainer_container(
        spec.image or settings.trainer_image,
        settings,
        args=args,
        mounts=mounts,
        resources=resources(spec.resources.to_dict() if spec.resources else None, DEFAULT_RESOURCES),
        env=[{"name": "MLOPS_CONFIG", "value": trainer_config(tj, spec, settings, params, prepared)}],
        shares_node=indexed is not None,
    )
    env_from = _secret_env(spec)
    if env_from:
        container["envFrom"] = env_from
    return trainer_job(
        tj,
        name,
        lbls,
        container,
        volumes,
        settings=settings,
        backoff_limit=spec.backoff_limit,
        active_deadline_seconds=spec.active_deadline_seconds,
        options=spec,
        indexed=indexed,
    )


def training_job(
    tj: Mapping[str, Any],
    spec: TrainingJobSpec,
    settings: Settings,
    params: Mapping[str, Any] | None = None,
    prepared: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Job that fits (with `params`, e.g. the best trial's), evaluates and saves; it prepares
    the data itself unless `prepared` names the prepare step's output."""
    name = train_job_name(tj["metadata"]["name"])
    return _job(tj, spec, settings, step="train", name=name, args=["train"], params=params, prepared=prepared)


def preparing_job(tj: Mapping[str, Any], spec: TrainingJobSpec, settings: Settings) -> dict[str, Any]:
    """The Job that loads, validates and splits the raw data once and writes it as Parquet next
    to the artifact (a tuned run's first step: its trials and final fit read that, issue #23)."""
    name = prepare_job_name(tj["metadata"]["name"])
    return _job(tj, spec, settings, step="prepare", name=name, args=["prepare"])


def tuning_job(
    tj: Mapping[str, Any],
    spec: TrainingJobSpec,
    settings: Settings,
    trials: int,
    prepared: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Indexed Job running `trials` cross-validated trials, `parallelism` at a time."""
    assert spec.tuning is not None  # callers only build it for tuned jobs
    name = tune_job_name(tj["metadata"]["name"])
    parallelism = min(spec.tuning.parallelism, trials)
    job = _job(
        tj,
        spec,
        settings,
        step="tune",
        name=name,
        args=["trial"],
        indexed=(trials, parallelism),
        prepared=prepared,
    )
    # Trials at once spread over the nodes (each reads the prepared data from its URI, so any
    # node will do; on a claim, only as far as its access mode lets pods of several nodes mount it).
    template = job["spec"]["template"]
    template["spec"]["topologySpreadConstraints"] = spread_over_nodes(template["metadata"]["labels"])
    return job
