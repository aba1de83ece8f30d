"""The work queue: one pass per key at a time, bursts coalesce, finished objects are not
resynced, gone objects are forgotten, errors back off, and a paused replica does nothing
until resumed, then re-lists."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from typing import Any

from mlops_operator.reconcile.context import Context
from mlops_operator.reconcile.controller import Controller, Kind
from mlops_operator.settings import Settings
from mlops_operator.store import Store, StoreKube


def context(resync: float = 3600.0) -> Context:
    store = Store()
    return Context(kube=StoreKube(None, store), settings=Settings(resync_seconds=resync), store=store)  # type: ignore[arg-type]


def hold(ctx: Context, name: str, kind: str = "TrainingJob") -> None:
    assert ctx.store is not None
    ctx.store.put(kind, {"metadata": {"namespace": "ns", "name": name, "resourceVersion": "1"}})


class Passes:
    """A reconcile that records the objects it was given and never finishes them."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def __call__(self, c: Context, body: Mapping[str, Any]) -> bool:
        self.names.append(body["metadata"]["name"])
        return False


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_kicks_while_a_pass_runs_give_exactly_one_more_pass() -> None:
    ctx = context()
    hold(ctx, "a")
    gate = asyncio.Event()
    passes: list[str] = []

    async def reconcile(c: Context, body: Mapping[str, Any]) -> bool:
        passes.append(body["metadata"]["name"])
        await gate.wait()
        return False

    ctx.controller = controller = Controller(ctx, {"TrainingJob": Kind(reconcile)}, workers=4)
    controller.start()
    try:
        ctx.kick("TrainingJob", "ns", "a")
        await settle()
        for _ in range(5):  # five child events during the pass
            ctx.kick("TrainingJob", "ns", "a")
        await settle()
        assert passes == ["a"]  # never two passes of one object at once, even with 4 workers
        gate.set()
        await settle()
        assert passes == ["a", "a"]
    finally:
        await controller.stop()


async def test_a_burst_of_kicks_before_the_pass_starts_costs_one_pass() -> None:
    ctx = context()
    hold(ctx, "a")
    passes = Passes()
    ctx.controller = controller = Controller(ctx, {"TrainingJob": Kind(passes)}, workers=1)
    for _ in range(10):
        ctx.kick("TrainingJob", "ns", "a")
    controller.start()
    try:
        await settle()
        assert passes.names == ["a"]
    finally:
        await controller.stop()


async def test_finished_objects_get_no_resync_and_others_do() -> None:
    ctx = context(resync=0.05)
    hold(ctx, "done")
    hold(ctx, "running")
    passes: list[str] = []

    async def reconcile(c: Context, body: Mapping[str, Any]) -> bool:
        passes.append(body["metadata"]["name"])
        return body["metadata"]["name"] == "done"

    ctx.controller = controller = Controller(
        ctx, {"TrainingJob": Kind(reconcile, resync_when_done=False)}, workers=2
    )
    controller.start()
    try:
        ctx.kick("TrainingJob", "ns", "done")
        ctx.kick("TrainingJob", "ns", "running")
        await asyncio.sleep(0.5)
        assert passes.count("done") == 1
        assert passes.count("running") >= 3
        assert controller.scheduled() == 1
    finally:
        await controller.stop()


async def test_unknown_objects_are_not_kicked_and_vanished_ones_are_forgotten() -> None:
    ctx = context(resync=0.05)
    passes = Passes()
    ctx.controller = controller = Controller(ctx, {"TrainingJob": Kind(passes)}, workers=1)
    controller.start()
    try:
        ctx.kick("TrainingJob", "ns", "never-seen")
        controller.enqueue("TrainingJob", "ns", "never-seen")  # e.g. a timer of a deleted object
        await settle()
        assert passes.names == [] and controller.scheduled() == 0
    finally:
        await controller.stop()


