"""Conditions in the metav1.Condition shape, and the kstatus pair Reconciling / Stalled.

Invariants: `lastTransitionTime` moves only when a condition's status flips; every
condition carries the generation it was computed from; `Ready` is derived from the others
by the caller, never set independently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

READY: Final = "Ready"
RECONCILING: Final = "Reconciling"
STALLED: Final = "Stalled"

# Status keys other writers own (kopf's own bookkeeping): never removed by the operator's patch.
UNMANAGED: Final = frozenset({"kopf"})

StatusValue = Literal["True", "False", "Unknown"]

# Ready=False reasons that are not terminal (Stalled stays False: the operator waits and looks
# again) but that only the user can end: they are reported like failures.
WAITING_PROBLEMS: Final = frozenset({"StorageNotFound"})


@dataclass(frozen=True)
class Cond:
    type: str
    status: StatusValue
    reason: str
    message: str = ""


def tf(value: bool) -> StatusValue:
    return "True" if value else "False"


def merge(
    previous: Iterable[Mapping[str, Any]] | None, desired: Iterable[Cond], generation: int, now: str
) -> list[dict[str, Any]]:
    """The desired conditions, keeping each one's lastTransitionTime unless its status changed."""
    before = {c["type"]: c for c in previous or []}
    out = []
    for cond in desired:
        old = before.get(cond.type)
        since = old.get("lastTransitionTime") if old and old.get("status") == cond.status else None
        out.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message[:32768],
                "lastTransitionTime": since or now,
                "observedGeneration": generation,
            }
        )
    return out


def kstatus(
    ready: Cond, *, in_progress: bool, stalled_reason: str | None = None, message: str = ""
) -> list[Cond]:
    """Ready plus the kstatus pair: Reconciling while work is under way, Stalled on a terminal error."""
    return [
        ready,
        Cond(
            RECONCILING,
            tf(in_progress),
            "Progressing" if in_progress else "Idle",
            message if in_progress else "",
        ),
        Cond(
            STALLED,
            tf(stalled_reason is not None),
            stalled_reason or "NoError",
            message if stalled_reason else "",
        ),
    ]


def get(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    cond = get(conditions, type_)
    return bool(cond and cond.get("status") == "True")


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch turning `old` status into `new` (None when nothing changed).

    Keys of `old` missing from `new` are removed (set to null); lists are replaced whole.
    """
    old = old or {}
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys() - UNMANAGED:
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if before == value:
            continue
        if isinstance(before, Mapping) and isinstance(value, Mapping):
            nested = status_patch(before, value)
            if nested is not None:  # None: equal but for null-valued keys, nothing to write
                patch[key] = nested
        else:
            patch[key] = value
    return patch or None


def failure_to_report(
    old: Iterable[Mapping[str, Any]] | None, new: Iterable[Mapping[str, Any]]
) -> tuple[str, str] | None:
    """(reason, message) of the Warning Event a status change owes, once per transition: the
    new Ready is False for a failure (Stalled, or a wait in WAITING_PROBLEMS) with a reason the
    old Ready did not have; None otherwise (issue #19: every failure reason has its Event)."""
    new = list(new)
    ready = get(new, READY) or {}
    reason = str(ready.get("reason") or "")
    if ready.get("status") != "False" or not (is_true(new, STALLED) or reason in WAITING_PROBLEMS):
        return None
    before = get(old, READY) or {}
    if before.get("status") == "False" and before.get("reason") == reason:
        return None
    return reason, str(ready.get("message") or "")
