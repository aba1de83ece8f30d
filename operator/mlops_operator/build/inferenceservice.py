"""Pure builders for an InferenceService's children: Deployments, Service, HPA; plus its URL.

Inputs are the InferenceService body (metadata for names and owner references), its parsed
spec, the ModelVersion body to serve and the operator Settings. No I/O, clock or randomness.

Invariants:
- Deployment selectors are `{inference-service, track}` only. A Deployment's selector is
  immutable, so it never names the version: a new version changes the pod template (labels,
  args, the sha annotation) and rolls the *same* Deployment.
- The Service selects `{inference-service}` only, so stable and canary pods share traffic in
  proportion to their ready replicas (a replica-weighted canary, no mesh needed). In shadow
  mode (spec.canary.mode shadow, issue #22) it selects the stable track only: the challenger
  (the canary Deployment, one replica) answers no user; the Service `<isvc>-shadow` selects it,
  and the stable pods (`--shadow-url`) mirror requests to that Service. The stable pods carry
  the flag whenever the mode is shadow, challenger or not, so starting or ending a shadow
  analysis never rolls them; the challenger writes no prediction log (the champion logs its
  answers under the champion's request id).
- When `spec.autoscaling` is set the stable Deployment carries no `spec.replicas`: under
  server-side apply the HPA owns that field and the operator never fights it.
- Rollouts drop no requests: maxUnavailable 0 / maxSurge 1, readiness on /v2/health/ready, a
  preStop sleep so endpoints are withdrawn before the server drains, and a drain timeout
  (`SHUTDOWN_TIMEOUT_SECONDS`) that ends before `terminationGracePeriodSeconds`.
- The server reads a local directory: a pvc:// artifact's claim is mounted read-only; an s3://
  artifact is copied into an emptyDir by an init container (`fetch_container`: the trainer
  image's `mlops-trainer fetch`, which checks the sha256) before the server starts, so the
  server image needs no S3 client (issue #17). Anything else raises `UnservableArtifact`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from mlops_contract.api.common import (
    GROUP,
    LABEL_INFERENCE_SERVICE,
    LABEL_MODEL_VERSION,
    LABEL_VERSION,
)
from mlops_contract.api.inferenceservice import InferenceServiceSpec
from mlops_contract.storage import local_path, parse_uri
from mlops_operator.build.common import (
    child_name,
    container_security_context,
    labels,
    object_meta,
    pod_security_context,
    pvc_volumes,
    quantity_bytes,
    resources,
    scheduling,
    secret_env,
)
from mlops_operator.build.common import spread_over_nodes as spread
from mlops_operator.settings import Settings

Track = Literal["stable", "canary"]

LABEL_TRACK: Final = f"{GROUP}/track"
ANNOTATION_ARTIFACT_SHA256: Final = f"{GROUP}/artifact-sha256"

COMPONENT: Final = "inference-server"
CONTAINER: Final = "server"
PORT: Final = 8080
PORT_NAME: Final = "http"
# /metrics and feedback on a port of their own (issue #19): a NetworkPolicy tells ports apart,
# not paths (build/networkpolicy.py). 8081 is gRPC's (KServe's port for it).
MONITORING_PORT: Final = 8082
MONITORING_PORT_NAME: Final = "monitoring"
# The bearer token feedback must carry, from spec.access.feedbackToken's Secret (the server's env).
FEEDBACK_TOKEN_ENV: Final = "MLOPS_FEEDBACK_TOKEN"  # noqa: S105 - a variable name, not a secret
SERVICE_PORT: Final = 80
# The V2 protocol over gRPC (issue #20): the same port in the container and on the Service.
GRPC_PORT: Final = 8081
GRPC_PORT_NAME: Final = "grpc"
READY_PATH: Final = "/v2/health/ready"
LIVE_PATH: Final = "/v2/health/live"
METRICS_PATH: Final = "/metrics"
PRE_STOP_SLEEP_SECONDS: Final = 5
# preStop sleep + server drain must end before the kubelet's SIGKILL.
SHUTDOWN_TIMEOUT_SECONDS: Final = 20
TERMINATION_GRACE_SECONDS: Final = 30
DEFAULT_RESOURCES: Final = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
# An s3:// artifact (issue #17): fetched by FETCH_CONTAINER into the emptyDir MODEL_VOLUME,
# which the server mounts read-only at MODEL_DIR. The download streams to disk and the digest
# is computed in 1 MiB chunks, so the memory it needs does not grow with the artifact.
FETCH_CONTAINER: Final = "fetch-artifact"
MODEL_VOLUME: Final = "model"
MODEL_DIR: Final = "/mnt/model"
FETCH_RESOURCES: Final = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
# An s3:// prediction log (issue #17): the server writes into the emptyDir LOG_VOLUME at LOG_DIR
# and the native sidecar SHIP_CONTAINER (`mlops-trainer ship-logs`) uploads one object per pod
# and window; it stops after the server, so the last window is shipped too.
SHIP_CONTAINER: Final = "ship-logs"
LOG_VOLUME: Final = "prediction-log"
LOG_DIR: Final = "/var/lib/mlops/prediction-log"
SHIP_RESOURCES: Final = {"requests": {"cpu": "20m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}}
# The server's row budget (--max-rows) from the container's memory limit: one row per
# ROW_BUDGET_BYTES of the limit, within [MIN_ROWS, MAX_ROWS]; 1 GiB gives the server's default
# 65,536. A row costs its decoded JSON (a Python float per value, ~40 B), the frame and the
# outputs; the server predicts in 8,192-row chunks, so a model's temporaries do not grow with
# it. 16 KiB a row leaves room for wide rows, a few concurrent requests and the model itself.
ROW_BUDGET_BYTES: Final = 16 << 10
MIN_ROWS: Final = 1024
MAX_ROWS: Final = 1_000_000


class UnservableArtifact(ValueError):
    """The ModelVersion's artifact is neither on a PersistentVolumeClaim nor in S3."""


