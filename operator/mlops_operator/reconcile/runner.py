"""The per-object reconcile loop: reconcile, then sleep until kicked or the resync is due.

kopf runs one loop per object as a daemon; each pass reads the object afresh. Watch events
of the object and of its children set the object's kick event, so the loop reacts at once,
and the periodic resync catches anything missed. One loop per object means one reconcile at a time per object. Errors are
logged and retried with exponential backoff; the loop never dies on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

from mlops_operator.kube import KubeError
from mlops_operator.reconcile.context import Context

log = logging.getLogger("mlops_operator")
MAX_BACKOFF: Final = 60.0

Reconcile = Callable[[Context, Mapping[str, Any]], Awaitable[bool]]


class Stopped(Protocol):
    def __bool__(self) -> bool: ...


async def run(
    ctx: Context,
    kind: str,
    body: Mapping[str, Any],
    stopped: Stopped,
    reconcile: Reconcile,
    *,
    interval: Callable[[Mapping[str, Any]], float] | None = None,
) -> None:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    kick = ctx.kick_event(kind, ns, name)
    backoff = 1.0
    try:
        while not stopped:
            kick.clear()
            if meta.get("deletionTimestamp"):
                return
            started = time.monotonic()
            try:
                # Read the object afresh: a kick from a child's event can arrive before kopf has
                # seen our own last status write, and a pass on that stale status would redo work
                # (e.g. restart a canary it has already started).
                current = await ctx.kube.get(kind, ns, name)
                if current is None or current["metadata"].get("deletionTimestamp"):
                    return
                current.setdefault("kind", kind)
                await reconcile(ctx, current)
                ctx.metrics.observe(kind, time.monotonic() - started)
                backoff = 1.0
                timeout = interval(current) if interval else ctx.settings.resync_seconds
            except asyncio.CancelledError:
                raise
            except KubeError as e:
                if e.status == 404:  # the object (or the namespace) is gone
                    return
                ctx.metrics.observe(kind, time.monotonic() - started, error=f"api_{e.status}")
                log.warning("Reconcile of %s %s/%s failed: %s; retrying in %.0fs", kind, ns, name, e, backoff)
                timeout, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
            except Exception as e:
                ctx.metrics.observe(kind, time.monotonic() - started, error=type(e).__name__)
                log.exception("Reconcile of %s %s/%s failed; retrying in %.0fs", kind, ns, name, backoff)
                timeout, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), timeout=timeout)
    finally:
        ctx.forget(kind, ns, name)
