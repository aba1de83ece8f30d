"""The only module that talks to the Kubernetes API.

Objects are plain dicts (as kopf gives them), JSON is parsed with orjson without building
client models, children are applied with server-side apply under one field manager, and
status is merge-patched on the status subresource.

Every call is written once, without I/O, in two parts:

- a request builder (`get_request`, `apply_request`, …): a pure function that returns the
  `Request` to send, i.e. method, path, query, body and content type;
- a call (`get_call`, `create_call`, …): a generator that yields the requests of one
  operation and receives each answer (or has the `KubeError` raised at its `yield`); it holds
  the rules for reading answers: a 404 is None or False, a 409 on create returns the existing
  object, list items get their kind and apiVersion, Events and logs are best effort.

Two transports run the calls; each only sends a `Request` and maps its client's errors to
`KubeError`:

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
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar
from urllib.parse import urlencode

import orjson

from mlops_contract.api.common import GROUP, MANAGER, VERSION

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
    "NetworkPolicy": "networkpolicies",
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
    "NetworkPolicy": "networking.k8s.io/v1",
    "TrainingJob": f"{GROUP}/{VERSION}",
    "ModelVersion": f"{GROUP}/{VERSION}",
    "InferenceService": f"{GROUP}/{VERSION}",
}


JSON: Final = "application/json"
APPLY_PATCH: Final = "application/apply-patch+yaml"
MERGE_PATCH: Final = "application/merge-patch+json"
Query = Mapping[str, str] | None
T = TypeVar("T")


class KubeError(Exception):
    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"{status} {reason}: {body[:500]}")
        self.status = status
        self.reason = reason
        self.body = body

    @property
    def namespace_terminating(self) -> bool:
        """The API server refused to create something in a namespace being deleted (issue #19):
        final, nothing to retry; the namespace's objects go by garbage collection."""
        return self.status == 403 and NAMESPACE_TERMINATING in self.body


# The NamespaceLifecycle admission plugin's answer to a create in a terminating namespace.
NAMESPACE_TERMINATING: Final = "because it is being terminated"


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


# --- Requests: what goes on the wire ---------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One API request. `raw`: the answer is returned as bytes (a log), not parsed as JSON."""

    method: str
    path: str
    query: Query = None
    body: Any = None
    content_type: str = JSON
    raw: bool = False

    @property
    def url(self) -> str:
        return f"{self.path}?{urlencode(self.query)}" if self.query else self.path

    @property
    def headers(self) -> dict[str, str]:
        """A new dict per call: the official client adds its defaults to the one it is given."""
        return {"Accept": JSON, "Content-Type": self.content_type}


def decode(request: Request, data: bytes) -> Any:
    """The answer's body: bytes for a raw request, else parsed JSON (None when empty)."""
    if request.raw:
        return data
    return orjson.loads(data) if data else None


def get_request(kind: str, namespace: str, name: str) -> Request:
    return Request("GET", path(kind, namespace, name))


def list_request(kind: str, namespace: str | None, labels: Mapping[str, str] | None = None) -> Request:
    query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
    return Request("GET", path(kind, namespace), query=query)


def apply_request(obj: Mapping[str, Any], field_manager: str) -> Request:
    """Server-side apply under `field_manager` (force: the operator owns its children)."""
    meta = obj["metadata"]
    return Request(
        "PATCH",
        path(obj["kind"], meta["namespace"], meta["name"]),
        query={"fieldManager": field_manager, "force": "true"},
        body=dict(obj),
        content_type=APPLY_PATCH,
    )


def create_request(obj: Mapping[str, Any]) -> Request:
    return Request("POST", path(obj["kind"], obj["metadata"]["namespace"]), body=obj)


def delete_request(kind: str, namespace: str, name: str, propagation: str = "Background") -> Request:
    return Request("DELETE", path(kind, namespace, name), body={"propagationPolicy": propagation})


def status_request(
    kind: str, namespace: str, name: str, status: Mapping[str, Any], field_manager: str
) -> Request:
    """A merge patch of the status subresource under `field_manager` (without one the API server
    names the manager after the client's user agent: `kopf`)."""
    return Request(
        "PATCH",
        path(kind, namespace, name, "status"),
        query={"fieldManager": field_manager},
        body={"status": dict(status)},
        content_type=MERGE_PATCH,
    )


def event_request(event: Mapping[str, Any]) -> Request:
    return Request("POST", path("Event", event["metadata"]["namespace"]), body=event)


def log_request(namespace: str, name: str, lines: int) -> Request:
    return Request("GET", path("Pod", namespace, name, "log"), query={"tailLines": str(lines)}, raw=True)


# --- Calls: the requests of one operation and how their answers are read -----------------------

# Yields requests, is sent each answer (a KubeError is raised at the yield), returns the result.
Call = Generator[Request, Any, T]


@dataclass(frozen=True)
class Done(Generic[T]):
    """What a call returned."""

    value: T


def advance(call: Call[T], answer: Any) -> Request | Done[T]:
    """Resume `call` with `answer` (a KubeError is raised inside it; None starts it): its next
    request, or what it returned. The transports' `run` loops over this."""
    try:
        return call.throw(answer) if isinstance(answer, KubeError) else call.send(answer)
    except StopIteration as stop:
        return Done(stop.value)


def get_call(kind: str, namespace: str, name: str) -> Call[dict[str, Any] | None]:
    """The object, or None if there is none (404)."""
    try:
        obj: dict[str, Any] = yield get_request(kind, namespace, name)
    except KubeError as e:
        if e.status == 404:
            return None
        raise
    return obj


def list_call(
    kind: str, namespace: str | None, labels: Mapping[str, str] | None = None
) -> Call[list[dict[str, Any]]]:
    """Objects of `kind` in `namespace` (None: every namespace) carrying `labels`."""
    result = yield list_request(kind, namespace, labels)
    items: list[dict[str, Any]] = result.get("items", [])
    for item in items:  # list items lack kind/apiVersion
        item.setdefault("kind", kind)
        item.setdefault("apiVersion", API_VERSIONS[kind])
    return items


def apply_call(obj: Mapping[str, Any], field_manager: str) -> Call[dict[str, Any]]:
    result: dict[str, Any] = yield apply_request(obj, field_manager)
    return result


def create_call(obj: Mapping[str, Any]) -> Call[tuple[dict[str, Any], bool]]:
    """Create; an existing object of the same name is returned instead (409 is success). -> (obj, created)."""
    meta = obj["metadata"]
    try:
        created: dict[str, Any] = yield create_request(obj)
        return created, True
    except KubeError as e:
        if e.status != 409:
            raise
    existing = yield from get_call(obj["kind"], meta["namespace"], meta["name"])
    if existing is None:  # deleted in between: let the caller's next pass retry
        raise KubeError(409, "Conflict", f"{obj['kind']} {meta['name']} exists and vanished")
    return existing, False


def delete_call(kind: str, namespace: str, name: str, propagation: str = "Background") -> Call[bool]:
    """True if deleted, False if there was nothing to delete (404)."""
    try:
        yield delete_request(kind, namespace, name, propagation)
    except KubeError as e:
        if e.status == 404:
            return False
        raise
    return True


def patch_status_call(
    kind: str, namespace: str, name: str, status: Mapping[str, Any], field_manager: str
) -> Call[dict[str, Any]]:
    result: dict[str, Any] = yield status_request(kind, namespace, name, status, field_manager)
    return result


def event_call(event: Mapping[str, Any]) -> Call[None]:
    """Record `event` (best effort: a failure is logged, never raised)."""
    try:
        yield event_request(event)
    except KubeError as e:
        if e.namespace_terminating:
            return  # nobody will read it
        log.warning("Failed to record Event %s on %s: %s", event["reason"], event["metadata"]["name"], e)


def pod_log_tail_call(namespace: str, name: str, lines: int) -> Call[str]:
    """The last `lines` lines of the pod's log, or "" when it cannot be read."""
    try:
        data = yield log_request(namespace, name, lines)
    except KubeError:
        return ""
    return bytes(data).decode(errors="replace")


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


# --- Transports ----------------------------------------------------------------------------------


def load_api_client(pool_size: int = 16) -> Any:
    """The official client's ApiClient: in-cluster config in a pod, the kubeconfig otherwise.

    The `kubernetes` package is a development dependency (the `dev` extra): the operator's
    image does not carry it, the operator never calls this."""
    try:
        from kubernetes import client, config
    except ImportError as e:
        raise ImportError(
            "kube.Kube needs the official kubernetes client, a development dependency: "
            "pip install 'mlops-operator[dev]'",
            name="kubernetes",
        ) from e

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
    """Synchronous calls over the official client's ApiClient. Every method returns plain dicts."""

    api: Any  # kubernetes.client.ApiClient
    field_manager: str = MANAGER

    def close(self) -> None:
        """Close the client: its thread pool (ApiClient.close) and its pooled HTTP connections,
        which ApiClient.close leaves open until the garbage collector finds them."""
        self.api.close()
        self.api.rest_client.pool_manager.clear()

    def send(self, request: Request) -> Any:
        """Send one request: its decoded answer, or KubeError."""
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self.api.call_api(
                request.url,
                request.method,
                # A raw (log) request goes without the JSON headers: the log is text.
                header_params=None if request.raw else request.headers,
                body=request.body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
        except ApiException as e:
            raise KubeError(e.status, str(e.reason), str(e.body)) from None
        return decode(request, resp.data)

    def run(self, call: Call[T]) -> T:
        """Send `call`'s requests one after another; its result."""
        step = advance(call, None)
        while isinstance(step, Request):
            step = advance(call, self._answer(step))
        return step.value

    def _answer(self, request: Request) -> Any:
        try:
            return self.send(request)
        except KubeError as e:
            return e

    def request(
        self, method: str, url: str, body: Any = None, query: Query = None, content_type: str = JSON
    ) -> Any:
        return self.send(Request(method, url, query, body, content_type))

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.run(get_call(kind, namespace, name))

    def list(
        self, kind: str, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Objects of `kind` in `namespace` (None: every namespace) carrying `labels`."""
        return self.run(list_call(kind, namespace, labels))

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's field manager (force: the operator owns its children)."""
        return self.run(apply_call(obj, self.field_manager))

    def create(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create; an existing object of the same name is returned instead (409 is success). -> (obj, created)."""
        return self.run(create_call(obj))

    def delete(self, kind: str, namespace: str, name: str, propagation: str = "Background") -> bool:
        return self.run(delete_call(kind, namespace, name, propagation))

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        return self.run(patch_status_call(kind, namespace, name, status, self.field_manager))

    def event(self, obj: Mapping[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        """Record a core/v1 Event on `obj` (best effort: a failure is logged, never raised)."""
        self.run(event_call(event_manifest(obj, reason, message, type_)))

    def pod_log_tail(self, namespace: str, name: str, lines: int = 20) -> str:
        return self.run(pod_log_tail_call(namespace, name, lines))


# Retries of one call on 429, 5xx, 403 and connection errors (kopf's client): a reconcile pass
# fails after ~7 s and the work queue retries it with its own backoff.
BACKOFFS: Final = (1.0, 2.0, 4.0)


class _AttemptLog(logging.LoggerAdapter):  # type: ignore[type-arg]  # generic only in typeshed
    """kopf reports a failed attempt at ERROR; for the first, single attempt this client decides
    what the failure means (a terminating namespace is no error), so it is debug here."""

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


_FIRST_ATTEMPT: Final = _AttemptLog(log, {})

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

    async def _attempt(self, request: Request, backoffs: tuple[float, ...], logger: Any) -> Any:
        return await self._requester(
            request.method,
            request.url,
            settings=self.settings,
            payload=request.body,
            headers=request.headers,
            backoffs=backoffs,
            logger=logger,
        )

    async def send(self, request: Request) -> Any:
        """Send one request: its decoded answer, or KubeError.

        One quiet attempt first: a create refused in a terminating namespace fails at once,
        without kopf's retries of a 403 and their ERROR lines (issue #19); any other retryable
        failure goes through kopf's retries (BACKOFFS) as before."""
        import aiohttp
        from kopf._cogs.clients import errors

        try:
            try:
                response = await self._attempt(request, (), _FIRST_ATTEMPT)
            except errors.APIForbiddenError as e:
                if NAMESPACE_TERMINATING in str(e):
                    raise
                response = await self._attempt(request, BACKOFFS, log)
            except (
                errors.APIServerError,
                errors.APITooManyRequestsError,
                aiohttp.ClientConnectionError,
                TimeoutError,
            ):
                response = await self._attempt(request, BACKOFFS, log)
        except errors.APIError as e:
            raise KubeError(e.status, type(e).__name__, str(e)) from None
        async with response:
            data = await response.read()
        return decode(request, data)

    async def run(self, call: Call[T]) -> T:
        """Send `call`'s requests one after another; its result."""
        step = advance(call, None)
        while isinstance(step, Request):
            step = advance(call, await self._answer(step))
        return step.value

    async def _answer(self, request: Request) -> Any:
        try:
            return await self.send(request)
        except KubeError as e:
            return e

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
        return await self.send(Request(method, url, query, body, content_type, raw))

    async def get(self, kind: str, namespace: str, name: str, *, fresh: bool = True) -> dict[str, Any] | None:
        """GET the object (`fresh` is for StoreKube's signature: every read here is fresh)."""
        return await self.run(get_call(kind, namespace, name))

    async def list(
        self, kind: str, namespace: str | None, labels: Mapping[str, str] | None = None, *, fresh: bool = True
    ) -> list[dict[str, Any]]:
        """Objects of `kind` in `namespace` (None: every namespace) carrying `labels`."""
        return await self.run(list_call(kind, namespace, labels))

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's field manager (force: the operator owns its children)."""
        return await self.run(apply_call(obj, self.field_manager))

    async def create(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create; an existing object of the same name is returned instead (409 is success). -> (obj, created)."""
        return await self.run(create_call(obj))

    async def delete(self, kind: str, namespace: str, name: str, propagation: str = "Background") -> bool:
        return await self.run(delete_call(kind, namespace, name, propagation))

    async def patch_status(
        self, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self.run(patch_status_call(kind, namespace, name, status, self.field_manager))

    async def event(self, obj: Mapping[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        """Record a core/v1 Event on `obj` (best effort: a failure is logged, never raised)."""
        await self.run(event_call(event_manifest(obj, reason, message, type_)))

    async def pod_log_tail(self, namespace: str, name: str, lines: int = 20) -> str:
        return await self.run(pod_log_tail_call(namespace, name, lines))

    def close(self) -> None:
        """Nothing to close: kopf owns the HTTP sessions."""
