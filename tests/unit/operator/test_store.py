"""The store: newest resourceVersion wins, deletions never drop a re-created object, reads are
copies, label lists, compact entries; StoreKube reads cached kinds from it and stores what
writes return."""

from __future__ import annotations

from typing import Any

from mlops_operator.store import Store, StoreKube


def obj(name: str, rv: str, ns: str = "ns", **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": ns, "resourceVersion": rv, **extra.pop("meta", {})}
    return {"metadata": meta, **extra}


def test_a_late_watch_event_does_not_overwrite_a_newer_write() -> None:
    s = Store()
    assert s.put("TrainingJob", obj("a", "10", status={"phase": "Running"}))
    assert not s.put("TrainingJob", obj("a", "9", status={"phase": "Pending"}))
    assert s.get("TrainingJob", "ns", "a")["status"] == {"phase": "Running"}  # type: ignore[index]
    assert s.put("TrainingJob", obj("a", "11", status={"phase": "Succeeded"}))
    assert s.get("TrainingJob", "ns", "a")["status"] == {"phase": "Succeeded"}  # type: ignore[index]


def test_non_integer_resource_versions_always_replace() -> None:
    s = Store()
    s.put("Job", obj("j", "10"))
    assert s.put("Job", obj("j", "opaque", status={"active": 1}))
    assert s.get("Job", "ns", "j")["status"] == {"active": 1}  # type: ignore[index]


def test_a_delete_older_than_what_is_held_keeps_the_recreated_object() -> None:
    s = Store()
    s.put("Job", obj("j", "20"))  # re-created by the operator after the old one was deleted
    assert not s.drop("Job", obj("j", "15"))
    assert s.has("Job", "ns", "j")
    assert s.drop("Job", obj("j", "21"))
    assert not s.has("Job", "ns", "j") and s.get("Job", "ns", "j") is None
    assert s.count("Job") == 0


def test_reads_are_copies_without_managed_fields_and_with_kind() -> None:
    s = Store()
    s.put("ModelVersion", obj("m", "1", meta={"managedFields": [{"manager": "x"}]}, spec={"model": "iris"}))
    got = s.get("ModelVersion", "ns", "m")
    assert got is not None
    assert "managedFields" not in got["metadata"]
    assert got["kind"] == "ModelVersion" and got["apiVersion"] == "mlops.dev/v1alpha1"
    got["spec"]["model"] = "changed"
    assert s.get("ModelVersion", "ns", "m")["spec"]["model"] == "iris"  # type: ignore[index]


def test_list_filters_by_namespace_and_labels() -> None:
    s = Store()
    s.put("ModelVersion", obj("a", "1", meta={"labels": {"mlops.dev/model": "iris", "x": "1"}}))
    s.put("ModelVersion", obj("b", "2", meta={"labels": {"mlops.dev/model": "wine"}}))
    s.put("ModelVersion", obj("c", "3", ns="other", meta={"labels": {"mlops.dev/model": "iris"}}))
    assert [m["metadata"]["name"] for m in s.list("ModelVersion", "ns", {"mlops.dev/model": "iris"})] == ["a"]
    assert sorted(m["metadata"]["name"] for m in s.list("ModelVersion", "ns")) == ["a", "b"]
    assert [m["metadata"]["name"] for m in s.list("ModelVersion", "other")] == ["c"]
    assert s.list("ModelVersion", "nowhere") == []
    assert s.count("ModelVersion") == 3


def test_list_and_names_by_model() -> None:
    s = Store()
    s.put("InferenceService", obj("a", "1", spec={"model": "iris"}))
    s.put("InferenceService", obj("b", "2", spec={"model": "wine"}))
    s.put("InferenceService", obj("c", "3", spec={"model": "iris"}))
    assert sorted(i["metadata"]["name"] for i in s.list("InferenceService", "ns", model="iris")) == ["a", "c"]
    assert sorted(s.names_of_model("InferenceService", "ns", "iris")) == ["a", "c"]
    assert s.names_of_model("InferenceService", "other", "iris") == []


def test_replace_holds_exactly_a_fresh_listing() -> None:
    s = Store()
    s.put("Job", obj("gone", "1"))
    s.put("Job", obj("kept", "2"))
    s.replace("Job", [obj("kept", "3", status={"succeeded": 1}), obj("new", "4")])
    assert sorted(j["metadata"]["name"] for j in s.list("Job", "ns")) == ["kept", "new"]
    assert s.count("Job") == 2
    assert s.get("Job", "ns", "kept")["status"] == {"succeeded": 1}  # type: ignore[index]


def test_kinds_outside_the_store_are_ignored() -> None:
    s = Store()
    assert not s.put("Pod", obj("p", "1"))


class Api:
    """What StoreKube delegates to: records calls, answers like the API server."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def get(self, kind: str, namespace: str, name: str, *, fresh: bool = True) -> dict[str, Any] | None:
        self.calls.append(("get", kind))
        return obj(name, "50", ns=namespace)

    async def list(
        self, kind: str, namespace: str | None, labels: Any = None, *, fresh: bool = True
    ) -> list[Any]:
        self.calls.append(("list", kind))
        return [obj("listed", "60", ns=namespace or "ns")]

    async def create(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.calls.append(("create", body["kind"]))
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "70"}}, True

    async def patch_status(self, kind: str, namespace: str, name: str, status: Any) -> dict[str, Any]:
        self.calls.append(("patch_status", kind))
        return obj(name, "80", ns=namespace, status=dict(status))


async def test_store_kube_reads_cached_kinds_from_memory_and_keeps_what_writes_return() -> None:
    api, store = Api(), Store()
    kube = StoreKube(api, store)  # type: ignore[arg-type]
    assert await kube.get("Job", "ns", "j") is None  # the store is complete: a miss means absent
    assert api.calls == []
    await kube.create({"kind": "Job", "metadata": {"name": "j", "namespace": "ns"}})
    assert (await kube.get("Job", "ns", "j"))["metadata"]["resourceVersion"] == "70"  # type: ignore[index]
    await kube.patch_status("TrainingJob", "ns", "t", {"phase": "Running"})
    assert (await kube.get("TrainingJob", "ns", "t"))["status"] == {"phase": "Running"}  # type: ignore[index]
    assert api.calls == [("create", "Job"), ("patch_status", "TrainingJob")]
    # Fresh reads and uncached kinds go to the API server.
    await kube.list("ModelVersion", "ns", fresh=True)
    await kube.get("Pod", "ns", "p")
    assert api.calls[-2:] == [("list", "ModelVersion"), ("get", "Pod")]


async def test_relist_rebuilds_every_kind() -> None:
    api, store = Api(), Store()
    store.put("TrainingJob", obj("deleted-while-paused", "1"))
    await StoreKube(api, store).relist((), {"Job": {"app": "x"}})  # type: ignore[arg-type]
    assert [t["metadata"]["name"] for t in store.list("TrainingJob", "ns")] == ["listed"]
    assert store.count("TrainingJob") == 1
    assert sorted(kind for verb, kind in api.calls) == sorted(store.kinds)


def test_the_pause_hook_sees_the_toggle_kopf_hands_its_orchestrator() -> None:
    import inspect

    from kopf._core.reactor import orchestration, running

    from mlops_operator import pausing

    pausing.install()
    pausing.install()  # idempotent: one wrapper
    settings, toggle = object(), object()
    coro = orchestration.orchestrator(  # type: ignore[call-arg]
        settings=settings, operator_paused=toggle, insights=None, identity=None, processor=None
    )
    coro.close()
    assert pausing.toggle_for(settings) is toggle
    pausing.forget(settings)
    assert pausing.toggle_for(settings) is None
    # kopf still starts its orchestrator through the module attribute, passing the toggle.
    source = inspect.getsource(running.spawn_tasks)
    assert "orchestration.orchestrator(" in source and "operator_paused=operator_paused" in source