def shadowing(spec: InferenceServiceSpec) -> bool:
    """Whether new versions go through shadow analysis (spec.canary.mode shadow)."""
    return spec.canary is not None and spec.canary.mode == "shadow"


def shadow_service_name(isvc_name: str) -> str:
    """`<isvc>-shadow`: the challenger's Service in shadow mode."""
    return child_name(isvc_name, "shadow")


def deployment_name(isvc_name: str, track: Track) -> str:
    """`<isvc>-predictor` (stable) or `<isvc>-canary`."""
    return child_name(isvc_name, "predictor" if track == "stable" else "canary")


def selector_labels(isvc_name: str, track: Track) -> dict[str, str]:
    """The immutable Deployment selector: never mentions the model version."""
    return {LABEL_INFERENCE_SERVICE: isvc_name, LABEL_TRACK: track}


def pod_selector(isvc_name: str, track: Track | None = None) -> str:
    """Label selector string for the serving pods (all tracks, or one): for status.selector and listing pods."""
    parts = [f"{LABEL_INFERENCE_SERVICE}={isvc_name}"]
    if track is not None:
        parts.append(f"{LABEL_TRACK}={track}")
    return ",".join(parts)


def url(isvc: Mapping[str, Any], cluster_domain: str = "cluster.local") -> str:
    """In-cluster URL of the model's V2 endpoint, e.g. http://iris.ml.svc.cluster.local/v2/models/iris."""
    meta = isvc["metadata"]
    return f"http://{meta['name']}.{meta['namespace']}.svc.{cluster_domain}/v2/models/{isvc['spec']['model']}"


def grpc_address(
    isvc: Mapping[str, Any], spec: InferenceServiceSpec, cluster_domain: str = "cluster.local"
) -> str | None:
    """In-cluster host:port of the gRPC endpoint, e.g. iris.ml.svc.cluster.local:8081; None without spec.grpc."""
    if not spec.grpc:
        return None
    meta = isvc["metadata"]
    return f"{meta['name']}.{meta['namespace']}.svc.{cluster_domain}:{GRPC_PORT}"


