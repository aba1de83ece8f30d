"""The API calls, written once: each request builder (method, path, query, body, content type),
both transports sending exactly what the builders return, and the rules for reading answers
(404 and 409 handling, list items, best-effort Events and logs) through AsyncKube over a
stand-in for kopf's client and through Kube over a stand-in for the official ApiClient."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from kopf._cogs.clients import errors
from kubernetes.client.exceptions import ApiException

from mlops_operator import kube as k8s
from mlops_operator.kube import AsyncKube, Kube, KubeError, Request


class Response:
    def __init__(self, body: Any) -> None:
        self.body = body

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *_: Any) -> None:
        return None

    async def read(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)


class Requester:
    """Stands in for kopf's api.request: records calls, answers from a table of (method, path)."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, method: str, url: str, **kwargs: Any) -> Response:
        self.calls.append({"method": method, "url": url, **kwargs})
        answer = self.answers.get((method, url.split("?", maxsplit=1)[0]))
        if isinstance(answer, tuple):  # (status, message)
            answer, message = answer
        else:
            message = "nope"
        if isinstance(answer, int):
            error = {
                403: errors.APIForbiddenError,
                404: errors.APINotFoundError,
                409: errors.APIConflictError,
                500: errors.APIServerError,
            }.get(answer, errors.APIError)
            raise error({"message": message}, status=answer, headers={})
        return Response(answer if answer is not None else {})


def kube(answers: dict[tuple[str, str], Any]) -> tuple[AsyncKube, Requester]:
    requester = Requester(answers)
    return AsyncKube(settings=object(), requester=requester), requester


async def test_get_returns_none_on_404_and_raises_other_errors() -> None:
    k, _ = kube(
        {
            ("GET", "/apis/batch/v1/namespaces/ns/jobs/a"): 404,
            ("GET", "/apis/batch/v1/namespaces/ns/jobs/b"): 500,
        }
    )
    assert await k.get("Job", "ns", "a") is None
    with pytest.raises(KubeError) as e:
        await k.get("Job", "ns", "b")
    assert e.value.status == 500


async def test_list_sends_the_label_selector_and_fills_in_kind() -> None:
    k, r = kube({("GET", "/api/v1/pods"): {"items": [{"metadata": {"name": "p"}}]}})
    pods = await k.list("Pod", None, {"a": "1", "b": "2"})
    assert r.calls[0]["url"] == "/api/v1/pods?labelSelector=a%3D1%2Cb%3D2"
    assert pods == [{"metadata": {"name": "p"}, "kind": "Pod", "apiVersion": "v1"}]


async def test_apply_is_server_side_apply_under_the_field_manager() -> None:
    k, r = kube({})
    await k.apply({"kind": "Service", "metadata": {"name": "s", "namespace": "ns"}})
    call = r.calls[0]
    assert call["method"] == "PATCH"
    assert call["url"] == "/api/v1/namespaces/ns/services/s?fieldManager=mlops-operator&force=true"
    assert call["headers"]["Content-Type"] == "application/apply-patch+yaml"


async def test_status_is_merge_patched_on_the_subresource() -> None:
    k, r = kube({})
    await k.patch_status("TrainingJob", "ns", "t", {"phase": "Running"})
    call = r.calls[0]
    assert (
        call["url"]
        == "/apis/mlops.dev/v1alpha1/namespaces/ns/trainingjobs/t/status?fieldManager=mlops-operator"
    )
    assert call["headers"]["Content-Type"] == "application/merge-patch+json"
    assert call["payload"] == {"status": {"phase": "Running"}}


async def test_create_treats_409_as_success_and_returns_the_existing_object() -> None:
    existing = {"metadata": {"name": "j", "resourceVersion": "7"}}
    k, _ = kube(
        {
            ("POST", "/apis/batch/v1/namespaces/ns/jobs"): 409,
            ("GET", "/apis/batch/v1/namespaces/ns/jobs/j"): existing,
        }
    )
    assert await k.create({"kind": "Job", "metadata": {"name": "j", "namespace": "ns"}}) == (existing, False)