async def test_errors_back_off_exponentially() -> None:
    ctx = context()
    hold(ctx, "a")
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def reconcile(c: Context, body: Mapping[str, Any]) -> bool:
        times.append(loop.time())
        raise RuntimeError("boom")

    ctx.controller = controller = Controller(ctx, {"TrainingJob": Kind(reconcile)}, workers=1)
    controller.start()
    try:
        ctx.kick("TrainingJob", "ns", "a")
        await asyncio.sleep(3.5)
    finally:
        await controller.stop()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 3  # at 0, ~1 s, ~3 s
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9 and gaps[1] > 1.5 * gaps[0]


class Toggle:
    """kopf's pause toggle, as the controller uses it."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.changed = asyncio.Event()

    def is_on(self) -> bool:
        return self.on

    async def wait_for(self, value: bool) -> None:
        while self.on != value:
            self.changed.clear()
            await self.changed.wait()

    def turn(self, value: bool) -> None:
        self.on = value
        self.changed.set()


async def test_a_paused_replica_does_nothing_and_relists_when_resumed() -> None:
    ctx = context()
    hold(ctx, "a")
    passes = Passes()
    relists = 0

    async def relist() -> None:
        nonlocal relists
        relists += 1

    ctx.controller = controller = Controller(ctx, {"TrainingJob": Kind(passes)}, workers=3, relist=relist)
    controller.pause = pause = Toggle(on=True)
    controller.start()
    try:
        ctx.kick("TrainingJob", "ns", "a")
        await settle()
        assert passes.names == []
        pause.turn(False)
        await settle()
        assert passes.names == ["a"] and relists == 1
    finally:
        await controller.stop()


def test_every_watch_handler_runs_on_the_event_loop() -> None:
    """kopf runs plain functions in a thread pool; the store and the queue are not thread-safe."""
    import kopf

    from mlops_operator import handlers  # noqa: F401  # registers the handlers

    registry = kopf.get_default_registry()
    fns = [h.fn for h in (*registry._indexing.get_all_handlers(), *registry._watching.get_all_handlers())]
    assert len(fns) >= 12
    assert [f.__name__ for f in fns if not asyncio.iscoroutinefunction(f)] == []


def test_only_an_object_waiting_for_its_claim_is_rechecked_on_a_timer() -> None:
    from mlops_operator.handlers import KINDS
    from mlops_operator.reconcile.storage import STORAGE_RECHECK_SECONDS

    def body(reason: str) -> dict[str, Any]:
        return {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": reason}]}}

    for kind in ("TrainingJob", "ModelVersion"):
        interval = KINDS[kind].interval
        assert interval is not None, kind
        assert interval(body("StorageNotFound")) == STORAGE_RECHECK_SECONDS
        assert interval(body("Training")) is None
        assert interval({}) is None


def test_a_recorded_verification_failure_is_final_and_nothing_else_is() -> None:
    from mlops_operator.reconcile.modelversion import verification_failed

    def status(state: str, reason: str) -> dict[str, Any]:
        return {"conditions": [{"type": "ArtifactVerified", "status": state, "reason": reason}]}

    assert verification_failed(status("False", "VerificationFailed"))
    assert verification_failed(status("False", "VerificationError"))
    assert not verification_failed(status("False", "DuplicateVersion"))  # re-checked every pass
    assert not verification_failed(status("Unknown", "Verifying"))
    assert not verification_failed({})


def test_an_inferenceservice_names_the_versions_it_serves_routes_to_or_rolls_out() -> None:
    from mlops_operator.reconcile.inferenceservice import versions_named

    status = {
        "modelVersion": "m-v1",
        "desiredModelVersion": "m-v2",
        "traffic": [{"modelVersion": "m-v1", "percent": 90}, {"modelVersion": "m-v2", "percent": 10}],
    }
    assert versions_named(status) == {"m-v1", "m-v2"}
    assert versions_named({}) == set()