def split_replicas(total: int, canary_percent: int) -> tuple[int, int]:
    """(stable, canary) replicas for a canary taking `canary_percent` of `total`.

    total >= 2: canary = round(total * percent / 100) clamped to [1, total - 1], so both tracks
    run and the sum is `total`.
    total == 1: (1, 1) — one extra pod for the analysis; the canary gets half the traffic
    rather than none (no analysis) or all (no safety).
    total <= 0: (0, 0) — scaled to zero, nothing to analyse; the caller should wait.
    """
    if total <= 0:
        return 0, 0
    if total == 1:
        return 1, 1
    canary = min(max((total * canary_percent + 50) // 100, 1), total - 1)
    return total - canary, canary


def prediction_log_uri(
    isvc: Mapping[str, Any], spec: InferenceServiceSpec, mv: Mapping[str, Any]
) -> str | None:
    """Where the serving pods write the prediction (and labelled feedback) log, or None when off.

    spec.monitoring.predictionLog.uri, else `<artifact claim or bucket>/predictions/<namespace>/<name>`
    (pvc:// or s3://, as the artifact); None when the log is disabled.
    The same value is the retraining `feedback_uri` (see build.retraining.retraining_spec).
    """
    log = spec.monitoring.prediction_log
    if not log.enabled:
        return None
    if log.uri:
        return log.uri
    artifact = parse_uri(mv["spec"]["artifact"]["uri"])
    if artifact.scheme not in ("pvc", "s3"):
        return None
    meta = isvc["metadata"]
    return f"{artifact.scheme}://{artifact.authority}/predictions/{meta['namespace']}/{meta['name']}"


def prediction_log_secret(spec: InferenceServiceSpec, mv: Mapping[str, Any]) -> str | None:
    """The Secret of an s3:// prediction log: its own secretRef, else (the log in the artifact's
    bucket by default) the artifact's."""
    log = spec.monitoring.prediction_log
    if log.secret_ref is not None:
        return log.secret_ref.name
    if log.uri is None:
        return (mv["spec"]["artifact"].get("secretRef") or {}).get("name")
    return None


def pod_log_uri(
    isvc: Mapping[str, Any], spec: InferenceServiceSpec, mv: Mapping[str, Any], track: Track
) -> str | None:
    """The prediction log a track's pods write: none for a shadow challenger (its answers are
    logged by the champion, under the champion's ids), else `prediction_log_uri`."""
    if track == "canary" and shadowing(spec):
        return None
    return prediction_log_uri(isvc, spec, mv)


def log_shipper(
    isvc: Mapping[str, Any],
    spec: InferenceServiceSpec,
    mv: Mapping[str, Any],
    settings: Settings,
    track: Track = "stable",
) -> dict[str, Any] | None:
    """The native sidecar shipping an s3:// prediction log (`mlops-trainer ship-logs`), else None."""
    uri = pod_log_uri(isvc, spec, mv, track)
    if uri is None or parse_uri(uri).scheme != "s3":
        return None
    args = [
        "ship-logs",
        "--dir",
        LOG_DIR,
        "--to",
        uri,
        "--interval",
        str(spec.monitoring.prediction_log.window_seconds),
    ]
    secret = prediction_log_secret(spec, mv)
    container = _trainer_helper(
        SHIP_CONTAINER,
        args,
        volume=(LOG_VOLUME, LOG_DIR),
        resources=SHIP_RESOURCES,
        secret=secret,
        settings=settings,
    )
    return {**container, "restartPolicy": "Always"}  # a native sidecar: starts before, stops after the server


def _num(value: float) -> str:
    return f"{value:g}"


def server_runtime(mv: Mapping[str, Any]) -> str:
    """The server's --runtime: its arrays only when verification compared them with scikit-learn.

    "auto" runs the model from its arrays (the server compiles the same plan from the same file
    that the verify Job checked); a version the verify Job found otherwise, or one verified by
    an older operator that did not compare, runs with scikit-learn.
    """
    return "auto" if (mv.get("status") or {}).get("servingRuntime") == "arrays" else "sklearn"


def max_rows(spec: InferenceServiceSpec) -> int | None:
    """--max-rows from the memory limit (see ROW_BUDGET_BYTES); None without one (server default)."""
    limits = resources(spec.resources.to_dict() if spec.resources else None, DEFAULT_RESOURCES).get("limits")
    memory = limits.get("memory") if isinstance(limits, Mapping) else None
    limit = quantity_bytes(memory) if memory is not None else None
    if limit is None:
        return None
    return max(MIN_ROWS, min(MAX_ROWS, limit // ROW_BUDGET_BYTES))


def artifact_dir(mv: Mapping[str, Any], settings: Settings) -> str:
    """Where the server finds the artifact: its claim's mount (pvc://) or the fetched copy (s3://)."""
    uri = mv["spec"]["artifact"]["uri"]
    scheme = parse_uri(uri).scheme
    if scheme == "pvc":
        return local_path(uri, settings.pvc_root).as_posix()
    if scheme == "s3":
        return MODEL_DIR
    raise UnservableArtifact(
        f"{mv['metadata']['name']}: artifact {uri} is neither pvc:// nor s3://; it cannot be served"
    )


def fetch_container(mv: Mapping[str, Any], settings: Settings) -> dict[str, Any] | None:
    """The init container copying an s3:// artifact into MODEL_DIR (sha256 checked), else None.

    It runs the trainer image (boto3 lives there, never in the server image) with the artifact's
    Secret as its environment. Exit 2 (missing, refused, tampered) and 1 (transient) both keep
    the pod not ready while the kubelet retries with back-off; its termination message (the
    result JSON) is what the InferenceService status reports (reason ArtifactFetchFailed).
    """
    artifact = mv["spec"]["artifact"]
    if parse_uri(artifact["uri"]).scheme != "s3":
        return None
    args = ["fetch", "--artifact", artifact["uri"], "--sha256", artifact["sha256"], "--dest", MODEL_DIR]
    secret = (artifact.get("secretRef") or {}).get("name")
    return _trainer_helper(
        FETCH_CONTAINER,
        args,
        volume=(MODEL_VOLUME, MODEL_DIR),
        resources=FETCH_RESOURCES,
        secret=secret,
        settings=settings,
    )


def _trainer_helper(
    name: str,
    args: list[str],
    *,
    volume: tuple[str, str],
    resources: Mapping[str, Any],
    secret: str | None,
    settings: Settings,
) -> dict[str, Any]:
    """A container of the trainer image beside the server: `mlops-trainer <args>`, one emptyDir
    `volume` (name, path) read-write, the S3 Secret as its environment."""
    container: dict[str, Any] = {
        "name": name,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mlops-trainer"],
        "args": args,
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "resources": dict(resources),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": volume[0], "mountPath": volume[1]},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108  # the pod's own emptyDir
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    env_from = secret_env([secret])
    if env_from:
        container["envFrom"] = env_from
    return container


def server_args(
    isvc: Mapping[str, Any],
    spec: InferenceServiceSpec,
    mv: Mapping[str, Any],
    settings: Settings,
    track: Track = "stable",
) -> list[str]:
    """Command-line of `mlops-server` for this version (see mlops_server.config)."""
    artifact = mv["spec"]["artifact"]
    args = [
        "--model-name",
        spec.model,
        "--artifact",
        artifact_dir(mv, settings),
        "--sha256",
        artifact["sha256"],
        "--model-version",
        mv["metadata"]["name"],
        "--port",
        str(PORT),
        "--monitoring-port",
        str(MONITORING_PORT),
        "--max-batch-size",
        str(spec.batching.max_batch_size),
        "--max-batch-delay-ms",
        _num(spec.batching.max_delay_ms),
        "--drift-window",
        str(spec.monitoring.drift.window),
        "--shutdown-timeout",
        str(SHUTDOWN_TIMEOUT_SECONDS),
        "--runtime",
        server_runtime(mv),
    ]
    if spec.grpc:
        args += ["--grpc-port", str(GRPC_PORT)]
    rows = max_rows(spec)
    if rows is not None:
        args += ["--max-rows", str(rows)]
    if track == "stable" and spec.canary is not None and spec.canary.mode == "shadow":
        shadow = spec.canary.shadow
        meta = isvc["metadata"]
        args += [
            "--shadow-url",
            f"http://{shadow_service_name(meta['name'])}.{meta['namespace']}.svc:{SERVICE_PORT}",
            "--shadow-percent",
            str(shadow.percent if shadow else 100),
            "--shadow-timeout-ms",
            str(shadow.timeout_ms if shadow else 1000),
        ]
    log_uri = pod_log_uri(isvc, spec, mv, track)
    if log_uri is not None:
        on_s3 = parse_uri(log_uri).scheme == "s3"
        args += [
            "--prediction-log",
            LOG_DIR if on_s3 else local_path(log_uri, settings.pvc_root).as_posix(),
            "--log-sample-rate",
            _num(spec.monitoring.prediction_log.sample_rate),
        ]
    return args


def _volumes(
    isvc: Mapping[str, Any],
    spec: InferenceServiceSpec,
    mv: Mapping[str, Any],
    settings: Settings,
    track: Track,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The artifact claim read-only, the log claim read-write; one read-write mount when they
    coincide. An s3:// artifact: the emptyDir the init container fills, read-only here."""
    artifact = parse_uri(mv["spec"]["artifact"]["uri"])
    artifact_claims = {artifact.claim} if artifact.scheme == "pvc" else set()
    log = parse_uri(log_uri) if (log_uri := pod_log_uri(isvc, spec, mv, track)) else None
    log_claim = log.claim if log is not None and log.scheme == "pvc" else None
    claims = artifact_claims | ({log_claim} if log_claim else set())
    volumes, mounts = pvc_volumes(claims, settings, read_only=artifact_claims - {log_claim})
    if artifact.scheme == "s3":
        volumes.append({"name": MODEL_VOLUME, "emptyDir": {}})
        mounts.append({"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True})
    if log is not None and log.scheme == "s3":
        volumes.append({"name": LOG_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}})
        mounts.append({"name": LOG_VOLUME, "mountPath": LOG_DIR})
    return volumes, mounts


def _init_containers(
    isvc: Mapping[str, Any],
    spec: InferenceServiceSpec,
    mv: Mapping[str, Any],
    settings: Settings,
    track: Track,
) -> dict[str, Any]:
    """The artifact fetch (runs to completion first), then the log shipper (a native sidecar)."""
    init = [c for c in (fetch_container(mv, settings), log_shipper(isvc, spec, mv, settings, track)) if c]
    return {"initContainers": init} if init else {}


def _probe(path: str, *, period: int, failures: int, timeout: int = 2) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def deployment(
    isvc: Mapping[str, Any],
    spec: InferenceServiceSpec,
    mv: Mapping[str, Any],
    settings: Settings,
    *,
    track: Track,
    replicas: int,
) -> dict[str, Any]:
    """The Deployment serving `mv` on `track`.

    `replicas` is written for the canary, and for the stable track unless spec.autoscaling is
    set (then the HPA owns it and the field is omitted). Raises UnservableArtifact for an
    artifact neither pvc:// nor s3://.
    """
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, got {replicas}")
    name = isvc["metadata"]["name"]
    mv_name = mv["metadata"]["name"]
    sha = mv["spec"]["artifact"]["sha256"]
    pod_labels = labels(
        COMPONENT,
        name,
        spec.model,
        **{
            LABEL_INFERENCE_SERVICE: name,
            LABEL_TRACK: track,
            LABEL_MODEL_VERSION: mv_name,
            LABEL_VERSION: str(mv["spec"]["version"]),
        },
    )
    volumes, mounts = _volumes(isvc, spec, mv, settings, track)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or settings.server_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mlops-server"],
        "args": server_args(isvc, spec, mv, settings, track),
        "ports": _container_ports(spec),
        "startupProbe": _probe(LIVE_PATH, period=2, failures=60),
        "readinessProbe": _probe(READY_PATH, period=5, failures=2),
        "livenessProbe": _probe(LIVE_PATH, period=10, failures=3, timeout=5),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SLEEP_SECONDS)]}}},
        "resources": resources(spec.resources.to_dict() if spec.resources else None, DEFAULT_RESOURCES),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    if (token := spec.access.feedback_token) is not None:
        # The kubelet reads the Secret; the operator needs no RBAC on Secrets.
        ref = {"name": token.name, "key": token.key}
        container["env"] = [{"name": FEEDBACK_TOKEN_ENV, "valueFrom": {"secretKeyRef": ref}}]
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security_context(settings),
        # The server never talks to the API server.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [container],
        "volumes": volumes,
        **_init_containers(isvc, spec, mv, settings, track),
        **scheduling(spec),
        "topologySpreadConstraints": spread_over_nodes(name, track),
    }
    deploy_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name, track)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": 600,
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(MONITORING_PORT),
                    "prometheus.io/path": METRICS_PATH,
                    ANNOTATION_ARTIFACT_SHA256: sha,
                },
            },
            "spec": pod_spec,
        },
    }
    if track == "canary" or spec.autoscaling is None:
        deploy_spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(deployment_name(name, track), isvc, pod_labels),
        "spec": deploy_spec,
    }


