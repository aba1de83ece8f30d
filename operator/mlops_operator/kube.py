"""The only module that talks to the Kubernetes API.

Objects are plain dicts (as kopf gives them), JSON is parsed with orjson without building
client models, children are applied with server-side apply under one field manager, and
status is merge-patched on the status subresource. Two clients with the same calls:

- `AsyncKube`, what the operator uses: kopf's own aiohttp client, so every request goes out
  with the credentials kopf logged in with (re-authenticating on 401, retrying 429/5xx) on the
  operator's event loop, without threads and without the official `kubernetes` package, whose
  import alone costs ~57 MiB of RSS.
- `Kube`, synchronous over the official client's ApiClient (imported on first use): for tests,
  benchmarks and tools that run outside the operator.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

import orjson

from mlops_operator.api.common import GROUP, MANAGER, VERSION

log = logging.getLogger(__name__)

# plural, namespaced, by kind, for every kind the operator touches.
PLURALS: Final[dict[str, str]] = {
    "Pod": "pods",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Service": "services",
    "Event": "events",
    "Job": "jobs",
    "Deployment": "deployments",
    "ReplicaSet": "replicasets",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "TrainingJob": "trainingjobs",
    "ModelVersion": "modelversions",
    "InferenceService": "inferenceservices",
}
API_VERSIONS: Final[dict[str, str]] = {
    "Pod": "v1",
    "PersistentVolumeClaim": "v1",
    "Service": "v1",
    "Event": "v1",
    "Job": "batch/v1",
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "TrainingJob": f"{GROUP}/{VERSION}",
    "ModelVersion": f"{GROUP}/{VERSION}",
    "InferenceService": f"{GROUP}/{VERSION}",
}


JSON: Final = "application/json"
Query = Mapping[str, str] | None


class KubeError(Exception):
    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"{status} {reason}: {body[:500]}")
        self.status = status
        self.reason = reason
        self.body = body


def path(kind: str, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
    """The resource path; `namespace=None` addresses the kind across all namespaces (lists only)."""
    api_version = API_VERSIONS[kind]
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    scope = f"/namespaces/{namespace}" if namespace is not None else ""
    out = f"{prefix}{scope}/{PLURALS[kind]}"
    if name:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


def load_api_client(pool_size: int = 16) -> Any:
    """The official client's ApiClient: in-cluster config in a pod, the kubeconfig otherwise."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        # The client's default path is read at import time; read KUBECONFIG now.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg)
    cfg.connection_pool_maxsize = pool_size
    return client.ApiClient(cfg)


