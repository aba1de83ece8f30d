"""Every kopf decorator of the operator. Each handler is a thin adapter over `reconcile`.

Shape: stateless kopf handlers only (all `async def`: kopf runs plain functions in a thread
pool, and the store and the queue belong to the event loop), no daemons, timers or change handlers, so kopf writes
nothing onto our objects (no finalizer, no annotations) and keeps no per-object task or body.
An index function per watched kind feeds the store (kopf calls them for every object of the
initial listings before any handler runs, so the store is complete from the first pass); the
`on.event` handlers drop deleted objects and enqueue the key of the object, or of the
custom resource owning a child, into the controller's work queue, which runs the passes
(reconcile/controller.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf
import prometheus_client

from mlops_contract.api.common import GROUP, LABEL_MANAGED_BY, LABEL_TRAINING_JOB, MANAGER, VERSION
from mlops_operator import pausing
from mlops_operator.build.trainingjob import LABEL_STEP
from mlops_operator.kube import AsyncKube
from mlops_operator.metrics import OperatorMetrics
from mlops_operator.prometheus import PrometheusClient
from mlops_operator.reconcile import inferenceservice, modelversion, trainingjob
from mlops_operator.reconcile.context import Context
from mlops_operator.reconcile.controller import Controller, Kind
from mlops_operator.reconcile.scrapes import ScrapeMemory
from mlops_operator.scraper import HttpScraper
from mlops_operator.settings import Settings
from mlops_operator.store import Store, StoreKube

log = logging.getLogger("mlops_operator")
MANAGED = {LABEL_MANAGED_BY: MANAGER}


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings chosen for GitOps and scale (the README's GitOps section says why)."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Only daemons and event handlers: nothing to persist, but keep kopf's own marks out of
    # users' annotations in case a change handler is ever added.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=f"internal.{GROUP}", v1=False
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=f"internal.{GROUP}", key="last-handled-configuration", v1=False
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.inactivity_timeout = 600
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 2  # only the login handler is synchronous


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster credentials in a pod, else the kubeconfig named by KUBECONFIG (read at login time)."""
    info = kopf.login_with_service_account(**kwargs)
    if info is not None:
        # kopf names the API server https://kubernetes.default.svc, which needs cluster DNS; the
        # kubelet's KUBERNETES_SERVICE_HOST/PORT do not (and are what client-go uses in a pod).
        return dataclasses.replace(info, server=in_cluster_server(os.environ) or info.server)
    return kopf.login_with_kubeconfig(**kwargs)


def in_cluster_server(env: Mapping[str, str]) -> str | None:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


KINDS: dict[str, Kind] = {
    # A finished TrainingJob is never looked at again unless it changes.
    "TrainingJob": Kind(trainingjob.reconcile, interval=trainingjob.interval, resync_when_done=False),
    # A ModelVersion waiting for its artifact's claim looks again on a timer (reconcile/storage.py).
    "ModelVersion": Kind(modelversion.reconcile, interval=modelversion.interval),
    "InferenceService": Kind(inferenceservice.reconcile, interval=inferenceservice.interval),
}
# Label selectors of the children the store holds (the operator creates them with these labels).
CHILD_SELECTORS: dict[str, Mapping[str, str]] = {"Job": MANAGED, "Deployment": MANAGED, "Service": MANAGED}

pausing.install()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: Settings = memo.get("settings") or Settings.from_env()
    configure(settings)
    if "ctx" not in memo:
        store = Store()
        kube = StoreKube(AsyncKube(settings), store)
        metrics = OperatorMetrics()
        # Tests inject a scraper through the memo (kwok pods serve no /metrics).
        scraper = memo.get("scraper") or HttpScraper(on_failure=metrics.scrape_failed)
        client = PrometheusClient(
            token_file=ours.prometheus_token_file,
            ca_file=ours.prometheus_ca_file,
            credentials_for=ours.prometheus_credentials_for,
        )
        memory = ScrapeMemory(scraper=scraper, prometheus=client)
        ctx = Context(kube=kube, settings=ours, metrics=metrics, scrapes=memory, store=store)
        ctx.controller = Controller(
            ctx,
            KINDS,
            workers=ours.workers,
            relist=lambda: kube.relist(ours.namespaces, CHILD_SELECTORS),
        )
        memo["ctx"] = ctx
    ctx = memo["ctx"]
    assert ctx.controller is not None
    ctx.controller.pause = pausing.toggle_for(settings)
    ctx.controller.start()
    ctx.metrics.track_active(ctx.active)
    if ours.metrics_port and "metrics_server" not in memo:
        server, _thread = prometheus_client.start_http_server(
            ours.metrics_port, registry=ctx.metrics.registry
        )
        memo["metrics_server"] = server
        log.info("Serving operator metrics", extra={"port": ours.metrics_port})
    log.info(
        "Started mlops-operator", extra={"trainerImage": ours.trainer_image, "serverImage": ours.server_image}
    )