async def test_events_are_best_effort_and_logs_are_text() -> None:
    k, r = kube(
        {
            ("POST", "/api/v1/namespaces/ns/events"): 422,
            ("GET", "/api/v1/namespaces/ns/pods/p/log"): b"line\n",
        }
    )
    await k.event({"kind": "TrainingJob", "metadata": {"name": "t", "namespace": "ns"}}, "Reason", "message")
    assert r.calls[0]["payload"]["reason"] == "Reason"
    assert await k.pod_log_tail("ns", "p", 5) == "line\n"
    assert r.calls[1]["url"].endswith("/log?tailLines=5")


# --- Request builders: what goes on the wire, once per call --------------------------------------

TJ = {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "t", "namespace": "ns"}}
SVC = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "ns"}, "spec": {}}
EVENT = {"kind": "Event", "metadata": {"name": "t.1", "namespace": "ns"}, "reason": "R"}
CRD = "/apis/mlops.dev/v1alpha1"

BUILDERS = {
    "get, namespaced custom kind": (
        k8s.get_request("TrainingJob", "ns", "t"),
        Request("GET", f"{CRD}/namespaces/ns/trainingjobs/t"),
    ),
    "get, core kind": (k8s.get_request("Pod", "ns", "p"), Request("GET", "/api/v1/namespaces/ns/pods/p")),
    "get, group kind": (
        k8s.get_request("Job", "ns", "j"),
        Request("GET", "/apis/batch/v1/namespaces/ns/jobs/j"),
    ),
    # The operator's kinds are all namespaced; namespace=None is the cluster-wide path of a list.
    "list, every namespace": (k8s.list_request("TrainingJob", None), Request("GET", f"{CRD}/trainingjobs")),
    "list, labels": (
        k8s.list_request("Pod", "ns", {"a": "1", "b": "2"}),
        Request("GET", "/api/v1/namespaces/ns/pods", query={"labelSelector": "a=1,b=2"}),
    ),
    "list, no labels": (k8s.list_request("Pod", "ns", {}), Request("GET", "/api/v1/namespaces/ns/pods")),
    "server-side apply": (
        k8s.apply_request(SVC, "manager"),
        Request(
            "PATCH",
            "/api/v1/namespaces/ns/services/s",
            query={"fieldManager": "manager", "force": "true"},
            body=SVC,
            content_type="application/apply-patch+yaml",
        ),
    ),
    "create": (k8s.create_request(TJ), Request("POST", f"{CRD}/namespaces/ns/trainingjobs", body=TJ)),
    "delete": (
        k8s.delete_request("Job", "ns", "j"),
        Request("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j", body={"propagationPolicy": "Background"}),
    ),
    "delete, foreground": (
        k8s.delete_request("Job", "ns", "j", "Foreground"),
        Request("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j", body={"propagationPolicy": "Foreground"}),
    ),
    "status subresource": (
        k8s.status_request("TrainingJob", "ns", "t", {"phase": "Running"}, "manager"),
        Request(
            "PATCH",
            f"{CRD}/namespaces/ns/trainingjobs/t/status",
            query={"fieldManager": "manager"},
            body={"status": {"phase": "Running"}},
            content_type="application/merge-patch+json",
        ),
    ),
    "event": (k8s.event_request(EVENT), Request("POST", "/api/v1/namespaces/ns/events", body=EVENT)),
    "pod log": (
        k8s.log_request("ns", "p", 5),
        Request("GET", "/api/v1/namespaces/ns/pods/p/log", query={"tailLines": "5"}, raw=True),
    ),
}


@pytest.mark.parametrize(("built", "expected"), BUILDERS.values(), ids=BUILDERS.keys())
def test_request_builders(built: Request, expected: Request) -> None:
    assert built == expected


