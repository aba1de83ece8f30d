"""Pieces every builder shares: names, labels, owner references, pod security, volumes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from mlops_contract.api.common import LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_MODEL, MANAGER, PodOptions
from mlops_contract.storage import parse_uri
from mlops_operator.settings import Settings

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"


def child_name(parent: str, suffix: str) -> str:
    """`<parent>-<suffix>`, deterministic and at most 63 characters (a hash keeps long names unique)."""
    name = f"{parent}-{suffix}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{parent[: 63 - len(suffix) - 10]}-{digest}-{suffix}"


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(component: str, instance: str, model: str | None = None, **extra: str) -> dict[str, str]:
    out = {
        LABEL_NAME: "mlops-operator",
        LABEL_PART_OF: "mlops-operator",
        LABEL_MANAGED_BY: MANAGER,
        LABEL_COMPONENT: component,
        LABEL_INSTANCE: instance,
    }
    if model:
        out[LABEL_MODEL] = model
    out.update(extra)
    return out


def object_meta(name: str, owner: Mapping[str, Any], lbls: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": dict(lbls),
        "ownerReferences": [owner_reference(owner)],
    }


def pod_security_context(settings: Settings) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_user,
        "fsGroup": settings.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def secret_env(secret_names: Iterable[str | None]) -> list[dict[str, Any]]:
    """envFrom entries for the Secrets of a pod's storage locations (issue #17), sorted, once each.

    The Secret's keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, ...)
    become the container's environment, where mlops_contract.storage reads them: the kubelet
    resolves the Secret, so the operator needs no access to Secrets. Without any, the SDK's
    default chain (workload identity, an instance role) applies.
    """
    return [{"secretRef": {"name": n}} for n in sorted({n for n in secret_names if n})]


def pvc_claims(uris: Iterable[str]) -> list[str]:
    """The PersistentVolumeClaims named by pvc:// URIs, sorted and unique."""
    claims = {parse_uri(u).authority for u in uris if u.startswith("pvc://")}
    return sorted(claims)


def pvc_volumes(
    claims: Iterable[str], settings: Settings, read_only: Iterable[str] = ()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts for claims at <pvc_root>/<claim>, plus a writable /tmp (the root FS is read-only)."""
    ro = set(read_only)
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108  # the pod's own emptyDir
    for i, claim in enumerate(sorted(set(claims))):
        vol = f"pvc-{i}"
        volumes.append({"name": vol, "persistentVolumeClaim": {"claimName": claim, "readOnly": claim in ro}})
        mounts.append({"name": vol, "mountPath": f"{settings.pvc_root}/{claim}", "readOnly": claim in ro})
    return volumes, mounts


def scheduling(options: PodOptions) -> dict[str, Any]:
    """The pod-spec fields a user's PodOptions set: serviceAccountName, nodeSelector, tolerations."""
    out: dict[str, Any] = {}
    if options.service_account_name:
        out["serviceAccountName"] = options.service_account_name
    if options.node_selector:
        out["nodeSelector"] = dict(options.node_selector)
    if options.tolerations:
        out["tolerations"] = [dict(t) for t in options.tolerations]
    return out


def spread_over_nodes(
    match_labels: Mapping[str, str], match_label_keys: list[str] | None = None
) -> list[dict[str, Any]]:
    """Pods matching `match_labels` spread over nodes as evenly as the scheduler can: a soft rule
    (maxSkew 1, ScheduleAnyway), so on one node, or with the others full, they all still schedule."""
    constraint: dict[str, Any] = {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": dict(match_labels)},
    }
    if match_label_keys:
        constraint["matchLabelKeys"] = list(match_label_keys)
    return [constraint]


def resources(spec_resources: Mapping[str, Any] | None, default: Mapping[str, Any]) -> dict[str, Any]:
    return dict(spec_resources) if spec_resources else dict(default)


_BINARY_SUFFIXES: Final = {
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "Ei": 1 << 60,
}
_DECIMAL_SUFFIXES: Final = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def quantity_bytes(text: str) -> int | None:
    """A Kubernetes memory quantity ("1Gi", "512M", "1e9", "2048") in bytes; None if unreadable."""
    value = quantity(text)
    return None if value is None else int(value)


def quantity(text: str) -> float | None:
    """A Kubernetes quantity's value ("500m" -> 0.5, "2" -> 2.0, "1Ki" -> 1024.0); None if
    unreadable or negative."""
    text = str(text).strip()
    number, multiplier = text, 1.0
    suffixes = {**_BINARY_SUFFIXES, **_DECIMAL_SUFFIXES, "m": 0.001}
    for suffix in sorted(suffixes, key=len, reverse=True):  # "Mi" before "M"
        if text.endswith(suffix):
            number, multiplier = text[: -len(suffix)], float(suffixes[suffix])
            break
    try:
        value = float(number) * multiplier
    except ValueError:
        return None
    return value if value >= 0 else None