def spread_over_nodes(isvc_name: str, track: Track) -> list[dict[str, Any]]:
    """A track's replicas spread over nodes (common.spread_over_nodes). Counted per ReplicaSet
    (pod-template-hash), so a rollout's new pods spread among themselves, not around the old."""
    return spread(selector_labels(isvc_name, track), match_label_keys=["pod-template-hash"])


def _container_ports(spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    ports = [
        {"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"},
        {"name": MONITORING_PORT_NAME, "containerPort": MONITORING_PORT, "protocol": "TCP"},
    ]
    if spec.grpc:
        ports.append({"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"})
    return ports


def _service_ports(spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = [
        {"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"},
        {
            "name": MONITORING_PORT_NAME,
            "port": MONITORING_PORT,
            "targetPort": MONITORING_PORT_NAME,
            "protocol": "TCP",
        },
    ]
    if spec.grpc:
        # appProtocol tells meshes and gateways to proxy it as gRPC (HTTP/2), not HTTP/1.1.
        ports.append(
            {
                "name": GRPC_PORT_NAME,
                "port": GRPC_PORT,
                "targetPort": GRPC_PORT_NAME,
                "protocol": "TCP",
                "appProtocol": "grpc",
            }
        )
    return ports


def owned_meta(isvc: Mapping[str, Any], spec: InferenceServiceSpec, name: str) -> dict[str, Any]:
    """Metadata of a child `name` of the InferenceService other than its Deployments."""
    isvc_name = isvc["metadata"]["name"]
    return object_meta(
        name, isvc, labels(COMPONENT, isvc_name, spec.model, **{LABEL_INFERENCE_SERVICE: isvc_name})
    )


def service(isvc: Mapping[str, Any], spec: InferenceServiceSpec) -> dict[str, Any]:
    """ClusterIP Service `<isvc>`: port 80 -> http, 8082 -> monitoring (feedback, /metrics) and,
    with spec.grpc, 8081 -> grpc; over both tracks' pods (the stable track's only in shadow mode)."""
    name = isvc["metadata"]["name"]
    selector = {LABEL_INFERENCE_SERVICE: name}
    if shadowing(spec):
        selector[LABEL_TRACK] = "stable"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owned_meta(isvc, spec, name),
        "spec": {"type": "ClusterIP", "selector": selector, "ports": _service_ports(spec)},
    }


def shadow_service(isvc: Mapping[str, Any], spec: InferenceServiceSpec) -> dict[str, Any] | None:
    """ClusterIP Service `<isvc>-shadow` (port 80 -> http) over the challenger's pods, which the
    stable pods mirror requests to; None unless spec.canary.mode is shadow."""
    if not shadowing(spec):
        return None
    name = isvc["metadata"]["name"]
    ports = [{"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owned_meta(isvc, spec, shadow_service_name(name)),
        "spec": {"type": "ClusterIP", "selector": selector_labels(name, "canary"), "ports": ports},
    }


def hpa(isvc: Mapping[str, Any], spec: InferenceServiceSpec) -> dict[str, Any] | None:
    """autoscaling/v2 HPA on the stable Deployment's CPU, or None without spec.autoscaling.

    CPU utilisation is relative to the container's CPU request, so spec.resources should set one
    (the default resources do).
    """
    if spec.autoscaling is None:
        return None
    name = isvc["metadata"]["name"]
    target = deployment_name(name, "stable")
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": owned_meta(isvc, spec, target),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": spec.autoscaling.min_replicas,
            "maxReplicas": spec.autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": spec.autoscaling.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }
