"""What every reconcile needs, passed explicitly (kopf's memo holds one Context per operator)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from mlops_contract.timeutil import format_time, utc_now
from mlops_operator.kube import AsyncKube
from mlops_operator.metrics import OperatorMetrics
from mlops_operator.reconcile.controller import Controller
from mlops_operator.reconcile.scrapes import ScrapeMemory
from mlops_operator.settings import Settings
from mlops_operator.status.conditions import READY, Cond, failure_to_report, kstatus, merge, status_patch
from mlops_operator.store import Store, StoreKube

log = logging.getLogger("mlops_operator")


def _version(obj: Mapping[str, Any]) -> str:
    """What changes when someone else changes a child: its spec generation, else its resourceVersion."""
    meta = obj.get("metadata") or {}
    if meta.get("generation") is not None:
        return f"g{meta['generation']}"
    return f"rv{meta.get('resourceVersion')}"


@dataclass
class Context:
    kube: AsyncKube | StoreKube
    settings: Settings
    clock: Callable[[], dt.datetime] = utc_now
    # The operator's own Prometheus metrics (metrics.py).
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    # The InferenceService reconciler's own state: the pod scraper and what it last saw.
    scrapes: ScrapeMemory = field(default_factory=ScrapeMemory)
    # Serialises version-number assignment per (namespace, model).
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    # The watched objects (None: every read goes to the API server) and the work queue that
    # runs the passes (None: nothing is kicked, as in unit tests that call reconcile directly).
    store: Store | None = None
    controller: Controller | None = None
    # What this process last applied, per child: (manifest digest, the child's generation then,
    # monotonic time). See `apply`.
    _applied: dict[tuple[str, str, str], tuple[str, str, float]] = field(default_factory=dict)
    # Children known not to exist (checked or deleted by this process), so they are not re-read.
    _absent: set[tuple[str, str, str]] = field(default_factory=set)
    # Finished trial pods as their watch events showed them, per (namespace, TrainingJob), until
    # a pass has recorded them in status: a drain may delete a pod before any pass lists it,
    # but its last event still carries the termination message (issue #23).
    trial_pods: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)

    def saw_trial_pod(self, namespace: str, trainingjob: str, pod: Mapping[str, Any]) -> None:
        """Keep a finished trial pod's body from a watch event (any other pod is ignored)."""
        if ((pod.get("status") or {}).get("phase")) == "Succeeded":
            self.trial_pods.setdefault((namespace, trainingjob), {})[pod["metadata"]["name"]] = dict(pod)

    def seen_trial_pods(self, namespace: str, trainingjob: str) -> list[dict[str, Any]]:
        return list(self.trial_pods.get((namespace, trainingjob), {}).values())

    def forget_trial_pods(
        self, namespace: str, trainingjob: str, recorded: Iterable[str] | None = None
    ) -> None:
        """Drop the kept pods named in `recorded` (the pods of trials now in status), or all."""
        if recorded is None:
            self.trial_pods.pop((namespace, trainingjob), None)
            return
        kept = self.trial_pods.get((namespace, trainingjob), {})
        for name in recorded:
            kept.pop(name, None)
        if not kept:
            self.trial_pods.pop((namespace, trainingjob), None)

    def now(self) -> str:
        return format_time(self.clock())

    def model_lock(self, namespace: str, model: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, model), asyncio.Lock())

    def kick(self, kind: str, namespace: str, name: str) -> None:
        """Ask for a pass over an object (no-op for objects this replica does not hold)."""
        if self.controller is None:
            return
        if self.store is None or self.store.has(kind, namespace, name):
            self.controller.enqueue(kind, namespace, name)

    def kick_model(self, kind: str, namespace: str, model: str) -> None:
        """Ask for a pass over every object of `kind` in `namespace` about `model` (spec.model)."""
        if self.controller is None or self.store is None:
            return
        for name in self.store.names_of_model(kind, namespace, model):
            self.controller.enqueue(kind, namespace, name)

    async def of_model(self, kind: str, namespace: str, model: str) -> list[dict[str, Any]]:
        """The objects of `kind` in `namespace` whose spec.model is `model` (from the store when held)."""
        if self.store is not None and kind in self.store.kinds:
            return self.store.list(kind, namespace, model=model)
        return [
            o for o in await self.kube.list(kind, namespace) if (o.get("spec") or {}).get("model") == model
        ]

    def active(self, kind: str) -> int:
        """How many objects of `kind` this replica holds (and reconciles when not paused)."""
        return self.store.count(kind) if self.store is not None else 0

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Server-side apply a child, unless this process applied the same manifest before and
        the child is unchanged since: for kinds the store holds, the same generation (kinds
        with a spec generation) or resourceVersion (Services), so an edit or a deletion is
        repaired at the next pass; for other kinds, re-applied every `resync_seconds`.
        Returns the child (from the store when skipped; None when skipped for other kinds)."""
        meta = obj["metadata"]
        key = (str(obj["kind"]), str(meta["namespace"]), str(meta["name"]))
        digest = hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()
        last = self._applied.get(key)
        if last is not None and last[0] == digest:
            if self.store is not None and key[0] in self.store.kinds:
                cached = self.store.get(*key)
                if cached is not None and _version(cached) == last[1]:
                    return cached
            elif time.monotonic() - last[2] < self.settings.resync_seconds:
                return None
        result = await self.kube.apply(obj)
        self._applied[key] = (digest, _version(result), time.monotonic())
        self._absent.discard(key)
        return result

    async def delete_child(self, kind: str, namespace: str, name: str) -> bool:
        """Delete a child; True if it existed. Remembered as absent, so `child_exists` needs no read."""
        key = (kind, namespace, name)
        self._applied.pop(key, None)
        deleted = await self.kube.delete(kind, namespace, name)
        self._absent.add(key)
        return deleted

    async def child_exists(self, kind: str, namespace: str, name: str) -> bool:
        """Whether a child exists: from what this process applied or deleted, else by one read."""
        key = (kind, namespace, name)
        if key in self._absent:
            return False
        if key in self._applied:
            return True
        if await self.kube.get(kind, namespace, name) is None:
            self._absent.add(key)
            return False
        return True

    def forget_children(self, namespace: str, names: set[str]) -> None:
        """Drop the bookkeeping of an owner's children (the owner is gone)."""
        for key in [k for k in (*self._applied, *self._absent) if k[1] == namespace and k[2] in names]:
            self._applied.pop(key, None)
            self._absent.discard(key)

    async def write_status(self, body: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        """Merge-patch the status when it differs from the body's; True if written."""
        meta = body["metadata"]
        patch = status_patch(body.get("status"), new)
        if patch is None:
            return False
        await self.kube.patch_status(body["kind"], meta["namespace"], meta["name"], patch)
        return True

    async def report_failure(self, body: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        """The Warning Event of a failure the `new` status enters (none when it was already there)."""
        failure = failure_to_report((body.get("status") or {}).get("conditions"), new.get("conditions") or [])
        if failure is not None:
            await self.event(body, failure[0], failure[1], warning=True)

    async def write_invalid_spec(
        self, body: Mapping[str, Any], message: str, reason: str = "InvalidSpec", **fields: Any
    ) -> None:
        """Status for a spec the operator will not act on (it does not parse, or the tenant policy
        refuses it): Ready=False and Stalled=True with the reason, and its Warning Event once."""
        generation = int(body["metadata"].get("generation") or 1)
        conds = kstatus(
            Cond(READY, "False", reason, message),
            in_progress=False,
            stalled_reason=reason,
            message=message,
        )
        status = {
            **fields,
            "observedGeneration": generation,
            "conditions": merge((body.get("status") or {}).get("conditions"), conds, generation, self.now()),
            "message": message,
        }
        await self.report_failure(body, status)
        await self.write_status(body, status)

    async def event(self, body: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
        meta = body["metadata"]
        log.log(
            logging.WARNING if warning else logging.INFO,
            message,
            extra={"object": f"{body.get('kind')}/{meta['namespace']}/{meta['name']}", "reason": reason},
        )
        await self.kube.event(body, reason, message, "Warning" if warning else "Normal")
