"""Context.apply: an unchanged child is applied once per resync period, not once per pass;
a change of the manifest or of the child's spec (its generation) applies it again; children
known absent are not re-read."""

from __future__ import annotations

from typing import Any

from mlops_operator.reconcile.context import Context
from mlops_operator.settings import Settings
from mlops_operator.store import Store, StoreKube


class Api:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.generation = 1

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply", obj["kind"], obj["metadata"]["name"]))
        meta = {**obj["metadata"], "resourceVersion": str(len(self.calls))}
        if obj["kind"] != "Service":  # like the API server: Services carry no generation
            meta["generation"] = self.generation
        return {**obj, "metadata": meta}

    async def get(self, kind: str, namespace: str, name: str, *, fresh: bool = True) -> dict[str, Any] | None:
        self.calls.append(("get", kind, name))
        return None

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        self.calls.append(("delete", kind, name))
        return True


def context(api: Api, resync: float = 3600.0) -> Context:
    store = Store()
    return Context(kube=StoreKube(api, store), settings=Settings(resync_seconds=resync), store=store)  # type: ignore[arg-type]


def deployment(image: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns"},
        "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
    }


def service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "ns"}, "spec": {}}


def hpa() -> dict[str, Any]:
    """A kind the store does not hold."""
    return {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "h", "namespace": "ns"}, "spec": {}}


async def test_an_unchanged_child_is_applied_once() -> None:
    api = Api()
    ctx = context(api)
    first = await ctx.apply(deployment())
    again = await ctx.apply(deployment())
    await ctx.apply(service())
    await ctx.apply(service())
    assert await ctx.apply(hpa()) is not None
    assert await ctx.apply(hpa()) is None  # skipped; the store does not hold HPAs
    assert api.calls == [
        ("apply", "Deployment", "d"),
        ("apply", "Service", "s"),
        ("apply", "HorizontalPodAutoscaler", "h"),
    ]
    assert again == first  # read back from the store


async def test_a_changed_manifest_or_spec_is_applied_again() -> None:
    api = Api()
    ctx = context(api)
    await ctx.apply(deployment("a"))
    await ctx.apply(deployment("b"))  # the operator wants something else
    assert len(api.calls) == 2
    # Someone edits the Deployment's spec: the watch shows a new generation.
    assert ctx.store is not None
    edited = ctx.store.get("Deployment", "ns", "d")
    assert edited is not None
    edited["metadata"].update(generation=2, resourceVersion="99")
    ctx.store.put("Deployment", edited)
    await ctx.apply(deployment("b"))
    assert len(api.calls) == 3


async def test_an_edited_or_deleted_service_is_applied_again() -> None:
    api = Api()
    ctx = context(api)
    assert ctx.store is not None
    await ctx.apply(service())
    edited = ctx.store.get("Service", "ns", "s")
    assert edited is not None
    edited["metadata"]["resourceVersion"] = "99"  # Services have no generation: any change counts
    ctx.store.put("Service", edited)
    await ctx.apply(service())
    assert ctx.store.drop("Service", {"metadata": {"name": "s", "namespace": "ns", "resourceVersion": "100"}})
    await ctx.apply(service())
    await ctx.apply(service())
    assert api.calls == [("apply", "Service", "s")] * 3


async def test_the_resync_period_applies_unchanged_children_the_store_does_not_hold() -> None:
    api = Api()
    ctx = context(api, resync=0.0)
    await ctx.apply(hpa())
    await ctx.apply(hpa())
    assert len(api.calls) == 2


async def test_absent_children_are_read_once_and_deleted_ones_are_known_absent() -> None:
    api = Api()
    ctx = context(api)
    assert not await ctx.child_exists("HorizontalPodAutoscaler", "ns", "h")
    assert not await ctx.child_exists("HorizontalPodAutoscaler", "ns", "h")
    assert api.calls == [("get", "HorizontalPodAutoscaler", "h")]
    await ctx.apply({"kind": "HorizontalPodAutoscaler", "metadata": {"name": "h", "namespace": "ns"}})
    assert await ctx.child_exists("HorizontalPodAutoscaler", "ns", "h")
    await ctx.delete_child("HorizontalPodAutoscaler", "ns", "h")
    assert not await ctx.child_exists("HorizontalPodAutoscaler", "ns", "h")
    ctx.forget_children("ns", {"h"})
    assert not await ctx.child_exists("HorizontalPodAutoscaler", "ns", "h")  # read again: absent
    assert api.calls[-1] == ("get", "HorizontalPodAutoscaler", "h")
