"""What every reconcile needs, passed explicitly (kopf's memo holds one Context per operator)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlops_operator.kube import AsyncKube
from mlops_operator.metrics import OperatorMetrics
from mlops_operator.settings import Settings
from mlops_operator.status.conditions import READY, Cond, kstatus, merge, status_patch

log = logging.getLogger("mlops_operator")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


Scraper = Callable[[Mapping[str, Any]], Awaitable[str | None]]


async def _no_scraper(pod: Mapping[str, Any]) -> str | None:
    return None


@dataclass
class Context:
    kube: AsyncKube
    settings: Settings
    clock: Callable[[], dt.datetime] = utc_now
    # Reads a serving pod's /metrics text (HTTP to the pod IP in production).
    scraper: Scraper = _no_scraper
    # The operator's own Prometheus metrics (metrics.py).
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    # Counter totals of the last scrape per (namespace, name, track), for per-interval rates.
    scrape_totals: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    # When each (namespace, name)'s pods were last scraped; status.metrics.lastScrape only
    # moves when a value changed, so it cannot pace the scrapes on its own.
    scraped_at: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    # Serialises version-number assignment per (namespace, model).
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    # Wakes an object's reconcile loop: (kind, namespace, name) -> event.
    _kicks: dict[tuple[str, str, str], asyncio.Event] = field(default_factory=dict)

    def now(self) -> str:
        return rfc3339(self.clock())

    def model_lock(self, namespace: str, model: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, model), asyncio.Lock())

    def kick_event(self, kind: str, namespace: str, name: str) -> asyncio.Event:
        return self._kicks.setdefault((kind, namespace, name), asyncio.Event())

    def kick(self, kind: str, namespace: str, name: str) -> None:
        """Ask an object's loop to reconcile now (no-op for objects without a running loop)."""
        event = self._kicks.get((kind, namespace, name))
        if event is not None:
            event.set()

    def kick_namespace(self, kind: str, namespace: str) -> None:
        for (k, ns, _), event in list(self._kicks.items()):
            if k == kind and ns == namespace:
                event.set()

    def active(self, kind: str) -> int:
        """How many objects of `kind` have a running reconcile loop here."""
        return sum(1 for k, _, _ in list(self._kicks) if k == kind)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self._kicks.pop((kind, namespace, name), None)

    async def write_status(self, body: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        """Merge-patch the status when it differs from the body's; True if written."""
        meta = body["metadata"]
        patch = status_patch(body.get("status"), new)
        if patch is None:
            return False
        await self.kube.patch_status(body["kind"], meta["namespace"], meta["name"], patch)
        return True

    async def write_invalid_spec(self, body: Mapping[str, Any], message: str, **fields: Any) -> None:
        """Status for a spec the operator cannot parse: Ready=False and Stalled=True, reason InvalidSpec."""
        generation = int(body["metadata"].get("generation") or 1)
        conds = kstatus(
            Cond(READY, "False", "InvalidSpec", message),
            in_progress=False,
            stalled_reason="InvalidSpec",
            message=message,
        )
        status = {
            **fields,
            "observedGeneration": generation,
            "conditions": merge((body.get("status") or {}).get("conditions"), conds, generation, self.now()),
            "message": message,
        }
        await self.write_status(body, status)

    async def event(self, body: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
        meta = body["metadata"]
        log.log(
            logging.WARNING if warning else logging.INFO,
            message,
            extra={"object": f"{body.get('kind')}/{meta['namespace']}/{meta['name']}", "reason": reason},
        )
        await self.kube.event(body, reason, message, "Warning" if warning else "Normal")
