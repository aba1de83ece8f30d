"""Storage a child pod would mount, checked before the pod is launched (issue #19).

A pod whose PersistentVolumeClaim does not exist only sits unschedulable: every kind checks the
claims of its pvc:// locations first, waits with Ready=False/StorageNotFound, and looks again
every `STORAGE_RECHECK_SECONDS` (nothing wakes an owner when a claim appears).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

from mlops_operator.build.common import pvc_claims
from mlops_operator.status.conditions import READY, get

STORAGE_NOT_FOUND: Final = "StorageNotFound"
STORAGE_RECHECK_SECONDS: Final = 15.0


class Getter(Protocol):
    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...


async def missing_claims(kube: Getter, namespace: str, uris: Iterable[str]) -> list[str]:
    """The claims of the pvc:// `uris` that do not exist in `namespace`, in order."""
    return [
        c for c in pvc_claims(list(uris)) if await kube.get("PersistentVolumeClaim", namespace, c) is None
    ]


def missing_message(claims: list[str], namespace: str) -> str:
    return f"PersistentVolumeClaim {', '.join(claims)} not found in {namespace}"


def interval(body: Mapping[str, Any]) -> float | None:
    """An object waiting for its claim looks again every 15 s; otherwise only events and the
    resync bring passes."""
    ready = get((body.get("status") or {}).get("conditions"), READY) or {}
    return STORAGE_RECHECK_SECONDS if ready.get("reason") == STORAGE_NOT_FOUND else None
