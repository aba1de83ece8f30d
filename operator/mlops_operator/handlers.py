"""Every kopf decorator of the operator. Each handler is a thin adapter over `reconcile`.

Shape: one daemon per custom resource runs its level-triggered loop (reconcile/runner.py);
stateless `on.event` handlers on the resources and on their children (Jobs, Deployments)
only wake the right loop. No change handlers: kopf keeps no diff-base or progress on our
objects, so GitOps tools see nothing but our status.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf
import prometheus_client

from mlops_operator.api.common import GROUP, LABEL_MANAGED_BY, MANAGER, VERSION
from mlops_operator.kube import AsyncKube, Kube, load_api_client
from mlops_operator.reconcile import inferenceservice, modelversion, runner, trainingjob
from mlops_operator.reconcile.context import Context
from mlops_operator.settings import Settings

log = logging.getLogger("mlops_operator")
MANAGED = {LABEL_MANAGED_BY: MANAGER}


def configure(settings: kopf.OperatorSettings, ours: Settings) -> None:
    """kopf settings chosen for GitOps and scale (see KOPF_NOTES.md)."""
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
    settings.execution.max_workers = ours.api_workers


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


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: Settings = memo.get("settings") or Settings.from_env()
    configure(settings, ours)
    if "ctx" not in memo:
        kube = AsyncKube(Kube(load_api_client(ours.api_workers)), ours.api_workers)
        memo["ctx"] = Context(
            kube=kube, settings=ours, scraper=memo.get("scraper") or inferenceservice.http_scraper
        )
    ctx: Context = memo["ctx"]
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
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()
        server.server_close()
    ctx: Context | None = memo.get("ctx")
    if ctx is not None:
        ctx.kube.close()


# --- TrainingJob ------------------------------------------------------------------------------
@kopf.daemon(GROUP, VERSION, "trainingjobs", id="reconcile", cancellation_timeout=2.0)
async def trainingjob_loop(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await runner.run(memo["ctx"], "TrainingJob", body, stopped, trainingjob.reconcile)


@kopf.on.event(GROUP, VERSION, "trainingjobs", id="kick")
def trainingjob_event(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    ctx: Context = memo["ctx"]
    ctx.kick("TrainingJob", meta["namespace"], meta["name"])
    kick_owner(meta, ctx)  # a retraining run wakes its InferenceService


# --- ModelVersion -----------------------------------------------------------------------------
@kopf.daemon(GROUP, VERSION, "modelversions", id="reconcile", cancellation_timeout=2.0)
async def modelversion_loop(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await runner.run(memo["ctx"], "ModelVersion", body, stopped, modelversion.reconcile)


@kopf.on.event(GROUP, VERSION, "modelversions", id="kick")
def modelversion_event(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    ctx: Context = memo["ctx"]
    ctx.kick("ModelVersion", meta["namespace"], meta["name"])
    # A new or newly verified version may change what InferenceServices serve.
    ctx.kick_namespace("InferenceService", meta["namespace"])


# --- InferenceService -----------------------------------------------------------------------
@kopf.daemon(GROUP, VERSION, "inferenceservices", id="reconcile", cancellation_timeout=2.0)
async def inferenceservice_loop(
    stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    await runner.run(
        memo["ctx"],
        "InferenceService",
        body,
        stopped,
        inferenceservice.reconcile,
        interval=inferenceservice.interval,
    )


@kopf.on.event(GROUP, VERSION, "inferenceservices", id="kick")
def inferenceservice_event(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    memo["ctx"].kick("InferenceService", meta["namespace"], meta["name"])


# --- Children: wake the owner's loop --------------------------------------------------------
def kick_owner(meta: kopf.Meta, ctx: Context) -> None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and str(ref.get("apiVersion", "")).startswith(GROUP):
            ctx.kick(ref["kind"], meta["namespace"], ref["name"])


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED, id="kick-owner")
def job_event(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    kick_owner(meta, memo["ctx"])


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED, id="kick-owner")
def deployment_event(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    kick_owner(meta, memo["ctx"])
