"""Operator configuration, read once at start-up from the environment into a frozen object.

Every knob has a default that works on the local cluster; the Deployment in manifests/
sets the images. Builders receive a Settings; nothing reads the environment elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

FIELD_MANAGER: Final = "mlops-operator"
DEFAULT_TRAINER_IMAGE: Final = "mlops-operator/trainer:dev"
DEFAULT_SERVER_IMAGE: Final = "mlops-operator/server:dev"


@dataclass(frozen=True)
class Settings:
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    server_image: str = DEFAULT_SERVER_IMAGE
    image_pull_policy: str = "IfNotPresent"
    # Where the programs see pvc://<claim>/... : /mnt/pvc/<claim>/...
    pvc_root: str = "/mnt/pvc"
    # Seconds between level-triggered re-checks of an object when nothing kicked it (passes
    # read the store, so a resync costs API calls only when it finds work).
    resync_seconds: float = 300.0
    # ModelVersions kept per model (never deleting a served or pinned one).
    retention_keep: int = 20
    # Namespaces to watch; empty = all.
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    field_manager: str = FIELD_MANAGER
    # Non-root identity of every pod the operator creates.
    run_as_user: int = 10001
    # Reconcile passes running at once (each waits mostly on API calls).
    workers: int = 8
    # Port of the operator's own Prometheus /metrics; 0 = not served (the default in tests).
    metrics_port: int = 0
    # Tenant policy (issue #19), the same settings the ValidatingAdmissionPolicy in
    # manifests/components/admission-policy enforces at admission; the operator enforces them
    # itself for clusters without it. An image a spec names must start with one of these
    # prefixes (empty: any image); the operator's own images are always allowed.
    allowed_image_prefixes: tuple[str, ...] = field(default_factory=tuple)
    # Whether a spec may name the ServiceAccount its pods run as.
    allow_service_account: bool = True
    # Who may read a serving pod's /metrics through its NetworkPolicy (issue #19): the pods of
    # these namespaces (Prometheus), and the operator's own pods in `operator_namespace`.
    monitoring_namespaces: tuple[str, ...] = ("monitoring",)
    operator_namespace: str = "mlops-system"
    # spec.monitoring.prometheusUrl (issue #21): a bearer token file and a CA bundle (e.g. from
    # a Secret mounted into the operator's pod), and the URL prefixes the token may be sent to.
    prometheus_token_file: str = ""
    prometheus_ca_file: str = ""
    prometheus_credentials_for: tuple[str, ...] = field(default_factory=tuple)
    # The shortest rate window of a PromQL query (at least two scrapes of Prometheus).
    prometheus_min_window_seconds: int = 60

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        namespaces = _list(e.get("MLOPS_NAMESPACES", ""))
        return cls(
            trainer_image=e.get("MLOPS_TRAINER_IMAGE", DEFAULT_TRAINER_IMAGE),
            server_image=e.get("MLOPS_SERVER_IMAGE", DEFAULT_SERVER_IMAGE),
            image_pull_policy=e.get("MLOPS_IMAGE_PULL_POLICY", "IfNotPresent"),
            pvc_root=e.get("MLOPS_PVC_ROOT", "/mnt/pvc"),
            resync_seconds=float(e.get("MLOPS_RESYNC_SECONDS", "300")),
            retention_keep=int(e.get("MLOPS_RETENTION_KEEP", "20")),
            namespaces=namespaces,
            workers=int(e.get("MLOPS_WORKERS", "8")),
            metrics_port=int(e.get("MLOPS_METRICS_PORT", "0")),
            allowed_image_prefixes=_list(e.get("MLOPS_ALLOWED_IMAGE_PREFIXES", "")),
            allow_service_account=_flag(e.get("MLOPS_ALLOW_SERVICE_ACCOUNT", "true")),
            monitoring_namespaces=_list(e.get("MLOPS_MONITORING_NAMESPACES", "monitoring")),
            operator_namespace=e.get("MLOPS_OPERATOR_NAMESPACE", "mlops-system"),
            prometheus_token_file=e.get("MLOPS_PROMETHEUS_TOKEN_FILE", ""),
            prometheus_ca_file=e.get("MLOPS_PROMETHEUS_CA_FILE", ""),
            prometheus_credentials_for=_list(e.get("MLOPS_PROMETHEUS_CREDENTIALS_FOR", "")),
            prometheus_min_window_seconds=int(e.get("MLOPS_PROMETHEUS_MIN_WINDOW_SECONDS", "60")),
        )


def _list(value: str) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped ("a, b," -> ("a", "b"))."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _flag(value: str) -> bool:
    """true/false (any case); anything else is refused rather than guessed."""
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"expected true or false, got {value!r}")
    return lowered == "true"
