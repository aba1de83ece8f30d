"""Reconcile an InferenceService: choose the version, roll it out (directly or through a
canary), keep Service/HPA in place, scrape the serving pods, and fire retraining.

Children are applied with server-side apply (idempotent; re-applying an unchanged manifest
changes nothing). The served version is read back from the stable Deployment's pod
template label, so a restarted operator resumes from what runs, not from memory. Scrape
totals (for per-interval rates) are the only in-memory state; after a restart the first
scrape uses lifetime counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from mlops_contract.api.common import API_VERSION, LABEL_INFERENCE_SERVICE, LABEL_MODEL_VERSION
from mlops_contract.api.inferenceservice import InferenceServiceSpec, Metrics
from mlops_contract.api.trainingjob import TrainingJobSpec
from mlops_contract.timeutil import parse_time
from mlops_operator.build import inferenceservice as build
from mlops_operator.build.common import labels, owner_reference
from mlops_operator.monitor import scrape, triggers
from mlops_operator.reconcile.context import Context
from mlops_operator.serving import canary, resolve
from mlops_operator.status.conditions import READY, Cond, kstatus, merge, tf

log = logging.getLogger("mlops_operator")


def _served_version(deploy: Mapping[str, Any] | None) -> str | None:
    if not deploy:
        return None
    return ((deploy["spec"]["template"].get("metadata") or {}).get("labels") or {}).get(LABEL_MODEL_VERSION)


def _ready(deploy: Mapping[str, Any] | None) -> tuple[int, int, bool]:
    """(replicas, readyReplicas, rolled out) of a Deployment."""
    if not deploy:
        return 0, 0, False
    st = deploy.get("status") or {}
    want = int(deploy["spec"].get("replicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    ready = int(st.get("readyReplicas") or 0)
    current = st.get("observedGeneration") == deploy["metadata"].get("generation")
    return int(st.get("replicas") or 0), ready, current and updated >= want and ready >= want


async def _samples(ctx: Context, pods: list[dict[str, Any]]) -> list[scrape.PodSample]:
    texts = await asyncio.gather(*(ctx.scraper(p) for p in pods))
    out = []
    for pod, text in zip(pods, texts, strict=True):
        if text:
            try:
                out.append(scrape.parse(text, pod["metadata"]["name"]))
            except ValueError as e:
                log.warning("Could not parse metrics of pod %s: %s", pod["metadata"]["name"], e)
    return out


def _running(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


async def _retraining_base(ctx: Context, ns: str, spec: InferenceServiceSpec) -> dict[str, Any] | None:
    assert spec.retraining is not None  # caller checks
    if spec.retraining.template is not None:
        return spec.retraining.template.to_dict()
    source = await ctx.kube.get("TrainingJob", ns, spec.retraining.from_training_job or "")
    return dict(source["spec"]) if source else None


async def reconcile(ctx: Context, isvc: Mapping[str, Any]) -> bool:  # one readable pass
    meta = isvc["metadata"]
    ns, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation") or 1)
    old = isvc.get("status") or {}
    now_dt = ctx.clock()
    now = ctx.now()
    try:
        spec = InferenceServiceSpec.model_validate(isvc["spec"])
    except ValidationError as e:
        await ctx.write_invalid_spec(isvc, str(e))
        return True

    mvs = await ctx.of_model("ModelVersion", ns, spec.model)
    by_name = {m["metadata"]["name"]: m for m in mvs}
    stable = await ctx.kube.get("Deployment", ns, build.deployment_name(name, "stable"))
    canary_deploy = await ctx.kube.get("Deployment", ns, build.deployment_name(name, "canary"))
    serving = _served_version(stable)
    old_canary = old.get("canary") or {}
    rolled_back = {old_canary["modelVersion"]} if old_canary.get("phase") == "RolledBack" else set()
    choice = resolve.resolve(spec, mvs, serving, rolled_back)
    desired = choice.name or serving
    # A copy: it is updated below and compared with the stored status when writing.
    canary_status: dict[str, Any] | None = dict(old_canary) if old_canary else None
    messages: list[str] = []
    if choice.name is None:
        messages.append(choice.message)

    await ctx.apply(build.service(isvc, spec))
    hpa = build.hpa(isvc, spec)
    if hpa:
        await ctx.apply(hpa)
    elif await ctx.child_exists("HorizontalPodAutoscaler", ns, build.deployment_name(name, "stable")):
        # Autoscaling was turned off: replicas belong to spec.replicas again.
        await ctx.delete_child("HorizontalPodAutoscaler", ns, build.deployment_name(name, "stable"))

    # Pods are read only when something is (to be) served: scraping and canaries need them.
    pods = await ctx.kube.list("Pod", ns, {LABEL_INFERENCE_SERVICE: name}) if desired or serving else []
    try:
        if desired is None:
            pass
        elif stable is None or serving is None or serving not in by_name:
            stable = await ctx.apply(
                build.deployment(
                    isvc, spec, by_name[desired], ctx.settings, track="stable", replicas=spec.replicas
                )
            )
            await ctx.event(isvc, "RolledOut", f"Serving {desired}")
            serving = desired
        elif desired != serving and spec.canary is None:
            stable = await ctx.apply(
                build.deployment(
                    isvc, spec, by_name[desired], ctx.settings, track="stable", replicas=spec.replicas
                )
            )
            await ctx.event(isvc, "RollingUpdate", f"Rolling update {serving} -> {desired}: {choice.message}")
            serving = desired
        elif desired != serving and spec.canary is not None:
            stable_n, canary_n = build.split_replicas(spec.replicas, spec.canary.traffic_percent)
            if (
                canary_deploy is None
                or _served_version(canary_deploy) != desired
                or old_canary.get("modelVersion") != desired
            ):
                ctx.scrape_totals.pop((ns, name, "canary"), None)
                canary_status = {"modelVersion": desired, "phase": "Progressing", "startedAt": now}
                await ctx.event(
                    isvc,
                    "CanaryStarted",
                    f"Canary {desired} gets {spec.canary.traffic_percent}% of traffic for {spec.canary.duration_seconds}s",
                )
            canary_deploy = await ctx.apply(
                build.deployment(
                    isvc, spec, by_name[desired], ctx.settings, track="canary", replicas=canary_n
                )
            )
            await ctx.apply(
                build.deployment(
                    isvc, spec, by_name[serving], ctx.settings, track="stable", replicas=stable_n
                )
            )
            canary_pods = _running(
                [p for p in pods if (p["metadata"].get("labels") or {}).get(build.LABEL_TRACK) == "canary"]
            )
            key = (ns, name, "canary")
            _, totals = scrape.aggregate(await _samples(ctx, canary_pods), ctx.scrape_totals.get(key))
            ctx.scrape_totals[key] = totals
            stats = scrape.canary_stats(totals)
            started = parse_time((canary_status or {}).get("startedAt")) or now_dt
            decision = canary.decide(spec.canary, started, now_dt, stats)
            assert canary_status is not None  # set above
            canary_status.update(
                {
                    "requests": stats.requests,
                    "errorRate": round(stats.errors / stats.requests, 4) if stats.requests else None,
                    "latencyP95Ms": stats.p95_ms,
                    "reason": decision.message,
                }
            )
            if decision.action == "promote":
                stable = await ctx.apply(
                    build.deployment(
                        isvc, spec, by_name[desired], ctx.settings, track="stable", replicas=spec.replicas
                    )
                )
                await ctx.delete_child("Deployment", ns, build.deployment_name(name, "canary"))
                canary_status.update(phase="Promoted")
                await ctx.event(isvc, "CanaryPromoted", f"Promoted {desired}: {decision.message}")
                serving = desired
            elif decision.action == "rollback":
                await ctx.delete_child("Deployment", ns, build.deployment_name(name, "canary"))
                await ctx.apply(
                    build.deployment(
                        isvc, spec, by_name[serving], ctx.settings, track="stable", replicas=spec.replicas
                    )
                )
                canary_status.update(phase="RolledBack")
                await ctx.event(
                    isvc, "CanaryRolledBack", f"Rolled back {desired}: {decision.message}", warning=True
                )
        else:
            # Steady state: keep the stable Deployment as built (replicas follow spec / the scale subresource).
            stable = await ctx.apply(
                build.deployment(
                    isvc, spec, by_name[serving], ctx.settings, track="stable", replicas=spec.replicas
                )
            )
            if canary_deploy is not None:
                await ctx.delete_child("Deployment", ns, build.deployment_name(name, "canary"))
                canary_deploy = None
    except build.UnservableArtifact as e:
        messages.append(str(e))

    # --- monitoring ------------------------------------------------------------------------
    metrics_status = dict(old.get("metrics") or {})
    scraped: dict[str, Any] | None = None
    last_scrape = parse_time(metrics_status.get("lastScrape"))
    if serving and scrape.due(
        now_dt, spec.monitoring.interval_seconds, last_scrape, ctx.scraped_at.get((ns, name))
    ):
        ctx.scraped_at[(ns, name)] = now_dt
        key = (ns, name, "all")
        aggregated, totals = scrape.aggregate(await _samples(ctx, _running(pods)), ctx.scrape_totals.get(key))
        ctx.scrape_totals[key] = totals
        scraped = aggregated
        fresh = scrape.rounded(aggregated)
        if scrape.changed(metrics_status, fresh):
            metrics_status = Metrics.model_validate(fresh).to_dict() | {"lastScrape": now}

    # --- retraining ------------------------------------------------------------------------
    retraining_status = old.get("retraining")
    if spec.retraining is not None:
        state = triggers.TriggerState.from_status(old)
        active = []
        fetched: dict[str, dict[str, Any] | None] = {}  # read once per pass, reused for lastOutcome
        for job in state.active_jobs:
            tj = fetched[job] = await ctx.kube.get("TrainingJob", ns, job)
            if tj and (tj.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                active.append(job)
        state = dataclasses.replace(state, active_jobs=tuple(active))
        verdict, new_state = triggers.evaluate(
            spec.retraining, state, scraped, meta.get("annotations") or {}, now_dt, isvc_name=name
        )
        if verdict.fire and verdict.job_name:
            base = await _retraining_base(ctx, ns, spec)
            if base is None:
                messages.append(
                    f"retraining source TrainingJob {spec.retraining.from_training_job} not found"
                )
            else:
                feedback = (
                    build.prediction_log_uri(isvc, spec, by_name[serving])
                    if serving and spec.retraining.include_feedback
                    else None
                )
                tj_spec = triggers.retraining_spec(spec, base, feedback, by_name.get(serving or ""))
                TrainingJobSpec.model_validate(tj_spec)
                tj_body = {
                    "apiVersion": API_VERSION,
                    "kind": "TrainingJob",
                    "metadata": {
                        "name": verdict.job_name,
                        "namespace": ns,
                        "labels": labels("retraining", name, spec.model, **{LABEL_INFERENCE_SERVICE: name}),
                        "annotations": {
                            "mlops.dev/trigger": str(verdict.trigger),
                            "mlops.dev/reason": verdict.message[:1000],
                        },
                        "ownerReferences": [owner_reference(isvc)],
                    },
                    "spec": tj_spec,
                }
                _, created = await ctx.kube.create(tj_body)
                if created:
                    ctx.metrics.triggered(ns, name, str(verdict.trigger))
                    await ctx.event(
                        isvc,
                        "RetrainingTriggered",
                        f"Created TrainingJob {verdict.job_name}: {verdict.message}",
                    )
        retraining_status = triggers.retraining_status(old.get("retraining"), new_state, verdict)
        if new_state.count:
            last_job = triggers.retraining_job_name(name, new_state.count)
            last_tj = (
                fetched[last_job] if last_job in fetched else await ctx.kube.get("TrainingJob", ns, last_job)
            )
            produced = ((last_tj or {}).get("status") or {}).get("modelVersion")
            progressing = canary_status and canary_status.get("phase") == "Progressing"
            in_canary = canary_status.get("modelVersion") if canary_status and progressing else None
            outcome = triggers.run_outcome(
                last_job,
                last_tj,
                by_name.get(produced or ""),
                serving=serving,
                canary=in_canary,
                resolution=choice.message,
            )
            if outcome:
                retraining_status["lastOutcome"] = outcome
        if metrics_status or new_state.drift_breaches:
            metrics_status["driftBreaches"] = new_state.drift_breaches

    # --- status ----------------------------------------------------------------------------
    replicas, ready_replicas, rolled_out = _ready(stable)
    c_replicas, _c_ready, _ = _ready(canary_deploy)
    traffic: list[dict[str, Any]] = []
    if serving:
        total = max(replicas + c_replicas, 1)
        stable_percent = round(100 * replicas / total)
        traffic.append({"modelVersion": serving, "percent": stable_percent, "replicas": replicas})
        if canary_deploy is not None and canary_status and canary_status.get("phase") == "Progressing":
            traffic.append(
                {
                    "modelVersion": canary_status["modelVersion"],
                    "percent": 100 - stable_percent,
                    "replicas": c_replicas,
                }
            )
    ready = (bool(serving) and rolled_out and ready_replicas >= 1) or (
        bool(serving) and spec.replicas == 0 and rolled_out
    )
    progressing = bool(desired and desired != serving) or not rolled_out
    version_ok = choice.name is not None
    reason = "Serving" if ready else ("NoServableVersion" if not serving else "RollingOut")
    message = "; ".join(messages) or (f"serving {serving}" if serving else "no version to serve yet")
    conds = [
        Cond("VersionResolved", tf(version_ok), str(choice.reason), choice.message),
        Cond(
            "RolledOut",
            tf(rolled_out and desired == serving),
            "RolledOut" if rolled_out else "Progressing",
            f"{ready_replicas}/{replicas} ready",
        ),
        *(
            [
                Cond(
                    "CanaryHealthy",
                    tf(canary_status.get("phase") != "RolledBack"),
                    str(canary_status.get("phase")),
                    str(canary_status.get("reason") or ""),
                )
            ]
            if canary_status
            else []
        ),
        *kstatus(Cond(READY, tf(ready), reason, message), in_progress=progressing, message=message),
    ]
    if spec.retraining is not None and metrics_status.get("drift") is not None:
        threshold = spec.monitoring.drift.threshold
        conds.append(
            Cond(
                "Drifted",
                tf(float(metrics_status["drift"]) > threshold),
                "DriftAboveThreshold"
                if float(metrics_status["drift"]) > threshold
                else "DriftBelowThreshold",
                f"drift {metrics_status['drift']} vs threshold {threshold}",
            )
        )
    if spec.retraining is not None:
        running, why, what = triggers.retraining_condition(retraining_status)
        conds.append(Cond("Retraining", tf(running), why, what))
    serving_mv = by_name.get(serving or "")
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge(old.get("conditions"), conds, generation, now),
        "url": build.url(isvc),
        "modelVersion": serving,
        "version": int(serving_mv["spec"]["version"]) if serving_mv else None,
        "desiredModelVersion": choice.name,
        "replicas": replicas,
        "readyReplicas": ready_replicas,
        "selector": build.pod_selector(name),
        "traffic": traffic or None,
        "canary": canary_status,
        "metrics": metrics_status or None,
        "retraining": retraining_status,
        "message": message,
    }
    status = {k: v for k, v in status.items() if v is not None}
    await ctx.write_status(isvc, status)
    # The versions whose stage or retention depends on this status get a pass, after the write,
    # so the pass reads the new status from the store.
    before, after = versions_named(old), versions_named(status)
    if before != after:
        for mv_name in before | after:
            ctx.kick("ModelVersion", ns, mv_name)
    return False


def versions_named(status: Mapping[str, Any]) -> set[str]:
    """The ModelVersions an InferenceService status serves, rolls out or routes traffic to."""
    named = {status.get("modelVersion"), status.get("desiredModelVersion")}
    named |= {t.get("modelVersion") for t in status.get("traffic") or []}
    return {str(n) for n in named if n}


def forget(ctx: Context, namespace: str, name: str) -> None:
    """Drop what this process remembers of a deleted InferenceService (scrape totals, children)."""
    for track in ("all", "canary", "stable"):
        ctx.scrape_totals.pop((namespace, name, track), None)
    ctx.scraped_at.pop((namespace, name), None)
    ctx.forget_children(
        namespace, {name, build.deployment_name(name, "stable"), build.deployment_name(name, "canary")}
    )


def interval(isvc: Mapping[str, Any]) -> float | None:
    """Seconds until the next pass when nothing happens: the scrape interval (at most 30 s)
    while a version is served, a canary runs or a retraining schedule is set; otherwise None
    (the resync period: with nothing to scrape or time, only events bring work)."""
    spec = isvc.get("spec") or {}
    status = isvc.get("status") or {}
    timed = (
        status.get("modelVersion")
        or (status.get("canary") or {}).get("phase") == "Progressing"
        or ((spec.get("retraining") or {}).get("triggers") or {}).get("schedule")
    )
    if not timed:
        return None
    seconds = float(((spec.get("monitoring") or {}).get("intervalSeconds")) or 30)
    return max(1.0, min(seconds, 30.0))


async def http_scraper(pod: Mapping[str, Any], timeout: float = 3.0) -> str | None:
    """GET http://<pod IP>:8080/metrics; None when unreachable."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, build.PORT), timeout)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET {build.METRICS_PATH} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        return None
    if b"chunked" in head.lower():
        body = _dechunk(body)
    return body.decode(errors="replace")


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