@kopf.on.cleanup()
async def cleanup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()
        server.server_close()
    ctx: Context | None = memo.get("ctx")
    if ctx is not None:
        if ctx.controller is not None:
            await ctx.controller.stop()
        await ctx.scrapes.close()
        ctx.kube.close()
    pausing.forget(settings)


def _store(memo: kopf.Memo) -> Store:
    store: Store | None = memo["ctx"].store
    assert store is not None
    return store


def _observe(kind: str, type_: str | None, body: kopf.Body, memo: kopf.Memo) -> None:
    """Drop a deleted object from the store (index functions store the others)."""
    if type_ == "DELETED":
        ctx: Context = memo["ctx"]
        _store(memo).drop(kind, body)
        meta = body["metadata"]
        if ctx.controller is not None:
            ctx.controller.forget(kind, meta["namespace"], meta["name"])


# --- Our kinds: index (store), then enqueue -----------------------------------------------------
@kopf.index(GROUP, VERSION, "trainingjobs", id="store")
async def trainingjob_store(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _store(memo).put("TrainingJob", body)


@kopf.on.event(GROUP, VERSION, "trainingjobs", id="kick")
async def trainingjob_event(
    type: str | None, body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, **_: Any
) -> None:
    _observe("TrainingJob", type, body, memo)
    ctx: Context = memo["ctx"]
    ctx.kick("TrainingJob", meta["namespace"], meta["name"])
    kick_owner(meta, ctx)  # a retraining run wakes its InferenceService


@kopf.index(GROUP, VERSION, "modelversions", id="store")
async def modelversion_store(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _store(memo).put("ModelVersion", body)


@kopf.on.event(GROUP, VERSION, "modelversions", id="kick")
async def modelversion_event(
    type: str | None, body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, **_: Any
) -> None:
    _observe("ModelVersion", type, body, memo)
    ctx: Context = memo["ctx"]
    ctx.kick("ModelVersion", meta["namespace"], meta["name"])
    # A new or newly verified version may change what the model's InferenceServices serve.
    model = (body.get("spec") or {}).get("model")
    if model:
        ctx.kick_model("InferenceService", meta["namespace"], str(model))


@kopf.index(GROUP, VERSION, "inferenceservices", id="store")
async def inferenceservice_store(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _store(memo).put("InferenceService", body)


@kopf.on.event(GROUP, VERSION, "inferenceservices", id="kick")
async def inferenceservice_event(
    type: str | None, body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, **_: Any
) -> None:
    _observe("InferenceService", type, body, memo)
    if type == "DELETED":
        inferenceservice.forget(memo["ctx"], meta["namespace"], meta["name"])
    memo["ctx"].kick("InferenceService", meta["namespace"], meta["name"])


# --- Children: store, then wake the owner -----------------------------------------------------
def kick_owner(meta: kopf.Meta, ctx: Context) -> None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and str(ref.get("apiVersion", "")).startswith(GROUP):
            ctx.kick(ref["kind"], meta["namespace"], ref["name"])


def watch_children(group: str, version: str, plural: str, kind: str) -> None:
    """Store the operator's children of one kind (by its managed-by label) and wake their owner."""

    @kopf.index(group, version, plural, labels=MANAGED, id="store")
    async def child_store(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        _store(memo).put(kind, body)

    @kopf.on.event(group, version, plural, labels=MANAGED, id="kick-owner")
    async def child_event(
        type: str | None, body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, **_: Any
    ) -> None:
        _observe(kind, type, body, memo)
        kick_owner(meta, memo["ctx"])  # a changed, or edited or deleted, child gets its owner a pass


# Finished tuning trial pods (issue #23): remembered from their events and their TrainingJob
# woken, so a trial's score survives a drain that deletes the pod before a pass lists it.
@kopf.on.event("", "v1", "pods", labels={**MANAGED, LABEL_STEP: "tune"}, id="trial-result")
async def trial_pod_event(body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    ctx: Context = memo["ctx"]
    tj = (meta.get("labels") or {}).get(LABEL_TRAINING_JOB)
    if tj and (body.get("status") or {}).get("phase") == "Succeeded":
        ctx.saw_trial_pod(meta["namespace"], tj, body)
        ctx.kick("TrainingJob", meta["namespace"], tj)


watch_children("batch", "v1", "jobs", "Job")
watch_children("apps", "v1", "deployments", "Deployment")
watch_children("", "v1", "services", "Service")
