"""The work queue that runs every reconcile pass (client-go's workqueue, in asyncio).

kopf's watch events (of an object and of its children) enqueue the object's key; a fixed
pool of workers takes keys off the queue and runs one pass each on the body held in the
store (no API read). A key is never processed by two workers at once: a key enqueued while
its pass runs is marked dirty and queued again when the pass ends; a key already waiting is
not queued twice, so a burst of child events costs one pass. After a pass the key is
scheduled again: at the kind's interval (an InferenceService's scrape interval), at the
resync period, or never (a finished TrainingJob); after an error, with exponential backoff.
Memory per object is one timer handle, not a task.

Peering: kopf pauses a replica when a peer with a higher priority is alive; it then stops
the watch streams but knows nothing of this queue. The workers wait while kopf's pause
toggle is on, and on resuming rebuild the store from a fresh listing (objects deleted while
paused would otherwise stay in it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from mlops_operator.kube import KubeError

if TYPE_CHECKING:
    from mlops_operator.reconcile.context import Context

log = logging.getLogger("mlops_operator")
MAX_BACKOFF: Final = 60.0

Key = tuple[str, str, str]  # kind, namespace, name
Reconcile = Callable[["Context", Mapping[str, Any]], Awaitable[bool]]


class Pause(Protocol):
    """kopf's pause toggle (aiotoggles.ToggleSet): on while a peer with a higher priority acts."""

    def is_on(self) -> bool: ...

    async def wait_for(self, value: bool) -> None: ...


@dataclass(frozen=True)
class Kind:
    reconcile: Reconcile
    # Seconds until the next pass when nothing happens, from the body after the pass (None:
    # the resync period).
    interval: Callable[[Mapping[str, Any]], float | None] | None = None
    # Whether a pass that reports the object finished (returns True) still schedules a resync.
    resync_when_done: bool = True


class Controller:
    def __init__(
        self,
        ctx: Context,
        kinds: Mapping[str, Kind],
        workers: int = 8,
        relist: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.kinds = dict(kinds)
        self.workers = workers
        self.pause: Pause | None = None
        self._relist = relist
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._waiting: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._backoff: dict[Key, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._resuming: asyncio.Lock | None = None

    # --- feeding ----------------------------------------------------------------------------
    def enqueue(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._queue.put_nowait(key)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """The object is gone: drop its timer and backoff (a queued key finds nothing and ends)."""
        key = (kind, namespace, name)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._backoff.pop(key, None)
        self._dirty.discard(key)

    def scheduled(self) -> int:
        return len(self._timers)

    def _schedule(self, key: Key, delay: float | None) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if delay is not None:
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._due, key)

    def _due(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.enqueue(*key)

    # --- running ----------------------------------------------------------------------------
    def start(self) -> None:
        self._resuming = asyncio.Lock()
        self._tasks = [
            asyncio.create_task(self._work(), name=f"reconcile-worker-{i}") for i in range(self.workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def _wait_unpaused(self) -> None:
        if self.pause is None or not self.pause.is_on():
            return
        assert self._resuming is not None
        async with self._resuming:  # one worker waits and rebuilds the store; the others queue here
            if not self.pause.is_on():
                return
            log.info("Paused by peering: a replica with a higher priority acts")
            await self.pause.wait_for(False)
            log.info("Resumed by peering: re-reading every watched object")
            if self._relist is not None:
                await self._relist()

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            await self._wait_unpaused()
            self._waiting.discard(key)
            self._running.add(key)
            try:
                await self.process(key)
            finally:
                self._running.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(*key)

    async def process(self, key: Key) -> None:
        """One pass over the object `key` names, then schedule its next one."""
        kind, ns, name = key
        spec = self.kinds[kind]
        started = time.monotonic()
        delay: float | None
        try:
            body = await self.ctx.kube.get(kind, ns, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                self.forget(kind, ns, name)
                return
            body.setdefault("kind", kind)
            done = await spec.reconcile(self.ctx, body)
            self.ctx.metrics.observe(kind, time.monotonic() - started)
            self._backoff.pop(key, None)
            if done and not spec.resync_when_done:
                delay = None
            else:
                after = (await self.ctx.kube.get(kind, ns, name) or body) if spec.interval else body
                wanted = spec.interval(after) if spec.interval else None
                delay = wanted if wanted is not None else self.ctx.settings.resync_seconds
        except asyncio.CancelledError:
            raise
        except KubeError as e:
            if e.status == 404:  # the object (or its namespace) is gone
                self.forget(kind, ns, name)
                return
            if e.namespace_terminating:
                # Nothing more goes into a namespace being deleted, and no retry: the object
                # and its children go with the namespace (issue #19).
                log.info("Skipped %s %s/%s: its namespace is being deleted", kind, ns, name)
                self.forget(kind, ns, name)
                return
            self.ctx.metrics.observe(kind, time.monotonic() - started, error=f"api_{e.status}")
            delay = self._next_backoff(key)
            log.warning("Reconcile of %s %s/%s failed: %s; retrying in %.0fs", kind, ns, name, e, delay)
        except Exception as e:
            self.ctx.metrics.observe(kind, time.monotonic() - started, error=type(e).__name__)
            delay = self._next_backoff(key)
            log.exception("Reconcile of %s %s/%s failed; retrying in %.0fs", kind, ns, name, delay)
        self._schedule(key, delay)

    def _next_backoff(self, key: Key) -> float:
        delay = self._backoff.get(key, 0.5) * 2
        self._backoff[key] = min(delay, MAX_BACKOFF)
        return self._backoff[key]
