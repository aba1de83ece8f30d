"""Builders of an InferenceService's children: Deployments, Service, HPA, replica split, URL."""

from __future__ import annotations

from typing import Any

import pytest

from mlops_contract.api.inferenceservice import InferenceServiceSpec
from mlops_operator.build import inferenceservice as b
from mlops_operator.settings import Settings

SETTINGS = Settings(server_image="srv:1", pvc_root="/mnt/pvc", run_as_user=10001)
SHA3 = "a" * 64
SHA4 = "b" * 64


def isvc(name: str = "iris", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": {"model": "iris", "version": 3, **spec},
    }


def parsed(body: dict[str, Any]) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(body["spec"])


def mv(
    name: str = "iris-3",
    version: int = 3,
    uri: str = "pvc://artifacts/models/iris/tj-1",
    sha: str = SHA3,
    runtime: str | None = "arrays",
) -> dict[str, Any]:
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"model": "iris", "version": version, "artifact": {"uri": uri, "sha256": sha}},
        "status": {"phase": "Verified", **({"servingRuntime": runtime} if runtime else {})},
    }


def deploy(
    body: dict[str, Any] | None = None,
    version: dict[str, Any] | None = None,
    *,
    track: b.Track = "stable",
    replicas: int = 2,
) -> dict[str, Any]:
    body = body or isvc()
    return b.deployment(body, parsed(body), version or mv(), SETTINGS, track=track, replicas=replicas)


