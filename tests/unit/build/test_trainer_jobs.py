"""The Jobs the operator builds for TrainingJobs (train, tune) and ModelVersions (verify), and the
ModelVersion a finished run becomes: pure functions of the resource and the settings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlops_contract.api.modelversion import ModelVersionSpec
from mlops_contract.api.trainingjob import TrainingJobSpec
from mlops_operator.build import modelversion as mv_build
from mlops_operator.build import trainingjob as build
from mlops_operator.build.modelversion import model_version_manifest
from mlops_operator.settings import Settings

SETTINGS = Settings(trainer_image="trainer:1", pvc_root="/mnt/pvc", run_as_user=10001)
SHA = "ab" * 32


def tj(**spec: Any) -> tuple[dict[str, Any], TrainingJobSpec]:
    body: dict[str, Any] = {
        "model": "iris",
        "data": {"source": {"uri": "pvc://datasets/iris.csv"}, "target": "species"},
        "estimator": {"class": "RandomForestClassifier", "params": {"n_estimators": 50}},
        "output": {"uri": "pvc://models/out"},
    }
    body.update(spec)
    obj = {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "iris-rf", "namespace": "ml", "uid": "uid-1"},
        "spec": body,
    }
    return obj, TrainingJobSpec.model_validate(body)


def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def mounts(job: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """claim -> (mount path, read-only)."""
    volumes = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod(job)["volumes"]
        if "persistentVolumeClaim" in v
    }
    container = pod(job)["containers"][0]
    return {
        volumes[m["name"]]: (m["mountPath"], bool(m.get("readOnly")))
        for m in container["volumeMounts"]
        if m["name"] in volumes
    }


def test_training_job_is_owned_named_and_bounded() -> None:
    obj, spec = tj(backoffLimit=4, activeDeadlineSeconds=900)
    job = build.training_job(obj, spec, SETTINGS, params={"n_estimators": 100})
    assert job["metadata"]["name"] == "iris-rf-train"
    assert job["metadata"]["namespace"] == "ml"
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "TrainingJob",
        "iris-rf",
        "uid-1",
        True,
    )
    assert job["spec"]["backoffLimit"] == 4 and job["spec"]["activeDeadlineSeconds"] == 900
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["mlops.dev/training-job"] == "iris-rf" and labels["mlops.dev/model"] == "iris"
    assert "completionMode" not in job["spec"]
    container = pod(job)["containers"][0]
    assert container["image"] == "trainer:1"
    config = json.loads(next(e["value"] for e in container["env"] if e["name"] == "MLOPS_CONFIG"))
    assert config["name"] == "iris-rf" and config["params"] == {"n_estimators": 100}
    assert config["spec"]["estimator"]["class"] == "RandomForestClassifier"


def test_bad_input_and_failed_verification_fail_the_job_at_once() -> None:
    obj, spec = tj()
    rules = build.training_job(obj, spec, SETTINGS)["spec"]["podFailurePolicy"]["rules"]
    fail = next(r for r in rules if r["action"] == "FailJob")
    assert fail["onExitCodes"]["operator"] == "In" and sorted(fail["onExitCodes"]["values"]) == [2, 3]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules


def test_pods_are_restricted() -> None:
    obj, spec = tj()
    p = pod(build.training_job(obj, spec, SETTINGS))
    assert p["securityContext"]["runAsNonRoot"] is True and p["securityContext"]["runAsUser"] == 10001
    assert p["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert p["automountServiceAccountToken"] is False and p["restartPolicy"] == "Never"
    sc = p["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}


def test_data_claims_are_read_only_and_the_output_claim_writable() -> None:
    obj, spec = tj(data={"source": {"uri": "pvc://datasets/iris.csv"}, "target": "species",
                         "extraSources": [{"uri": "pvc://feedback/log", "format": "jsonl"}]})  # fmt: skip
    assert mounts(build.training_job(obj, spec, SETTINGS)) == {
        "datasets": ("/mnt/pvc/datasets", True),
        "feedback": ("/mnt/pvc/feedback", True),
        "models": ("/mnt/pvc/models", False),
    }


def test_the_baseline_artifact_claim_is_mounted_read_only() -> None:
    baseline = {"modelVersion": "iris-v1", "uri": "pvc://registry/iris/v1", "sha256": SHA}
    obj, spec = tj(evaluation={"baseline": baseline})
    assert mounts(build.training_job(obj, spec, SETTINGS))["registry"] == ("/mnt/pvc/registry", True)


def test_a_baseline_on_the_output_claim_keeps_it_writable() -> None:
    baseline = {"modelVersion": "iris-v1", "uri": "pvc://models/out/iris/v1", "sha256": SHA}
    obj, spec = tj(evaluation={"baseline": baseline})
    assert mounts(build.training_job(obj, spec, SETTINGS)) == {
        "datasets": ("/mnt/pvc/datasets", True),
        "models": ("/mnt/pvc/models", False),
    }


def test_credentials_come_from_the_named_secret() -> None:
    obj, spec = tj(data={"source": {"uri": "s3://bucket/iris.csv", "secretRef": {"name": "s3-creds"}},
                         "target": "species"})  # fmt: skip
    container = pod(build.training_job(obj, spec, SETTINGS))["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]


def test_every_s3_location_brings_its_secret_once() -> None:
    # data, an extra source, the baseline and the output (issue #17): each Secret once, sorted.
    obj, spec = tj(
        data={"source": {"uri": "s3://data/iris.csv", "secretRef": {"name": "data-creds"}},
              "extraSources": [{"uri": "s3://data/more.csv", "secretRef": {"name": "data-creds"}}],
              "target": "species"},
        evaluation={"baseline": {"modelVersion": "iris-v1", "uri": "s3://models/iris/v1", "sha256": SHA,
                                 "secretRef": {"name": "model-creds"}}},
        output={"uri": "s3://models/out", "secretRef": {"name": "model-creds"}},
        tuning={"space": {"n_estimators": [10, 50]}, "maxTrials": 2},
    )  # fmt: skip
    for job in (build.training_job(obj, spec, SETTINGS), build.tuning_job(obj, spec, SETTINGS, 2)):
        container = pod(job)["containers"][0]
        assert container["envFrom"] == [
            {"secretRef": {"name": "data-creds"}},
            {"secretRef": {"name": "model-creds"}},
        ]
        assert mounts(job) == {}  # nothing on a claim: no volume but /tmp


def test_no_secret_means_no_env_from() -> None:
    obj, spec = tj(output={"uri": "s3://models/out"})
    assert "envFrom" not in pod(build.training_job(obj, spec, SETTINGS))["containers"][0]


def test_an_s3_output_secret_travels_to_the_modelversion_and_its_verification() -> None:
    obj, spec = tj(output={"uri": "s3://models/out", "secretRef": {"name": "model-creds"}})
    result = {"artifactUri": "s3://models/out/iris/iris-rf", "sha256": SHA}
    body = model_version_manifest(obj, spec, result, 1, "trainer:1")
    assert body["spec"]["artifact"] == {
        "uri": "s3://models/out/iris/iris-rf", "format": "skops", "sha256": SHA, "secretRef": {"name": "model-creds"}
    }  # fmt: skip
    mv_spec = ModelVersionSpec.model_validate(body["spec"])
    mv = {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelVersion",
          "metadata": {"name": "iris-v1", "namespace": "ml", "uid": "u"}}  # fmt: skip
    job = mv_build.verification_job(mv, mv_spec, SETTINGS)
    container = pod(job)["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "model-creds"}}]
    assert container["args"][:3] == ["verify", "--artifact", "s3://models/out/iris/iris-rf"]
    assert mounts(job) == {}


def test_the_trainers_record_of_rows_read_goes_into_the_lineage() -> None:
    obj, spec = tj(output={"uri": "s3://models/out"})
    read = [{"uri": "builtin:iris", "rows": 150}, {"uri": "s3://models/predictions/ml/iris", "rows": 1700}]
    junk = [{"uri": "x", "rows": -1}, {"uri": "y", "rows": True}, {"rows": 3}, "z"]
    result = {"artifactUri": "s3://models/out/iris/iris-rf", "sha256": SHA, "dataSources": [*read, *junk]}
    body = model_version_manifest(obj, spec, result, 1, "trainer:1")
    assert body["spec"]["source"]["dataSources"] == read
    assert ModelVersionSpec.model_validate(body["spec"]).source.data_sources is not None
    del result["dataSources"]  # dropped from a termination message over 4 KiB: no record, no field
    assert "dataSources" not in model_version_manifest(obj, spec, result, 1, "trainer:1")["spec"]["source"]


@pytest.mark.parametrize(("trials", "parallelism", "expected"), [(6, 3, 3), (2, 4, 2)])
def test_tuning_is_an_indexed_job(trials: int, parallelism: int, expected: int) -> None:
    space = {"n_estimators": [10, 50, 100], "max_depth": [3, None]}
    obj, spec = tj(tuning={"space": space, "maxTrials": 6, "parallelism": parallelism})
    job = build.tuning_job(obj, spec, SETTINGS, trials)
    assert job["metadata"]["name"] == "iris-rf-tune"
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (trials, expected)
    assert pod(job)["containers"][0]["args"][0] == "trial"
    # Trials running at once spread over the nodes, softly: the one-node cluster still runs them.
    (spread,) = pod(job)["topologySpreadConstraints"]
    assert (
        spread["whenUnsatisfiable"] == "ScheduleAnyway" and spread["topologyKey"] == "kubernetes.io/hostname"
    )
    assert spread["labelSelector"]["matchLabels"] == job["spec"]["template"]["metadata"]["labels"]


def test_long_names_stay_valid_and_distinct() -> None:
    a, b = build.train_job_name("x" * 70), build.train_job_name("x" * 69 + "y")
    assert len(a) <= 63 and len(b) <= 63 and a != b and a.endswith("-train")


def test_verification_job_mounts_the_artifact_read_only() -> None:
    spec = ModelVersionSpec.model_validate(
        {"model": "iris", "version": 3, "artifact": {"uri": "pvc://models/iris/run", "sha256": SHA}}
    )
    mv = {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "iris-v3", "namespace": "ml", "uid": "u"},
    }
    job = mv_build.verification_job(mv, spec, SETTINGS)
    assert job["metadata"]["name"] == "iris-v3-verify"
    assert pod(job)["containers"][0]["args"] == [
        "verify",
        "--artifact",
        "pvc://models/iris/run",
        "--sha256",
        SHA,
    ]
    assert mounts(job) == {"models": ("/mnt/pvc/models", True)}
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelVersion"


def test_the_modelversion_records_metrics_lineage_and_the_baseline() -> None:
    obj, spec = tj(evaluation={"gates": [{"metric": "accuracy", "threshold": 0.9}]})
    result = {
        "artifactUri": "pvc://models/out/iris/iris-rf",
        "sha256": SHA,
        "metrics": {"accuracy": 0.97, "f1": 0.96},
        "primaryMetric": "accuracy",
        "dataDigest": "sha256:" + "c" * 64,
        "params": {"n_estimators": 50},
        "baseline": {"modelVersion": "iris-v1", "metrics": {"accuracy": 0.81, "f1": 0.8}},
    }
    body = model_version_manifest(obj, spec, result, 2, "trainer:1")
    assert body["metadata"]["name"] == "iris-v2"
    assert "ownerReferences" not in body["metadata"]  # it outlives the TrainingJob
    mv = ModelVersionSpec.model_validate(body["spec"])
    assert mv.version == 2 and mv.artifact.sha256 == SHA
    assert mv.source is not None and mv.source.training_job == "iris-rf"
    assert mv.baseline is not None and mv.baseline.model_version == "iris-v1"
    assert mv.baseline.metrics == {"accuracy": 0.81, "f1": 0.8}
    assert body["spec"]["gates"] == [{"metric": "accuracy", "op": ">=", "threshold": 0.9}]


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"memory": "1Gi"}, str(2**30)),
        ({"memory": "512M"}, str(512 * 10**6)),
        ({"cpu": "1"}, None),
        (None, str(2 * 2**30)),  # the trainer's default resources: a 2Gi limit
    ],
    ids=["binary", "decimal", "cpu-only", "default"],
)
def test_trainer_pods_know_their_memory_limit(limits: dict[str, str] | None, expected: str | None) -> None:
    """Issue #23: the trainer compares its data's estimated peak with MLOPS_MEMORY_LIMIT."""
    obj, spec = tj(resources={"limits": limits} if limits else None, tuning={"space": {"max_depth": [2, 3]}})
    for job in (build.training_job(obj, spec, SETTINGS, None), build.tuning_job(obj, spec, SETTINGS, 2)):
        env = {e["name"]: e.get("value") for e in pod(job)["containers"][0]["env"]}
        assert env.get("MLOPS_MEMORY_LIMIT") == expected


