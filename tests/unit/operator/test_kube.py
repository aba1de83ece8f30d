"""AsyncKube over kopf's client: paths, query strings, content types (server-side apply, merge
patch), 404 and 409 handling, and kopf's API errors mapped to KubeError."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from kopf._cogs.clients import errors

from mlops_operator.kube import AsyncKube, KubeError


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
        if isinstance(answer, int):
            error = {404: errors.APINotFoundError, 409: errors.APIConflictError}.get(answer, errors.APIError)
            raise error({"message": "nope"}, status=answer, headers={})
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
    assert call["url"] == "/apis/mlops.dev/v1alpha1/namespaces/ns/trainingjobs/t/status"
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
            ("POST", "/api/v1/namespaces/ns/events"): 403,
            ("GET", "/api/v1/namespaces/ns/pods/p/log"): b"line\n",
        }
    )
    await k.event({"kind": "TrainingJob", "metadata": {"name": "t", "namespace": "ns"}}, "Reason", "message")
    assert r.calls[0]["payload"]["reason"] == "Reason"
    assert await k.pod_log_tail("ns", "p", 5) == "line\n"
    assert r.calls[1]["url"].endswith("/log?tailLines=5")
