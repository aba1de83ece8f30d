"""The operator's in-memory view of the objects it watches, so a reconcile pass reads memory
instead of the API server (what client-go's informer cache is to a Go controller).

kopf's watch streams feed it: an index function stores every object it is shown (kopf calls
index functions for the initial listing of every watched kind before it runs any handler, so
the store is complete before the first pass), the event handlers drop deleted objects, and
`StoreKube` stores what the API server answers to the operator's own writes. Entries are
kept compact (orjson bytes without managedFields: ~2-4 KB per object) and parsed on read, so
5,000 objects cost ~20 MB, not the ~50 KB each a parsed dict would.

Newest wins, by resourceVersion compared as an integer (what etcd-backed API servers hand
out; Kubernetes 1.34+ documents resource versions as comparable). A late watch event
therefore never overwrites the body of the operator's own later write. A resourceVersion
that is not an integer is treated as newer (nothing is cached wrongly, at worst re-read).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import orjson

from mlops_operator.kube import API_VERSIONS, AsyncKube, KubeError

log = logging.getLogger("mlops_operator")

# Kinds the operator caches: its own, and the children it creates and watches.
CACHED_KINDS: Final = frozenset(
    {"TrainingJob", "ModelVersion", "InferenceService", "Job", "Deployment", "Service"}
)


Entry = tuple[int | None, dict[str, str], Any, bytes]


def _rv(obj: Mapping[str, Any]) -> int | None:
    value = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


class Store:
    """(kind, namespace, name) -> the newest body seen. Not thread-safe: the event loop owns it."""

    def __init__(self, kinds: frozenset[str] = CACHED_KINDS) -> None:
        self.kinds = kinds
        # kind -> namespace -> name -> (resourceVersion, labels, spec.model, body as orjson bytes)
        self._objs: dict[str, dict[str, dict[str, Entry]]] = {k: {} for k in kinds}

    def put(self, kind: str, obj: Mapping[str, Any]) -> bool:
        """Store `obj` unless a newer version is already held; True if stored."""
        if kind not in self.kinds:
            return False
        meta = obj["metadata"]
        names = self._objs[kind].setdefault(meta["namespace"], {})
        held = names.get(meta["name"])
        rv = _rv(obj)
        if held is not None and held[0] is not None and rv is not None and held[0] > rv:
            return False
        slim = dict(obj)
        slim["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
        slim.setdefault("kind", kind)
        slim.setdefault("apiVersion", API_VERSIONS[kind])
        model = (obj.get("spec") or {}).get("model")
        names[meta["name"]] = (rv, dict(meta.get("labels") or {}), model, orjson.dumps(slim))
        return True

    def drop(self, kind: str, obj: Mapping[str, Any]) -> bool:
        """Forget a deleted object, unless what is held is newer (re-created since)."""
        meta = obj["metadata"]
        names = self._objs.get(kind, {}).get(meta["namespace"])
        if not names or meta["name"] not in names:
            return False
        held_rv, rv = names[meta["name"]][0], _rv(obj)
        if held_rv is not None and rv is not None and held_rv > rv:
            return False
        del names[meta["name"]]
        if not names:
            del self._objs[kind][meta["namespace"]]
        return True

    def replace(self, kind: str, objs: list[dict[str, Any]]) -> None:
        """Hold exactly `objs` for `kind` (a fresh listing)."""
        fresh = Store(frozenset({kind}))
        for obj in objs:
            fresh.put(kind, obj)
        self._objs[kind] = fresh._objs[kind]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        held = self._objs[kind].get(namespace, {}).get(name)
        if held is None:
            return None
        body: dict[str, Any] = orjson.loads(held[3])
        return body

    def has(self, kind: str, namespace: str, name: str) -> bool:
        return name in self._objs.get(kind, {}).get(namespace, {})

    def names_of_model(self, kind: str, namespace: str, model: str) -> list[str]:
        return [name for name, e in self._objs.get(kind, {}).get(namespace, {}).items() if e[2] == model]

    def list(
        self, kind: str, namespace: str, labels: Mapping[str, str] | None = None, model: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects in `namespace` carrying `labels` (and with `spec.model == model` if given);
        only the matching entries are parsed."""
        want = dict(labels or {}).items()
        return [
            orjson.loads(raw)
            for _, have, of, raw in self._objs[kind].get(namespace, {}).values()
            if want <= have.items() and (model is None or of == model)
        ]

    def count(self, kind: str) -> int:
        return sum(len(names) for names in self._objs.get(kind, {}).values())


class StoreKube:
    """AsyncKube's calls, reading cached kinds from the store and storing what writes return.

    `fresh=True` reads the API server instead: for the few decisions that must not rest on a
    watch that may lag (is there already a ModelVersion for this TrainingJob?).
    """

    def __init__(self, kube: AsyncKube, store: Store) -> None:
        self.api = kube
        self.store = store

    async def get(
        self, kind: str, namespace: str, name: str, *, fresh: bool = False
    ) -> dict[str, Any] | None:
        if kind in self.store.kinds and not fresh:
            return self.store.get(kind, namespace, name)
        obj = await self.api.get(kind, namespace, name)
        if obj is not None:
            self.store.put(kind, obj)
        return obj

    async def list(
        self, kind: str, namespace: str, labels: Mapping[str, str] | None = None, *, fresh: bool = False
    ) -> list[dict[str, Any]]:
        if kind in self.store.kinds and not fresh:
            return self.store.list(kind, namespace, labels)
        return await self.api.list(kind, namespace, labels)

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        result = await self.api.apply(obj)
        self.store.put(obj["kind"], result)
        return result

    async def create(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        result, created = await self.api.create(obj)
        self.store.put(obj["kind"], result)
        return result, created

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        return await self.api.delete(kind, namespace, name)

    async def patch_status(
        self, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        result = await self.api.patch_status(kind, namespace, name, status)
        self.store.put(kind, result)
        return result

    async def event(self, obj: Mapping[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        await self.api.event(obj, reason, message, type_)

    async def pod_log_tail(self, namespace: str, name: str, lines: int = 20) -> str:
        return await self.api.pod_log_tail(namespace, name, lines)

    async def relist(self, namespaces: tuple[str, ...], selectors: Mapping[str, Mapping[str, str]]) -> None:
        """Rebuild the store from fresh listings (every namespace when `namespaces` is empty).

        A kind whose listing fails keeps what it held; the failure is logged."""
        for kind in sorted(self.store.kinds):
            labels = selectors.get(kind)
            try:
                objs = [
                    obj for ns in (namespaces or (None,)) for obj in await self.api.list(kind, ns, labels)
                ]
            except KubeError as e:
                log.warning("Could not re-list %s; keeping what the watch gave: %s", kind, e)
                continue
            self.store.replace(kind, objs)

    def close(self) -> None:
        self.api.close()