def test_request_url_headers_and_decoding() -> None:
    request = k8s.list_request("Pod", None, {"app": "a b"})
    assert request.url == "/api/v1/pods?labelSelector=app%3Da+b"
    assert k8s.get_request("Pod", "ns", "p").url == "/api/v1/namespaces/ns/pods/p"
    assert request.headers == {"Accept": "application/json", "Content-Type": "application/json"}
    assert request.headers is not request.headers  # the official client adds to the dict it is given
    assert k8s.decode(request, b'{"a": 1}') == {"a": 1}
    assert k8s.decode(request, b"") is None
    assert k8s.decode(k8s.log_request("ns", "p", 1), b"line\n") == b"line\n"


# --- Both transports send what the builders return -----------------------------------------------


class ApiClient:
    """Stands in for the official client's ApiClient: records call_api, answers from a table."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []

    def call_api(self, url: str, method: str, **kwargs: Any) -> Any:
        self.calls.append({"method": method, "url": url, **kwargs})
        answer = self.answers.get((method, url.split("?", maxsplit=1)[0]))
        if isinstance(answer, int):
            raise ApiException(status=answer, reason="Nope")
        data = answer if isinstance(answer, bytes) else orjson.dumps(answer if answer is not None else {})
        return type("Response", (), {"data": data})()


OPERATIONS = {
    "get": (("get", "TrainingJob", "ns", "t"), k8s.get_request("TrainingJob", "ns", "t")),
    "list": (("list", "Pod", None, {"a": "1"}), k8s.list_request("Pod", None, {"a": "1"})),
    "apply": (("apply", SVC), k8s.apply_request(SVC, "mlops-operator")),
    "create": (("create", TJ), k8s.create_request(TJ)),
    "delete": (("delete", "Job", "ns", "j", "Orphan"), k8s.delete_request("Job", "ns", "j", "Orphan")),
    "patch_status": (
        ("patch_status", "TrainingJob", "ns", "t", {"phase": "Running"}),
        k8s.status_request("TrainingJob", "ns", "t", {"phase": "Running"}, "mlops-operator"),
    ),
    "pod_log_tail": (("pod_log_tail", "ns", "p", 3), k8s.log_request("ns", "p", 3)),
}


@pytest.mark.parametrize(("call", "request_"), OPERATIONS.values(), ids=OPERATIONS.keys())
async def test_both_transports_send_the_built_request(call: tuple[Any, ...], request_: Request) -> None:
    method, *args = call
    api, requester = ApiClient({}), Requester({})
    getattr(Kube(api), method)(*args)
    await getattr(AsyncKube(settings=object(), requester=requester), method)(*args)
    [sync], [async_] = api.calls, requester.calls
    assert (sync["method"], sync["url"], sync["body"]) == (request_.method, request_.url, request_.body)
    assert (async_["method"], async_["url"], async_["payload"]) == (
        request_.method,
        request_.url,
        request_.body,
    )
    assert async_["headers"] == request_.headers
    # The official client sends a log request without the JSON headers.
    assert sync["header_params"] == (None if request_.raw else request_.headers)


async def test_both_transports_send_events_built_from_the_object() -> None:
    api, requester = ApiClient({}), Requester({})
    Kube(api).event(TJ, "Started", "message", "Warning")
    await AsyncKube(settings=object(), requester=requester).event(TJ, "Started", "message", "Warning")
    for method, url, body in [
        (api.calls[0]["method"], api.calls[0]["url"], api.calls[0]["body"]),
        (requester.calls[0]["method"], requester.calls[0]["url"], requester.calls[0]["payload"]),
    ]:
        assert (method, url) == ("POST", "/api/v1/namespaces/ns/events")
        assert body["involvedObject"]["name"] == "t" and (body["reason"], body["type"]) == (
            "Started",
            "Warning",
        )


# --- Kube: the official client's errors as KubeError, the same answer rules ----------------------


def test_kube_maps_api_exceptions_and_reads_answers_by_the_same_rules(
    caplog: pytest.LogCaptureFixture,
) -> None:
    existing = {"metadata": {"name": "t", "resourceVersion": "7"}}
    api = ApiClient(
        {
            ("GET", f"{CRD}/namespaces/ns/trainingjobs/gone"): 404,
            ("GET", f"{CRD}/namespaces/ns/trainingjobs/broken"): 500,
            ("POST", f"{CRD}/namespaces/ns/trainingjobs"): 409,
            ("GET", f"{CRD}/namespaces/ns/trainingjobs/t"): existing,
            ("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j"): 404,
            ("POST", "/api/v1/namespaces/ns/events"): 403,
            ("GET", "/api/v1/namespaces/ns/pods/p/log"): b"line \xff\n",
            ("GET", "/api/v1/namespaces/ns/pods/q/log"): 400,
        }
    )
    kube = Kube(api)
    assert kube.get("TrainingJob", "ns", "gone") is None
    with pytest.raises(KubeError) as e:
        kube.get("TrainingJob", "ns", "broken")
    assert (e.value.status, e.value.reason) == (500, "Nope")
    assert kube.create(TJ) == (existing, False)
    assert [c["method"] for c in api.calls[-2:]] == ["POST", "GET"]
    assert kube.delete("Job", "ns", "j") is False
    kube.event(TJ, "Started", "message")
    assert "Failed to record Event Started" in caplog.text
    assert kube.pod_log_tail("ns", "p") == "line \ufffd\n"
    assert kube.pod_log_tail("ns", "q") == ""
    assert kube.list("Pod", "ns") == []


async def test_create_raises_a_conflict_when_the_existing_object_vanished() -> None:
    answers: dict[tuple[str, str], Any] = {
        ("POST", f"{CRD}/namespaces/ns/trainingjobs"): 409,
        ("GET", f"{CRD}/namespaces/ns/trainingjobs/t"): 404,
    }
    with pytest.raises(KubeError) as sync:
        Kube(ApiClient(answers)).create(TJ)
    with pytest.raises(KubeError) as async_:
        await AsyncKube(settings=object(), requester=Requester(answers)).create(TJ)
    for e in (sync.value, async_.value):
        assert (e.status, e.reason) == (409, "Conflict")
        assert "TrainingJob t exists and vanished" in e.body


TERMINATING = (
    'jobs "j" is forbidden: unable to create new content in namespace ns because it is being terminated'
)


async def test_a_create_in_a_terminating_namespace_fails_at_once_without_retries() -> None:
    """Issue #19: kopf retried every such 403 three times with an ERROR line each."""
    k, r = kube({("POST", "/apis/batch/v1/namespaces/ns/jobs"): (403, TERMINATING)})
    with pytest.raises(KubeError) as refused:
        await k.create({"kind": "Job", "metadata": {"name": "j", "namespace": "ns"}})
    assert refused.value.namespace_terminating
    assert [c["backoffs"] for c in r.calls] == [()]


@pytest.mark.parametrize("status", [403, 500])
async def test_other_retryable_failures_still_get_kopfs_retries(status: int) -> None:
    k, r = kube({("POST", "/apis/batch/v1/namespaces/ns/jobs"): status})
    with pytest.raises(KubeError) as failed:
        await k.create({"kind": "Job", "metadata": {"name": "j", "namespace": "ns"}})
    assert failed.value.status == status and not failed.value.namespace_terminating
    assert [c["backoffs"] for c in r.calls] == [(), k8s.BACKOFFS]


async def test_an_event_in_a_terminating_namespace_is_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    k, _ = kube({("POST", "/api/v1/namespaces/ns/events"): (403, TERMINATING)})
    await k.event({"kind": "Job", "metadata": {"name": "j", "namespace": "ns"}}, "Reason", "message")
    assert [r for r in caplog.records if r.levelno >= 30] == []