@dataclass
class Kube:
    """Synchronous calls. Every method returns plain dicts."""

    api: Any  # kubernetes.client.ApiClient
    field_manager: str = MANAGER

    def close(self) -> None:
        """Close the client: its thread pool (ApiClient.close) and its pooled HTTP connections,
        which ApiClient.close leaves open until the garbage collector finds them."""
        self.api.close()
        self.api.rest_client.pool_manager.clear()

    def request(
        self, method: str, url: str, body: Any = None, query: Query = None, content_type: str = JSON
    ) -> Any:
        from kubernetes.client.exceptions import ApiException

        if query:
            url = f"{url}?{urlencode(query)}"
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            resp = self.api.call_api(
                url,
                method,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
        except ApiException as e:
            raise KubeError(e.status, str(e.reason), str(e.body)) from None
        data = resp.data
        return orjson.loads(data) if data else None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.request("GET", path(kind, namespace, name))
        except KubeError as e:
            if e.status == 404:
                return None
            raise
        return obj

    def list(
        self, kind: str, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Objects of `kind` in `namespace` (None: every namespace) carrying `labels`."""
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        result = self.request("GET", path(kind, namespace), query=query)
        items: list[dict[str, Any]] = result.get("items", [])
        for item in items:  # list items lack kind/apiVersion
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", API_VERSIONS[kind])
        return items

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's field manager (force: the operator owns its children)."""
        meta = obj["metadata"]
        result: dict[str, Any] = self.request(
            "PATCH",
            path(obj["kind"], meta["namespace"], meta["name"]),
            body=dict(obj),
            query={"fieldManager": self.field_manager, "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        return result

    def create(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create; an existing object of the same name is returned instead (409 is success). -> (obj, created)."""
        meta = obj["metadata"]
        try:
            created: dict[str, Any] = self.request("POST", path(obj["kind"], meta["namespace"]), body=obj)
            return created, True
        except KubeError as e:
            if e.status != 409:
                raise
        existing = self.get(obj["kind"], meta["namespace"], meta["name"])
        if existing is None:  # deleted in between: let the caller's next pass retry
            raise KubeError(409, "Conflict", f"{obj['kind']} {meta['name']} exists and vanished")
        return existing, False

    def delete(self, kind: str, namespace: str, name: str, propagation: str = "Background") -> bool:
        try:
            self.request("DELETE", path(kind, namespace, name), body={"propagationPolicy": propagation})
        except KubeError as e:
            if e.status == 404:
                return False
            raise
        return True

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PATCH",
            path(kind, namespace, name, "status"),
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )
        return result

    def event(self, obj: Mapping[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        """Record a core/v1 Event on `obj` (best effort: a failure is logged, never raised)."""
        event = event_manifest(obj, reason, message, type_)
        try:
            self.request("POST", path("Event", event["metadata"]["namespace"]), body=event)
        except KubeError as e:
            log.warning("Failed to record Event %s on %s: %s", reason, event["metadata"]["name"], e)

    def pod_log_tail(self, namespace: str, name: str, lines: int = 20) -> str:
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self.api.call_api(
                path("Pod", namespace, name, "log") + f"?tailLines={lines}",
                "GET",
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
        except ApiException:
            return ""
        return bytes(resp.data).decode(errors="replace")


def event_manifest(obj: Mapping[str, Any], reason: str, message: str, type_: str) -> dict[str, Any]:
    """A core/v1 Event about `obj` (unique name per call)."""
    meta = obj["metadata"]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    digest = hashlib.sha256(f"{meta.get('uid')}{reason}{message}{now}".encode()).hexdigest()[:10]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{digest}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": MANAGER},
        "reportingComponent": MANAGER,
        "reportingInstance": MANAGER,
        "firstTimestamp": now[:19] + "Z",
        "lastTimestamp": now[:19] + "Z",
        "eventTime": now,
        "action": reason,
        "count": 1,
    }


# Retries of one call on 429, 5xx, 403 and connection errors (kopf's client): a reconcile pass
# fails after ~7 s and the work queue retries it with its own backoff.
BACKOFFS: Final = (1.0, 2.0, 4.0)

Requester = Callable[..., Awaitable[Any]]


class AsyncKube:
    """The operator's client: kopf's aiohttp client and credentials, on the event loop.

    Works inside a running kopf operator (its tasks carry kopf's credentials vault); `requester`
    replaces kopf's request function in tests."""

    def __init__(
        self, settings: Any, field_manager: str = MANAGER, requester: Requester | None = None
    ) -> None:
        self.settings = settings
        self.field_manager = field_manager
        if requester is None:
            from kopf._cogs.clients import api

            requester = api.request
        self._requester = requester

    async def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: Query = None,
        content_type: str = JSON,
        *,
        raw: bool = False,
    ) -> Any:
        from kopf._cogs.clients import errors

        if query:
            url = f"{url}?{urlencode(query)}"
        try:
            response = await self._requester(
                method,
                url,
                settings=self.settings,
                payload=body,
                headers={"Accept": "application/json", "Content-Type": content_type},
                backoffs=BACKOFFS,
                logger=log,
            )
        except errors.APIError as e:
            raise KubeError(e.status, type(e).__name__, str(e)) from None
        async with response:
            data = await response.read()
        if raw:
            return data
        return orjson.loads(data) if data else None

    async def get(self, kind: str, namespace: str, name: str, *, fresh: bool = True) -> dict[str, Any] | None:
        """GET the object (`fresh` is for StoreKube's signature: every read here is fresh)."""
        try:
            obj: dict[str, Any] = await self.request("GET", path(kind, namespace, name))
        except KubeError as e:
            if e.status == 404:
                return None
            raise
        return obj

    async def list(
        self, kind: str, namespace: str | None, labels: Mapping[str, str] | None = None, *, fresh: bool = True
    ) -> list[dict[str, Any]]:
        """Objects of `kind` in `namespace` (None: every namespace) carrying `labels`."""
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        result = await self.request("GET", path(kind, namespace), query=query)
        items: list[dict[str, Any]] = result.get("items", [])
        for item in items:  # list items lack kind/apiVersion
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", API_VERSIONS[kind])
        return items

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's field manager (force: the operator owns its children)."""
        meta = obj["metadata"]
        result: dict[str, Any] = await self.request(
            "PATCH",
            path(obj["kind"], meta["namespace"], meta["name"]),
            body=dict(obj),
            query={"fieldManager": self.field_manager, "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        return result

    async def create(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create; an existing object of the same name is returned instead (409 is success). -> (obj, created)."""
        meta = obj["metadata"]
        try:
            created: dict[str, Any] = await self.request(
                "POST", path(obj["kind"], meta["namespace"]), body=obj
            )
            return created, True
        except KubeError as e:
            if e.status != 409:
                raise
        existing = await self.get(obj["kind"], meta["namespace"], meta["name"])
        if existing is None:  # deleted in between: let the caller's next pass retry
            raise KubeError(409, "Conflict", f"{obj['kind']} {meta['name']} exists and vanished")
        return existing, False

    async def delete(self, kind: str, namespace: str, name: str, propagation: str = "Background") -> bool:
        try:
            await self.request("DELETE", path(kind, namespace, name), body={"propagationPolicy": propagation})
        except KubeError as e:
            if e.status == 404:
                return False
            raise
        return True

    async def patch_status(
        self, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "PATCH",
            path(kind, namespace, name, "status"),
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )
        return result

    async def event(self, obj: Mapping[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        """Record a core/v1 Event on `obj` (best effort: a failure is logged, never raised)."""
        event = event_manifest(obj, reason, message, type_)
        try:
            await self.request("POST", path("Event", event["metadata"]["namespace"]), body=event)
        except KubeError as e:
            log.warning("Failed to record Event %s on %s: %s", reason, event["metadata"]["name"], e)

    async def pod_log_tail(self, namespace: str, name: str, lines: int = 20) -> str:
        try:
            data = await self.request(
                "GET", path("Pod", namespace, name, "log"), query={"tailLines": str(lines)}, raw=True
            )
        except KubeError:
            return ""
        return bytes(data).decode(errors="replace")

    def close(self) -> None:
        """Nothing to close: kopf owns the HTTP sessions."""