def _mv_spec(uri: str, job: str | None = "iris-rf", secret: str | None = "model-creds") -> ModelVersionSpec:
    art: dict[str, Any] = {"uri": uri, "format": "skops", "sha256": SHA}
    if secret:
        art["secretRef"] = {"name": secret}
    return ModelVersionSpec.model_validate(
        {"model": "iris", "version": 1, "artifact": art, "source": {"trainingJob": job} if job else {}}
    )


@pytest.mark.parametrize(
    ("uri", "job", "expected"),
    [
        ("s3://models/out/iris/iris-rf", "iris-rf", True),  # where the run wrote it
        ("s3://models/out/iris/iris-rf/", "iris-rf", True),
        ("s3://models/out", "iris-rf", False),  # a prefix the run does not own
        ("s3://models/out/iris/other", "iris-rf", False),  # another run's place
        ("s3://models/out/iris/iris-rf", None, False),  # registered by hand
        ("pvc://claim/models/iris/iris-rf", "iris-rf", False),  # claims keep their files
    ],
)
def test_retention_deletes_only_artifacts_the_operators_run_wrote(
    uri: str, job: str | None, expected: bool
) -> None:
    assert mv_build.purgeable(_mv_spec(uri, job), "ml") is expected


def test_the_purge_job_has_the_artifacts_secret_no_owner_and_a_ttl() -> None:
    spec = _mv_spec("s3://models/out/iris/iris-rf")
    mv = {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelVersion",
          "metadata": {"name": "iris-v1", "namespace": "ml", "uid": "u"}}  # fmt: skip
    job = mv_build.purge_job(mv, spec, SETTINGS)
    assert job["metadata"]["name"] == "iris-v1-purge"
    assert "ownerReferences" not in job["metadata"]  # it outlives the ModelVersion it cleans up after
    assert job["spec"]["ttlSecondsAfterFinished"] == mv_build.PURGE_TTL_SECONDS
    container = pod(job)["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "model-creds"}}]
    assert container["args"] == [
        "purge", "--artifact", "s3://models/out/iris/iris-rf", "--sha256", SHA,
        "--namespace", "ml", "--training-job", "iris-rf",
    ]  # fmt: skip
    assert mounts(job) == {} and pod(job)["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    ("res", "tune", "train"),
    [
        ({"requests": {"cpu": "500m"}}, "1", None),  # trials share the node: their request
        ({"requests": {"cpu": "1500m"}, "limits": {"cpu": "3"}}, "3", "3"),  # the limit, always
        ({"requests": {"cpu": "2"}}, "2", None),
        ({"limits": {"cpu": "250m"}}, "1", "1"),  # at least one thread
        ({"requests": {"memory": "1Gi"}}, None, None),  # no CPU named: the libraries pick
    ],
    ids=["request", "limit", "two-cores", "small-limit", "no-cpu"],
)
def test_trainer_thread_pools_follow_the_pods_cpu(
    res: dict[str, Any], tune: str | None, train: str | None
) -> None:
    """Trial pods run `parallelism` at a time: each sizes OpenMP/BLAS to its CPU, not the node's."""
    obj, spec = tj(resources=res, tuning={"space": {"max_depth": [2, 3]}, "parallelism": 2})
    for job, expected in (
        (build.tuning_job(obj, spec, SETTINGS, 2), tune),
        (build.training_job(obj, spec, SETTINGS), train),
    ):
        env = {e["name"]: e.get("value") for e in pod(job)["containers"][0]["env"]}
        assert all(env.get(name) == expected for name in build.THREAD_VARIABLES), env