def pod_spec(d: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = d["spec"]["template"]["spec"]
    return spec


def container(d: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = pod_spec(d)["containers"][0]
    return c


# --- names, labels, selectors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("track", "name"),
    [("stable", "iris-predictor"), ("canary", "iris-canary")],
    ids=["stable-is-predictor", "canary-is-canary"],
)
def test_deployment_name_per_track(track: b.Track, name: str) -> None:
    d = deploy(track=track)
    assert d["metadata"]["name"] == name
    assert d["metadata"]["namespace"] == "ml"
    assert d["apiVersion"] == "apps/v1"
    assert d["kind"] == "Deployment"


def test_long_names_stay_dns_labels() -> None:
    d = deploy(isvc(name="x" * 45), track="canary")
    assert len(d["metadata"]["name"]) <= 63


def test_owner_reference_is_the_inference_service() -> None:
    (ref,) = deploy()["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "InferenceService",
        "name": "iris",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


@pytest.mark.parametrize("track", ["stable", "canary"])
def test_selector_is_inference_service_and_track_only(track: b.Track) -> None:
    d = deploy(track=track)
    selector = d["spec"]["selector"]["matchLabels"]
    assert selector == {"mlops.dev/inference-service": "iris", "mlops.dev/track": track}
    pod_labels = d["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()


@pytest.mark.parametrize("track", ["stable", "canary"])
def test_selector_is_stable_across_versions_while_the_template_rolls(track: b.Track) -> None:
    v3 = deploy(version=mv("iris-3", 3, sha=SHA3), track=track)
    v4 = deploy(version=mv("iris-4", 4, "pvc://artifacts/models/iris/tj-2", SHA4), track=track)
    assert v3["spec"]["selector"] == v4["spec"]["selector"]
    assert v3["metadata"]["name"] == v4["metadata"]["name"]
    assert v3["spec"]["template"] != v4["spec"]["template"]
    annotations = v4["spec"]["template"]["metadata"]["annotations"]
    assert annotations["mlops.dev/artifact-sha256"] == SHA4


def test_pod_labels() -> None:
    labels = deploy(track="canary")["spec"]["template"]["metadata"]["labels"]
    assert labels["mlops.dev/inference-service"] == "iris"
    assert labels["mlops.dev/track"] == "canary"
    assert labels["mlops.dev/model-version"] == "iris-3"
    assert labels["mlops.dev/model"] == "iris"
    assert labels["mlops.dev/version"] == "3"
    assert labels["app.kubernetes.io/managed-by"] == "mlops-operator"


def test_prometheus_scrape_annotations() -> None:
    annotations = deploy()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8082"  # the monitoring port (issue #19)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize(
    ("track", "selector"),
    [
        (None, "mlops.dev/inference-service=iris"),
        ("stable", "mlops.dev/inference-service=iris,mlops.dev/track=stable"),
        ("canary", "mlops.dev/inference-service=iris,mlops.dev/track=canary"),
    ],
    ids=["all-tracks", "stable", "canary"],
)
def test_pod_selector(track: b.Track | None, selector: str) -> None:
    assert b.pod_selector("iris", track) == selector


# --- the server container ---------------------------------------------------------------------

DEFAULT_LOG = "/mnt/pvc/artifacts/predictions/ml/iris"


def expected_args(log: str | None = DEFAULT_LOG, rate: str = "1", **flags: str) -> list[str]:
    """The server's command line with the defaults, `flags` (max_batch_size=...) replaced in place."""
    values = {
        "--model-name": "iris",
        "--artifact": "/mnt/pvc/artifacts/models/iris/tj-1",
        "--sha256": SHA3,
        "--model-version": "iris-3",
        "--port": "8080",
        "--monitoring-port": "8082",
        "--max-batch-size": "64",
        "--max-batch-delay-ms": "0",
        "--drift-window": "1000",
        "--shutdown-timeout": "20",
        "--runtime": "auto",
        "--grpc-port": "8081",
        "--max-rows": "65536",
    }
    values.update({"--" + k.replace("_", "-"): v for k, v in flags.items()})
    values = {k: v for k, v in values.items() if v}  # a flag given as "" is left out
    if log is not None:
        values.update({"--prediction-log": log, "--log-sample-rate": rate})
    return [item for pair in values.items() for item in pair]


ARG_CASES = [
    ("defaults-log-next-to-artifacts", {}, mv(), expected_args()),
    (
        "batching-and-window",
        {"batching": {"maxBatchSize": 8, "maxDelayMs": 2.5}, "monitoring": {"drift": {"window": 200}}},
        mv(),
        expected_args(max_batch_size="8", max_batch_delay_ms="2.5", drift_window="200"),
    ),
    ("log-disabled", {"monitoring": {"predictionLog": {"enabled": False}}}, mv(), expected_args(log=None)),
    (
        "log-uri-and-sample-rate",
        {"monitoring": {"predictionLog": {"uri": "pvc://logs/iris", "sampleRate": 0.25}}},
        mv(),
        expected_args(log="/mnt/pvc/logs/iris", rate="0.25"),
    ),
    (
        "other-version",
        {},
        mv("iris-4", 4, "pvc://artifacts/models/iris/tj-2", SHA4),
        expected_args(
            log=DEFAULT_LOG,
            artifact="/mnt/pvc/artifacts/models/iris/tj-2",
            sha256=SHA4,
            model_version="iris-4",
        ),
    ),
    # Arrays only when verification compared them with scikit-learn (status.servingRuntime).
    ("verified-for-sklearn", {}, mv(runtime="sklearn"), expected_args(runtime="sklearn")),
    ("verified-before-the-runtime-was-recorded", {}, mv(runtime=None), expected_args(runtime="sklearn")),
    ("grpc-off", {"grpc": False}, mv(), expected_args(grpc_port="")),
]


@pytest.mark.parametrize(
    ("memory", "rows"),
    [
        ("1Gi", 65536),  # the default limit: the server's own default
        ("4Gi", 262144),
        ("2G", 122070),
        ("64Mi", 4096),
        ("1Mi", 1024),  # floor
        ("1Ti", 1_000_000),  # ceiling
        ("3221225472", 196608),
        ("1.5Gi", 98304),
    ],
)
def test_max_rows_follows_the_memory_limit(memory: str, rows: int) -> None:
    c = container(deploy(isvc(resources={"limits": {"memory": memory}}), mv()))
    assert c["args"][c["args"].index("--max-rows") + 1] == str(rows)


def test_no_memory_limit_leaves_the_server_default() -> None:
    c = container(deploy(isvc(resources={"requests": {"cpu": "1"}}), mv()))
    assert "--max-rows" not in c["args"]


def test_quantity_bytes() -> None:
    assert b.quantity_bytes("1Ki") == 1024
    assert b.quantity_bytes("1k") == 1000
    assert b.quantity_bytes("1e3") == 1000
    assert b.quantity_bytes("1500m") == 1
    assert b.quantity_bytes("lots") is None


@pytest.mark.parametrize(("name", "spec", "version", "args"), ARG_CASES, ids=[c[0] for c in ARG_CASES])
def test_server_args(name: str, spec: dict[str, Any], version: dict[str, Any], args: list[str]) -> None:
    c = container(deploy(isvc(**spec), version))
    assert c["command"] == ["mlops-server"]
    assert c["args"] == args


@pytest.mark.parametrize(
    ("spec", "image"),
    [({}, "srv:1"), ({"image": "my/server:2"}, "my/server:2")],
    ids=["settings-image", "spec-image"],
)
def test_image(spec: dict[str, Any], image: str) -> None:
    assert container(deploy(isvc(**spec)))["image"] == image


# --- an s3:// artifact: an init container fetches it into an emptyDir (issue #17) -----------


def s3_version(secret: str | None = "s3-creds") -> dict[str, Any]:
    version = mv(uri="s3://bucket/models/iris/tj-1")
    if secret:
        version["spec"]["artifact"]["secretRef"] = {"name": secret}
    return version


def test_s3_artifact_is_fetched_by_an_init_container() -> None:
    spec = pod_spec(deploy(version=s3_version()))
    init = spec["initContainers"][0]  # first: it runs to completion before anything else starts
    assert init["name"] == b.FETCH_CONTAINER
    assert "restartPolicy" not in init
    assert init["image"] == SETTINGS.trainer_image  # boto3 lives there, never in the server image
    assert init["command"] == ["mlops-trainer"]
    assert init["args"] == [
        "fetch", "--artifact", "s3://bucket/models/iris/tj-1", "--sha256", SHA3, "--dest", b.MODEL_DIR
    ]  # fmt: skip
    assert init["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": b.MODEL_VOLUME, "mountPath": b.MODEL_DIR} in init["volumeMounts"]
    assert init["resources"]["limits"]["memory"]


def test_s3_artifact_server_reads_the_fetched_copy_read_only() -> None:
    d = deploy(version=s3_version())
    c = container(d)
    assert c["args"][c["args"].index("--artifact") + 1] == b.MODEL_DIR
    assert c["args"][c["args"].index("--sha256") + 1] == SHA3  # the server checks it again
    assert {"name": b.MODEL_VOLUME, "mountPath": b.MODEL_DIR, "readOnly": True} in c["volumeMounts"]
    assert "envFrom" not in c  # the server never sees the credentials
    volumes = {v["name"]: v for v in pod_spec(d)["volumes"]}
    assert volumes[b.MODEL_VOLUME] == {"name": b.MODEL_VOLUME, "emptyDir": {}}
    assert not [v for v in volumes.values() if "persistentVolumeClaim" in v]  # no claim at all


def test_s3_artifact_without_secret_uses_the_default_chain() -> None:
    for init in pod_spec(deploy(version=s3_version(secret=None)))["initContainers"]:
        assert "envFrom" not in init


def test_s3_artifact_with_a_log_claim_mounts_only_the_log_claim() -> None:
    body = isvc(monitoring={"predictionLog": {"uri": "pvc://logs/iris"}})
    d = deploy(body, s3_version())
    claims = [v["persistentVolumeClaim"] for v in pod_spec(d)["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"claimName": "logs", "readOnly": False}]


def test_pvc_artifact_has_no_init_container() -> None:
    assert "initContainers" not in pod_spec(deploy())


def test_s3_prediction_log_is_shipped_by_a_native_sidecar() -> None:
    # By default the log goes where the artifact is: its bucket, with its Secret.
    d = deploy(isvc(monitoring={"predictionLog": {"windowSeconds": 30}}), s3_version())
    c = container(d)
    assert c["args"][c["args"].index("--prediction-log") + 1] == b.LOG_DIR
    assert {"name": b.LOG_VOLUME, "mountPath": b.LOG_DIR} in c["volumeMounts"]
    fetch, ship = pod_spec(d)["initContainers"]
    assert (fetch["name"], ship["name"]) == (b.FETCH_CONTAINER, b.SHIP_CONTAINER)
    assert ship["restartPolicy"] == "Always"  # starts before the server, stops after it
    assert ship["image"] == SETTINGS.trainer_image and ship["command"] == ["mlops-trainer"]
    assert ship["args"] == [
        "ship-logs", "--dir", b.LOG_DIR, "--to", "s3://bucket/predictions/ml/iris", "--interval", "30"
    ]  # fmt: skip
    assert ship["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert {"name": b.LOG_VOLUME, "mountPath": b.LOG_DIR} in ship["volumeMounts"]
    volumes = {v["name"]: v for v in pod_spec(d)["volumes"]}
    assert volumes[b.LOG_VOLUME]["emptyDir"]["sizeLimit"]


def test_an_explicit_s3_log_takes_its_own_secret_and_a_pvc_artifact_keeps_its_claim() -> None:
    log = {"uri": "s3://logs/iris", "secretRef": {"name": "log-creds"}}
    d = deploy(isvc(monitoring={"predictionLog": log}))
    (ship,) = pod_spec(d)["initContainers"]
    assert ship["envFrom"] == [{"secretRef": {"name": "log-creds"}}]
    assert ship["args"][ship["args"].index("--to") + 1] == "s3://logs/iris"
    claims = [v["persistentVolumeClaim"] for v in pod_spec(d)["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"claimName": "artifacts", "readOnly": True}]  # the artifact only, read-only


def test_an_explicit_s3_log_without_secret_uses_the_default_chain() -> None:
    d = deploy(isvc(monitoring={"predictionLog": {"uri": "s3://logs/iris"}}), s3_version())
    assert all("envFrom" not in c for c in pod_spec(d)["initContainers"][1:])


def test_negative_replicas_are_refused() -> None:
    with pytest.raises(ValueError, match="replicas"):
        deploy(replicas=-1)


VOLUME_CASES = [
    (
        "same-claim-mounted-once-read-write",
        {},
        [("artifacts", False)],
    ),
    (
        "log-claim-rw-artifact-claim-ro",
        {"monitoring": {"predictionLog": {"uri": "pvc://logs/iris"}}},
        [("artifacts", True), ("logs", False)],
    ),
    (
        "log-disabled-artifact-read-only",
        {"monitoring": {"predictionLog": {"enabled": False}}},
        [("artifacts", True)],
    ),
]


@pytest.mark.parametrize(("name", "spec", "claims"), VOLUME_CASES, ids=[c[0] for c in VOLUME_CASES])
def test_volumes(name: str, spec: dict[str, Any], claims: list[tuple[str, bool]]) -> None:
    d = deploy(isvc(**spec))
    volumes = {v["name"]: v for v in pod_spec(d)["volumes"]}
    mounts = {m["name"]: m for m in container(d)["volumeMounts"]}
    pvcs = sorted(
        (v["persistentVolumeClaim"]["claimName"], v["persistentVolumeClaim"]["readOnly"])
        for v in volumes.values()
        if "persistentVolumeClaim" in v
    )
    assert pvcs == claims
    for vol_name, vol in volumes.items():
        if "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"]["claimName"]
            assert mounts[vol_name]["mountPath"] == f"/mnt/pvc/{claim}"
            assert mounts[vol_name]["readOnly"] == vol["persistentVolumeClaim"]["readOnly"]
    # The root filesystem is read-only; /tmp is writable.
    assert mounts["tmp"]["mountPath"] == "/tmp"


def test_security_contexts_are_restricted() -> None:
    d = deploy()
    pod = pod_spec(d)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(d)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod_spec(d)["automountServiceAccountToken"] is False


def test_port_and_probes() -> None:
    c = container(deploy())
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "monitoring", "containerPort": 8082, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["startupProbe"]["httpGet"]["port"] == "http"
    # The startup probe must allow a slow model load before liveness can kill the pod.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_rollouts_drop_no_requests() -> None:
    d = deploy()
    assert d["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    c = container(d)
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    grace = pod_spec(d)["terminationGracePeriodSeconds"]
    assert grace == 30
    drain = int(c["args"][c["args"].index("--shutdown-timeout") + 1])
    assert 5 + drain < grace


REPLICA_CASES = [
    ("stable-fixed", {}, "stable", 3, 3),
    ("canary-fixed", {}, "canary", 1, 1),
    ("stable-autoscaled-omits-replicas", {"autoscaling": {"maxReplicas": 5}}, "stable", 3, None),
    ("canary-autoscaled-keeps-replicas", {"autoscaling": {"maxReplicas": 5}}, "canary", 1, 1),
    ("scaled-to-zero", {}, "stable", 0, 0),
]


@pytest.mark.parametrize(
    ("name", "spec", "track", "replicas", "expected"), REPLICA_CASES, ids=[c[0] for c in REPLICA_CASES]
)
def test_replicas(
    name: str, spec: dict[str, Any], track: b.Track, replicas: int, expected: int | None
) -> None:
    d = deploy(isvc(**spec), track=track, replicas=replicas)
    assert d["spec"].get("replicas") == expected
    assert ("replicas" in d["spec"]) == (expected is not None)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, b.DEFAULT_RESOURCES),
        (
            {"resources": {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}}},
            {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}},
        ),
    ],
    ids=["default", "from-spec"],
)
def test_resources(spec: dict[str, Any], expected: dict[str, Any]) -> None:
    assert container(deploy(isvc(**spec)))["resources"] == expected


def test_scheduling_options_pass_through() -> None:
    d = deploy(
        isvc(
            serviceAccountName="serving",
            nodeSelector={"pool": "cpu"},
            tolerations=[{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        )
    )
    pod = pod_spec(d)
    assert pod["serviceAccountName"] == "serving"
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]


def test_scheduling_options_absent_by_default() -> None:
    pod = pod_spec(deploy())
    assert not {"serviceAccountName", "nodeSelector", "tolerations"} & pod.keys()


@pytest.mark.parametrize("track", ["stable", "canary"])
def test_replicas_spread_over_nodes_softly_per_track(track: b.Track) -> None:
    d = deploy(track=track)
    (spread,) = pod_spec(d)["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # one node still takes every replica
    assert spread["maxSkew"] == 1
    # Exactly this track's pods (the Deployment's own selector), per ReplicaSet.
    assert spread["labelSelector"] == {"matchLabels": d["spec"]["selector"]["matchLabels"]}
    assert spread["matchLabelKeys"] == ["pod-template-hash"]


def test_deployment_is_deterministic() -> None:
    assert deploy() == deploy()


# --- Service, HPA, URL ------------------------------------------------------------------------


def test_service_selects_both_tracks() -> None:
    body = isvc()
    s = b.service(body, parsed(body))
    assert s["metadata"]["name"] == "iris"
    assert s["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert s["spec"]["type"] == "ClusterIP"
    assert s["spec"]["selector"] == {"mlops.dev/inference-service": "iris"}
    assert s["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "monitoring", "port": 8082, "targetPort": "monitoring", "protocol": "TCP"},
        {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
    ]
    for track in ("stable", "canary"):
        pod_labels = deploy(track=track)["spec"]["template"]["metadata"]["labels"]
        assert s["spec"]["selector"].items() <= pod_labels.items()


def test_grpc_off_leaves_http_only() -> None:
    """spec.grpc: false -> no gRPC flag, container port, Service port or address (issue #20)."""
    body = isvc(grpc=False)
    spec = parsed(body)
    c = container(deploy(body))
    assert [p["name"] for p in c["ports"]] == ["http", "monitoring"]
    assert "--grpc-port" not in c["args"]
    assert [p["name"] for p in b.service(body, spec)["spec"]["ports"]] == ["http", "monitoring"]
    assert b.grpc_address(body, spec) is None


def test_grpc_address() -> None:
    body = isvc()
    assert b.grpc_address(body, parsed(body)) == "iris.ml.svc.cluster.local:8081"
    assert b.grpc_address(body, parsed(body), "corp.example") == "iris.ml.svc.corp.example:8081"


def test_hpa_absent_without_autoscaling() -> None:
    body = isvc()
    assert b.hpa(body, parsed(body)) is None


def test_hpa_targets_the_stable_deployment() -> None:
    body = isvc(autoscaling={"minReplicas": 2, "maxReplicas": 6, "targetCpuUtilization": 60})
    h = b.hpa(body, parsed(body))
    assert h is not None
    assert h["apiVersion"] == "autoscaling/v2"
    assert h["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "iris-predictor",
    }
    assert h["spec"]["minReplicas"] == 2
    assert h["spec"]["maxReplicas"] == 6
    (metric,) = h["spec"]["metrics"]
    assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}


def test_url() -> None:
    assert b.url(isvc()) == "http://iris.ml.svc.cluster.local/v2/models/iris"
    assert b.url(isvc(), cluster_domain="corp.local") == "http://iris.ml.svc.corp.local/v2/models/iris"


# --- replica split --------------------------------------------------------------------------

SPLIT_CASES = [
    ("zero-total-no-pods", 0, 10, (0, 0)),
    ("one-replica-adds-a-canary-pod", 1, 10, (1, 1)),
    ("two-replicas-one-each", 2, 10, (1, 1)),
    ("ten-percent-of-ten", 10, 10, (9, 1)),
    ("half", 10, 50, (5, 5)),
    ("rounds-half-up", 5, 30, (3, 2)),
    ("canary-at-least-one", 100, 1, (99, 1)),
    ("stable-at-least-one", 3, 99, (1, 2)),
    ("quarter-of-four", 4, 25, (3, 1)),
]


@pytest.mark.parametrize(("name", "total", "percent", "split"), SPLIT_CASES, ids=[c[0] for c in SPLIT_CASES])
def test_split_replicas(name: str, total: int, percent: int, split: tuple[int, int]) -> None:
    assert b.split_replicas(total, percent) == split


def test_split_replicas_invariants() -> None:
    for total in range(2, 50):
        for percent in range(1, 100):
            stable, canary = b.split_replicas(total, percent)
            assert stable >= 1, (total, percent)
            assert canary >= 1, (total, percent)
            assert stable + canary == total, (total, percent)


# --- prediction log location ------------------------------------------------------------------

LOG_CASES = [
    ("default-under-artifact-claim", {}, mv(), "pvc://artifacts/predictions/ml/iris"),
    ("explicit", {"monitoring": {"predictionLog": {"uri": "pvc://logs/x"}}}, mv(), "pvc://logs/x"),
    ("disabled", {"monitoring": {"predictionLog": {"enabled": False}}}, mv(), None),
    ("default-under-artifact-bucket", {}, mv(uri="s3://bucket/m"), "s3://bucket/predictions/ml/iris"),
    ("explicit-s3", {"monitoring": {"predictionLog": {"uri": "s3://logs/x"}}}, mv(), "s3://logs/x"),
]


@pytest.mark.parametrize(("name", "spec", "version", "uri"), LOG_CASES, ids=[c[0] for c in LOG_CASES])
def test_prediction_log_uri(
    name: str, spec: dict[str, Any], version: dict[str, Any], uri: str | None
) -> None:
    body = isvc(**spec)
    assert b.prediction_log_uri(body, parsed(body), version) == uri
