"""Reconcile an InferenceService: observe → pure decisions → act → pure status (issue #16).

One pass, in this order:
1. `observe`: the model's ModelVersions, the stable and canary Deployments, whether an HPA is
   left over from autoscaling, and the fromTrainingJob a retraining run would copy.
2. `decide_rollout` (pure): the version to serve and how to get there (first rollout, rolling
   update, a canary started or continued, steady state), as ordered steps: apply, delete, Event.
3. The measurements a decision needs: the canary's while it is analysed, every pod's when the
   monitoring interval is due (`scrape_due`). By default (`measure_pods`) the serving pods are
   listed and scraped; with spec.monitoring.prometheusUrl (`measure_prometheus`, issue #21) one
   PromQL query answers both and no pod is listed, and a failed query or missing series holds
   the decisions that read them (`from_prometheus`, condition MetricsAvailable).
4. `canary_step` (pure): promote, roll back or continue, with its steps and status.canary;
   `monitoring` (pure): what lands in status.metrics.
5. `act`: the steps, in order; nothing is decided there.
6. Retraining, when configured: the active runs are read, `plan_retraining` (pure) fires or
   not and builds the run (build.retraining), the run is created, `retraining_status` (pure)
   says what became of the last one.
7. `compute_status` (pure), written only when it changed; the ModelVersions whose stage or
   retention depends on it get a pass.

Children are applied with server-side apply (idempotent; re-applying an unchanged manifest
changes nothing). The served version is read back from the stable Deployment's pod template
label, so a restarted operator resumes from what runs, not from memory. What is kept in memory
(ctx.scrapes: scrape totals for per-interval rates, when each service was last scraped) is a
cache; after a restart the first scrape uses lifetime counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import ValidationError

from mlops_contract.api.common import LABEL_INFERENCE_SERVICE, LABEL_MODEL_VERSION
from mlops_contract.api.inferenceservice import Canary, InferenceServiceSpec, Metrics
from mlops_contract.timeutil import format_time, parse_time
from mlops_operator import prometheus, tenancy
from mlops_operator.build import inferenceservice as build
from mlops_operator.build import networkpolicy as build_networkpolicy
from mlops_operator.build import retraining as build_retraining
from mlops_operator.monitor import promql, scrape, triggers
from mlops_operator.reconcile.context import Context
from mlops_operator.scraper import Scraper
from mlops_operator.serving import canary, resolve, shadow
from mlops_operator.serving.verdict import Outcome, Verdict
from mlops_operator.settings import Settings
from mlops_operator.status import conditions
from mlops_operator.status.conditions import READY, Cond, get, kstatus, merge, tf

log = logging.getLogger("mlops_operator")

TERMINAL: Final = ("Succeeded", "Failed")
# The Events that close a canary, and the decision the operator's counter records for each.
CANARY_DECISIONS: Final = {"CanaryPromoted": "promote", "CanaryRolledBack": "rollback"}
# RolledOut=False with this reason: the new pods' init container could not fetch the s3://
# artifact (issue #17); the old pods keep serving (maxUnavailable 0 never removes them).
FETCH_FAILED: Final = "ArtifactFetchFailed"
Body = Mapping[str, Any]


# --- what a pass reads ---------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What the decisions read, read once at the start of the pass."""

    versions: Mapping[str, Body]  # the model's ModelVersions by name
    stable: Body | None = None  # the stable Deployment
    canary: Body | None = None  # the canary Deployment
    hpa_left: bool = False  # an HPA exists though spec.autoscaling is off
    source: Body | None = None  # the TrainingJob spec.retraining.fromTrainingJob names
    policy_left: bool = False  # a NetworkPolicy exists though spec.access.networkPolicy is off
    shadow_left: bool = False  # the shadow Service exists though spec.canary.mode is not shadow


async def observe(ctx: Context, isvc: Body, spec: InferenceServiceSpec) -> Observed:
    ns, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
    mvs = await ctx.of_model("ModelVersion", ns, spec.model)
    stable = await ctx.kube.get("Deployment", ns, build.deployment_name(name, "stable"))
    canary_deploy = await ctx.kube.get("Deployment", ns, build.deployment_name(name, "canary"))
    hpa_left = spec.autoscaling is None and await ctx.child_exists(
        "HorizontalPodAutoscaler", ns, build.deployment_name(name, "stable")
    )
    source_name = spec.retraining.from_training_job if spec.retraining is not None else None
    source = await ctx.kube.get("TrainingJob", ns, source_name) if source_name else None
    policy_left = not spec.access.network_policy and await ctx.child_exists("NetworkPolicy", ns, name)
    shadow_left = not build.shadowing(spec) and await ctx.child_exists(
        "Service", ns, build.shadow_service_name(name)
    )
    return Observed(
        {m["metadata"]["name"]: m for m in mvs},
        stable,
        canary_deploy,
        hpa_left,
        source,
        policy_left,
        shadow_left,
    )


def served_version(deploy: Body | None) -> str | None:
    """The ModelVersion a Deployment's pod template runs (its label), or None."""
    if not deploy:
        return None
    return ((deploy["spec"]["template"].get("metadata") or {}).get("labels") or {}).get(LABEL_MODEL_VERSION)


def readiness(deploy: Body | None) -> tuple[int, int, bool]:
    """(replicas, readyReplicas, rolled out) of a Deployment."""
    if not deploy:
        return 0, 0, False
    st = deploy.get("status") or {}
    want = int(deploy["spec"].get("replicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    ready = int(st.get("readyReplicas") or 0)
    current = st.get("observedGeneration") == deploy["metadata"].get("generation")
    return int(st.get("replicas") or 0), ready, current and updated >= want and ready >= want


def running(pods: Sequence[Body], track: build.Track | None = None) -> list[Body]:
    """The Running pods not being deleted (of one track, or all)."""
    return [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
        and (track is None or (p["metadata"].get("labels") or {}).get(build.LABEL_TRACK) == track)
    ]


def artifact_fetch_failure(pods: Sequence[Body], versions: set[str | None]) -> str | None:
    """Why pods of `versions` cannot start: the failure their artifact-fetching init container
    reported (the message of its result, else its termination text), or why it could not be
    started (a missing Secret: CreateContainerConfigError), or None (pure)."""
    for pod in pods:
        if (pod["metadata"].get("labels") or {}).get(LABEL_MODEL_VERSION) not in versions - {None}:
            continue
        for cs in (pod.get("status") or {}).get("initContainerStatuses") or []:
            # The current run's end if it ended (exit 0: fetched), else the last run's.
            state, last = cs.get("state") or {}, cs.get("lastState") or {}
            ended = state.get("terminated") or last.get("terminated") or {}
            if cs.get("name") != build.FETCH_CONTAINER:
                continue
            name, waiting = pod["metadata"]["name"], state.get("waiting") or {}
            if ended.get("exitCode"):
                return f"pod {name} cannot fetch its artifact (exit {ended['exitCode']}): {_result_message(ended)}"
            if waiting.get("reason") == "CreateContainerConfigError":  # e.g. its Secret does not exist
                return f"pod {name} cannot start its artifact fetch: {waiting.get('message') or waiting['reason']}"
    return None


def _result_message(terminated: Body) -> str:
    """The `message` of the trainer's result JSON in a termination message, else its text."""
    text = str(terminated.get("message") or "").strip()
    try:
        result = json.loads(text)
    except ValueError:
        return text[-1000:]
    return str(result.get("message") or text)[-1000:] if isinstance(result, dict) else text[-1000:]


async def scrape_pods(scraper: Scraper, pods: Sequence[Body]) -> dict[str, scrape.PodSample]:
    """One scrape per pod, at once; pod name -> its sample. A pod whose scrape failed (None, or
    an injected scraper's exception) or whose text does not parse is absent: the others land."""
    texts = await asyncio.gather(*(scraper(p) for p in pods), return_exceptions=True)
    out: dict[str, scrape.PodSample] = {}
    for pod, text in zip(pods, texts, strict=True):
        name = pod["metadata"]["name"]
        if isinstance(text, BaseException):
            if not isinstance(text, Exception):
                raise text  # cancellation and the like are not a pod's failure
            log.warning("Scrape of pod %s failed: %r", name, text)
        elif text:
            try:
                out[name] = scrape.parse(text, name)
            except ValueError as e:
                log.warning("Could not parse metrics of pod %s: %s", name, e)
    return out


# --- rollout and canary (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class Apply:
    manifest: Body
    reads: build.Track | None = None  # the status reads this track's Deployment from the answer


@dataclass(frozen=True)
class Delete:
    kind: str
    name: str
    reads: build.Track | None = None  # the status reads no Deployment of this track afterwards


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


Step = Apply | Delete | Event


@dataclass(frozen=True)
class Rollout:
    """The rollout decision of one pass."""

    choice: resolve.Resolution
    desired: str | None  # the version to serve (the choice, else the one serving)
    serving: str | None  # the stable track's version once the steps ran
    canary: Body | None = None  # status.canary
    steps: tuple[Step, ...] = ()
    analyse: bool = False  # a canary runs: its pods are scraped and `canary_step` decides
    restarted: bool = False  # the canary (re)started: its counters start from zero
    problem: str | None = None  # why the rollout is held (status.message)


def service_steps(
    isvc: Body, spec: InferenceServiceSpec, hpa_left: bool, shadow_left: bool = False
) -> tuple[Step, ...]:
    """The Service, the shadow Service in shadow mode (deleted when the mode changed), and the
    HPA (applied, or deleted when autoscaling was turned off, so replicas belong to
    spec.replicas again)."""
    shadow = build.shadow_service(isvc, spec)
    steps: tuple[Step, ...] = (Apply(build.service(isvc, spec)),)
    if shadow is not None:
        steps += (Apply(shadow),)
    elif shadow_left:
        steps += (Delete("Service", build.shadow_service_name(isvc["metadata"]["name"])),)
    hpa = build.hpa(isvc, spec)
    if hpa is not None:
        return (*steps, Apply(hpa))
    name = build.deployment_name(isvc["metadata"]["name"], "stable")
    return (*steps, *([Delete("HorizontalPodAutoscaler", name)] if hpa_left else []))


def access_steps(
    isvc: Body, spec: InferenceServiceSpec, settings: Settings, policy_left: bool
) -> tuple[Step, ...]:
    """The NetworkPolicy (issue #19), applied before any Deployment so no serving pod runs
    unguarded; deleted when spec.access.networkPolicy was turned off."""
    policy = build_networkpolicy.network_policy(isvc, spec, settings)
    if policy is not None:
        return (Apply(policy),)
    return (Delete("NetworkPolicy", isvc["metadata"]["name"]),) if policy_left else ()


def decide_rollout(
    isvc: Body, spec: InferenceServiceSpec, seen: Observed, settings: Settings, now: str
) -> Rollout:
    """First rollout, rolling update, canary (see `_canary_rollout`) or steady state.

    An artifact no pod can mount (build.UnservableArtifact) holds the rollout: no steps, the
    builder's message in `problem`.
    """
    old_canary = (isvc.get("status") or {}).get("canary") or {}
    serving = served_version(seen.stable)
    rolled_back = {old_canary["modelVersion"]} if old_canary.get("phase") == "RolledBack" else set()
    choice = resolve.resolve(spec, list(seen.versions.values()), serving, rolled_back)
    desired = choice.name or serving
    held = Rollout(choice, desired, serving, canary=dict(old_canary) or None)
    if desired is None:
        return held
    try:
        if seen.stable is None or serving is None or serving not in seen.versions:
            manifest = build.deployment(
                isvc, spec, seen.versions[desired], settings, track="stable", replicas=spec.replicas
            )
            steps: tuple[Step, ...] = (Apply(manifest, "stable"), Event("RolledOut", f"Serving {desired}"))
            return dataclasses.replace(held, serving=desired, steps=steps)
        if desired != serving and spec.canary is None:
            manifest = build.deployment(
                isvc, spec, seen.versions[desired], settings, track="stable", replicas=spec.replicas
            )
            message = f"Rolling update {serving} -> {desired}: {choice.message}"
            return dataclasses.replace(
                held, serving=desired, steps=(Apply(manifest, "stable"), Event("RollingUpdate", message))
            )
        if desired != serving:
            return _canary_rollout(held, isvc, spec, seen, settings=settings, now=now)
        # Steady state: keep the stable Deployment as built (replicas follow spec / the scale subresource).
        manifest = build.deployment(
            isvc, spec, seen.versions[serving], settings, track="stable", replicas=spec.replicas
        )
        steps = (Apply(manifest, "stable"),)
        if seen.canary is not None:
            steps += (
                Delete("Deployment", build.deployment_name(isvc["metadata"]["name"], "canary"), "canary"),
            )
        return dataclasses.replace(held, steps=steps)
    except build.UnservableArtifact as e:
        return dataclasses.replace(held, problem=str(e))


def _canary_rollout(
    held: Rollout, isvc: Body, spec: InferenceServiceSpec, seen: Observed, *, settings: Settings, now: str
) -> Rollout:
    """A new version beside the stable one: the canary Deployment takes its share of the
    replicas (and so of the traffic) and the analysis (re)starts when the canary is new."""
    assert spec.canary is not None and held.desired is not None and held.serving is not None
    desired, serving = held.desired, held.serving
    stable_n, canary_n = challenger_replicas(spec)
    old = held.canary or {}
    restarted = (
        seen.canary is None or served_version(seen.canary) != desired or old.get("modelVersion") != desired
    )
    steps: list[Step] = []
    status = dict(old)
    if restarted:
        status = {"modelVersion": desired, "phase": "Progressing", "startedAt": now, "mode": spec.canary.mode}
        steps.append(Event("CanaryStarted", canary_started_message(spec, desired)))
    steps.append(
        Apply(
            build.deployment(isvc, spec, seen.versions[desired], settings, track="canary", replicas=canary_n),
            "canary",
        )
    )
    steps.append(
        Apply(
            build.deployment(isvc, spec, seen.versions[serving], settings, track="stable", replicas=stable_n)
        )
    )
    return dataclasses.replace(held, canary=status, steps=tuple(steps), analyse=True, restarted=restarted)


def challenger_replicas(spec: InferenceServiceSpec) -> tuple[int, int]:
    """(stable, canary) replicas: the traffic split, or in shadow mode every replica serving and
    one challenger (none while scaled to zero)."""
    assert spec.canary is not None
    if build.shadowing(spec):
        return spec.replicas, min(spec.replicas, 1)
    return build.split_replicas(spec.replicas, spec.canary.traffic_percent)


def canary_started_message(spec: InferenceServiceSpec, desired: str) -> str:
    assert spec.canary is not None
    if not build.shadowing(spec):
        return f"Canary {desired} gets {spec.canary.traffic_percent}% of traffic for {spec.canary.duration_seconds}s"
    cfg = shadow.settings(spec.canary)
    return (
        f"Shadow analysis of {desired}: {cfg.percent}% of requests mirrored, no user traffic; promoted on "
        f"{cfg.promote_on} after at least {cfg.min_pairs} labelled pairs, {cfg.on_inconclusive} at "
        f"deadlineSeconds {cfg.deadline_seconds}"
    )


def canary_step(
    isvc: Body,
    spec: InferenceServiceSpec,
    rollout: Rollout,
    stats: canary.CanaryStats,
    *,
    versions: Mapping[str, Body],
    settings: Settings,
    now: dt.datetime,
    counts: shadow.ShadowCounts | None = None,
) -> Rollout:
    """Promote, roll back or keep analysing a running canary (serving.canary.decide, or in
    shadow mode `shadow_judgement`), from the canary pods' statistics since it started and the
    champion pods' shadow `counts`; the steps are added after the rollout's."""
    assert spec.canary is not None and rollout.canary is not None
    assert rollout.desired is not None and rollout.serving is not None
    desired, serving = rollout.desired, rollout.serving
    started = parse_time(rollout.canary.get("startedAt")) or now
    status = {
        **rollout.canary,
        "requests": stats.requests,
        "errorRate": round(stats.errors / stats.requests, 4) if stats.requests else None,
        "latencyP95Ms": stats.p95_ms,
    }
    events: tuple[Step, ...] = ()
    if build.shadowing(spec):
        decision, judged, events = shadow_judgement(
            spec.canary, rollout.canary, started, now=now, stats=stats, counts=counts or shadow.ShadowCounts()
        )
        status |= judged
    else:
        decision = canary.decide(spec.canary, started, now, stats)
        status |= split_quality(spec.canary, stats)
    status["reason"] = decision.message
    rollout = dataclasses.replace(rollout, steps=rollout.steps + events)
    remove = Delete("Deployment", build.deployment_name(isvc["metadata"]["name"], "canary"))
    if decision.action == "promote":
        manifest = build.deployment(
            isvc, spec, versions[desired], settings, track="stable", replicas=spec.replicas
        )
        steps: tuple[Step, ...] = (
            Apply(manifest, "stable"),
            remove,
            Event("CanaryPromoted", f"Promoted {desired}: {decision.message}"),
        )
        return dataclasses.replace(
            rollout, serving=desired, canary=status | {"phase": "Promoted"}, steps=rollout.steps + steps
        )
    if decision.action == "rollback":
        manifest = build.deployment(
            isvc, spec, versions[serving], settings, track="stable", replicas=spec.replicas
        )
        steps = (
            remove,
            Apply(manifest),
            Event("CanaryRolledBack", f"Rolled back {desired}: {decision.message}", warning=True),
        )
        return dataclasses.replace(
            rollout, canary=status | {"phase": "RolledBack"}, steps=rollout.steps + steps
        )
    return dataclasses.replace(rollout, canary=status)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def split_quality(spec: Canary, stats: canary.CanaryStats) -> dict[str, Any]:
    """status.canary's labelled-quality fields in split mode (issue #22): both tracks' labelled
    rows once there are any, and the verdict with both scores, the effect and the p-value once
    it is judged (serving.canary.quality)."""
    c, s = stats.canary_labelled, stats.stable_labelled
    if c.classification is None and s.classification is None:
        return {}
    fields: dict[str, Any] = {"canaryLabelled": c.n, "stableLabelled": s.n}
    found = canary.quality(spec, stats)
    return fields | (verdict_fields(found) if found is not None else {})


def verdict_fields(found: Verdict) -> dict[str, Any]:
    """status.canary's verdict, scores, effect and p-value (rounded: no status write per digit)."""
    return {
        "verdict": str(found.outcome),
        "championScore": _round(found.champion_score),
        "challengerScore": _round(found.challenger_score),
        "effect": _round(found.effect),
        "pValue": None if found.p_value is None else float(f"{found.p_value:.3g}"),
    }


def shadow_judgement(
    spec: Canary,
    old: Body,
    started: dt.datetime,
    *,
    now: dt.datetime,
    stats: canary.CanaryStats,
    counts: shadow.ShadowCounts,
) -> tuple[canary.Decision, dict[str, Any], tuple[Step, ...]]:
    """The shadow verdict and decision (serving.shadow), status.canary's shadow fields, and a
    ShadowVerdict Event when the verdict changed (not for the first Inconclusive)."""
    found = shadow.verdict(counts, shadow.settings(spec))
    decision = shadow.decide(spec, started, now, found, stats)
    fields = {
        "mode": "shadow",
        "pairs": found.n,
        **verdict_fields(found),
        "agreement": _round(counts.agreement),
    }
    previous = old.get("verdict")
    events: tuple[Step, ...] = ()
    if previous != fields["verdict"] and (previous is not None or found.outcome != Outcome.INCONCLUSIVE):
        worse = found.outcome == Outcome.WORSE
        events = (Event("ShadowVerdict", f"{old.get('modelVersion')}: {found.message}", warning=worse),)
    return decision, {k: v for k, v in fields.items() if v is not None}, events


# --- monitoring (pure) -----------------------------------------------------------------------


def scrape_due(
    spec: InferenceServiceSpec,
    serving: str | None,
    old_metrics: Body,
    scraped_at: dt.datetime | None,
    now: dt.datetime,
) -> bool:
    """Whether this pass scrapes every running pod: a version is served and the interval passed
    since the last scrape this process made or status.metrics records."""
    last = parse_time(old_metrics.get("lastScrape"))
    return bool(serving) and scrape.due(now, spec.monitoring.interval_seconds, last, scraped_at)


@dataclass(frozen=True)
class Monitoring:
    metrics: dict[str, Any]  # status.metrics (camelCase), before the retraining's driftBreaches
    scraped: dict[str, Any] | None = None  # this scrape's aggregate for the triggers; None: no scrape
    totals: scrape.PodTotals | None = None  # kept for the next scrape's rates


def monitoring(
    old_metrics: Body, samples: Sequence[scrape.PodSample] | None, previous: scrape.PodTotals | None, now: str
) -> Monitoring:
    """status.metrics after a scrape (`samples`; None: no scrape this pass). The stored metrics
    change, with lastScrape, only when a rounded value changed (no status write per interval)."""
    if samples is None:
        return Monitoring(dict(old_metrics))
    return measured(old_metrics, *scrape.aggregate(samples, previous), now)


def measured(old_metrics: Body, aggregated: dict[str, Any], totals: scrape.PodTotals, now: str) -> Monitoring:
    """status.metrics from a fresh aggregate (pod scrapes or PromQL): the stored metrics change,
    with lastScrape, only when a rounded value changed."""
    metrics = dict(old_metrics)
    fresh = scrape.rounded(aggregated)
    if scrape.changed(metrics, fresh):
        metrics = Metrics.model_validate(fresh).to_dict() | {"lastScrape": now}
    return Monitoring(metrics, aggregated, totals)


# --- metrics from Prometheus (pure; issue #21) -------------------------------------------------

METRICS_AVAILABLE: Final = "MetricsAvailable"
# prometheus.QueryFailed reasons -> MetricsAvailable=False reasons (each with its Warning Event).
PROMETHEUS_FAILURES: Final = {
    prometheus.UNREACHABLE: "PrometheusUnreachable",
    prometheus.TIMEOUT: "PrometheusTimeout",
    prometheus.HTTP: "PrometheusHTTPError",
    prometheus.TOO_LARGE: "PrometheusAnswerTooLarge",
    prometheus.MALFORMED: "PrometheusBadAnswer",
    prometheus.QUERY: "PrometheusQueryError",
}
NO_DATA: Final = "PrometheusNoData"
QUERIED: Final = "PrometheusQueried"


@dataclass(frozen=True)
class Measured:
    """This pass's measurements and what they decided: the rollout after the canary analysis,
    status.metrics, and (with prometheusUrl) the MetricsAvailable condition."""

    rollout: Rollout
    monitored: Monitoring
    source: Cond | None = None
    pods: Sequence[Body] | None = None  # the pods listed (None: the Prometheus path lists none)


def prometheus_query(
    isvc: Body, spec: InferenceServiceSpec, rollout: Rollout, *, due: bool, min_window: int, now: dt.datetime
) -> str | None:
    """The PromQL query of this pass (monitor.promql.query), None when nothing needs one: the
    metrics over max(intervalSeconds, min_window) when due, the canary since it started."""
    canary = None
    if rollout.analyse and rollout.canary is not None and rollout.desired is not None:
        started = parse_time(rollout.canary.get("startedAt")) or now
        seconds = math.ceil((now - started).total_seconds())
        canary = promql.CanaryWindow(
            rollout.desired, seconds, shadow=build.shadowing(spec), stable=rollout.serving
        )
    window = max(spec.monitoring.interval_seconds, min_window) if due else None
    if window is None and canary is None:
        return None
    meta = isvc["metadata"]
    served = [v for v in (rollout.serving, canary.version if canary else None) if v]
    return promql.query(
        meta["namespace"], meta["name"], window_seconds=window, versions=served, canary=canary
    )


def from_prometheus(
    isvc: Body,
    spec: InferenceServiceSpec,
    rollout: Rollout,
    answer: Sequence[promql.Sample] | prometheus.QueryFailed,
    *,
    due: bool,
    previous: scrape.PodTotals | None,
    versions: Mapping[str, Body],
    settings: Settings,
    now: dt.datetime,
) -> Measured:
    """The decisions of a pass that queried Prometheus. A failed query, or no series where the
    pass needs some, holds them: no canary decision, no new status.metrics (so no metric-driven
    retraining trigger); MetricsAvailable=False says why, with a Warning Event when it starts."""
    url = str(spec.monitoring.prometheus_url)
    old_metrics = (isvc.get("status") or {}).get("metrics") or {}
    held = Monitoring(dict(old_metrics))
    if isinstance(answer, prometheus.QueryFailed):
        cond = Cond(METRICS_AVAILABLE, "False", PROMETHEUS_FAILURES[answer.reason], f"Prometheus {answer}")
        return Measured(_with_event(isvc, rollout, cond), held, cond)
    found = promql.signals(answer)
    meta = isvc["metadata"]
    missing = []
    if due and not found.seen:
        missing.append(f"of the pods of {meta['namespace']}/{meta['name']}")
    if rollout.analyse and not found.canary.pods:
        missing.append(f"of the canary pods of {rollout.desired}")
    if rollout.analyse and found.canary.pods:
        stats = promql.canary_stats(found.canary)
        rollout = canary_step(
            isvc, spec, rollout, stats, versions=versions, settings=settings, now=now, counts=found.shadow
        )
    monitored = held
    if due and found.seen:
        monitored = measured(old_metrics, *promql.metrics(found, previous), format_time(now))
    if missing:
        message = f"Prometheus {url} has no series {' nor '.join(missing)} yet (labels namespace, inference_service, track); decisions on them are held"
        cond = Cond(METRICS_AVAILABLE, "False", NO_DATA, message)
    else:
        cond = Cond(METRICS_AVAILABLE, "True", QUERIED, f"Read the serving metrics from Prometheus {url}")
    return Measured(_with_event(isvc, rollout, cond), monitored, cond)


def _with_event(isvc: Body, rollout: Rollout, cond: Cond) -> Rollout:
    """The rollout with the Event a MetricsAvailable change owes: a Warning when a failure reason
    starts, a Normal one when metrics are available again (none otherwise)."""
    old = conditions.get((isvc.get("status") or {}).get("conditions"), METRICS_AVAILABLE) or {}
    if cond.status == "False" and (old.get("status"), old.get("reason")) != ("False", cond.reason):
        event = Event(cond.reason, cond.message, warning=True)
    elif cond.status == "True" and old.get("status") == "False":
        event = Event("MetricsAvailable", cond.message)
    else:
        return rollout
    return dataclasses.replace(rollout, steps=(*rollout.steps, event))


def carried_source(isvc: Body, spec: InferenceServiceSpec) -> Cond | None:
    """MetricsAvailable as it stands, for a pass that queries nothing (None without prometheusUrl)."""
    old = conditions.get((isvc.get("status") or {}).get("conditions"), METRICS_AVAILABLE)
    if spec.monitoring.prometheus_url is None or old is None:
        return None
    return Cond(METRICS_AVAILABLE, old["status"], old["reason"], old.get("message", ""))


# --- retraining (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainingPlan:
    decision: triggers.TriggerDecision
    state: triggers.TriggerState
    job: dict[str, Any] | None = None  # the TrainingJob to create
    problem: str | None = None  # why a fired trigger creates nothing (status.message)


def plan_retraining(
    isvc: Body,
    spec: InferenceServiceSpec,
    seen: Observed,
    *,
    runs: Mapping[str, Body | None],
    serving: str | None,
    scraped: Mapping[str, Any] | None,
    now: dt.datetime,
) -> RetrainingPlan:
    """Fire a retraining run or not (monitor.triggers.evaluate) and build the run that fires.

    `runs`: the TrainingJobs of status.retraining.activeJobs (None: gone); the finished and the
    gone ones no longer count against maxConcurrent. `scraped`: this pass's scrape, or None.
    """
    assert spec.retraining is not None
    state = triggers.TriggerState.from_status(isvc.get("status"))
    active = tuple(
        job
        for job in state.active_jobs
        if (run := runs.get(job)) and (run.get("status") or {}).get("phase") not in TERMINAL
    )
    meta = isvc["metadata"]
    try:
        build_retraining.retraining_base(spec, seen.source)
        unavailable = None
    except build_retraining.SourceNotFound as e:
        unavailable = str(e)
    decision, new_state = triggers.evaluate(
        spec.retraining,
        dataclasses.replace(state, active_jobs=active),
        scraped,
        meta.get("annotations") or {},
        now,
        isvc_name=meta["name"],
        unavailable=unavailable,
    )
    if not (decision.fire and decision.job_name):
        problem = decision.message if decision.reason == triggers.Reason.SOURCE_NOT_FOUND else None
        return RetrainingPlan(decision, new_state, problem=problem)
    job = build_retraining.retraining_job(
        isvc,
        spec,
        name=decision.job_name,
        trigger=str(decision.trigger),
        reason=decision.message,
        source=seen.source,
        served=seen.versions.get(serving or ""),
    )
    return RetrainingPlan(decision, new_state, job)


@dataclass(frozen=True)
class Retrained:
    status: dict[str, Any]  # status.retraining
    drift_breaches: int  # status.metrics.driftBreaches
    problem: str | None = None


def retraining_status(
    isvc: Body,
    plan: RetrainingPlan,
    last_run: Body | None,
    versions: Mapping[str, Body],
    rollout: Rollout,
) -> Retrained:
    """status.retraining after the plan, with lastOutcome: what became of the last run
    (`last_run`: the TrainingJob of run number `plan.state.count`, None when gone)."""
    previous = (isvc.get("status") or {}).get("retraining")
    out = triggers.retraining_status(previous, plan.state, plan.decision)
    if plan.state.count:
        produced = ((last_run or {}).get("status") or {}).get("modelVersion")
        in_canary = (
            rollout.canary if rollout.canary and rollout.canary.get("phase") == "Progressing" else None
        )
        outcome = triggers.run_outcome(
            triggers.retraining_job_name(isvc["metadata"]["name"], plan.state.count),
            last_run,
            versions.get(produced or ""),
            serving=rollout.serving,
            canary=in_canary.get("modelVersion") if in_canary else None,
            resolution=rollout.choice.message,
        )
        if outcome:
            out["lastOutcome"] = outcome
    return Retrained(out, plan.state.drift_breaches, plan.problem)


# --- act --------------------------------------------------------------------------------------


async def act(ctx: Context, isvc: Body, steps: Sequence[Step], seen: Observed) -> dict[str, Body | None]:
    """Run the steps in order -> the Deployment per track the status reads."""
    ns = isvc["metadata"]["namespace"]
    deployments: dict[str, Body | None] = {"stable": seen.stable, "canary": seen.canary}
    for step in steps:
        if isinstance(step, Apply):
            result = await ctx.apply(step.manifest)
            if step.reads is not None:
                deployments[step.reads] = result
        elif isinstance(step, Delete):
            await ctx.delete_child(step.kind, ns, step.name)
            if step.reads is not None:
                deployments[step.reads] = None
        else:
            await ctx.event(isvc, step.reason, step.message, warning=step.warning)
            if step.reason in CANARY_DECISIONS:  # the steps before it promoted or rolled back
                ctx.metrics.canary_decided(ns, isvc["metadata"]["name"], CANARY_DECISIONS[step.reason])
    return deployments


async def retrain(
    ctx: Context,
    isvc: Body,
    spec: InferenceServiceSpec,
    seen: Observed,
    rollout: Rollout,
    *,
    scraped: Body | None,
    now: dt.datetime,
) -> Retrained:
    """Read the active runs, plan, create the run that fires, read the last run for its outcome."""
    ns = isvc["metadata"]["namespace"]
    state = triggers.TriggerState.from_status(isvc.get("status"))
    runs = {job: await ctx.kube.get("TrainingJob", ns, job) for job in state.active_jobs}
    plan = plan_retraining(isvc, spec, seen, runs=runs, serving=rollout.serving, scraped=scraped, now=now)
    if plan.problem and not _was_blocked_by_source(isvc):
        await ctx.event(isvc, triggers.Reason.SOURCE_NOT_FOUND, f"Retraining: {plan.problem}", warning=True)
    if plan.job is not None:
        _, created = await ctx.kube.create(plan.job)
        if created:
            ctx.metrics.triggered(ns, isvc["metadata"]["name"], str(plan.decision.trigger))
            message = f"Created TrainingJob {plan.decision.job_name}: {plan.decision.message}"
            await ctx.event(isvc, "RetrainingTriggered", message)
    last_run = None
    if plan.state.count:
        last = triggers.retraining_job_name(isvc["metadata"]["name"], plan.state.count)
        last_run = runs[last] if last in runs else await ctx.kube.get("TrainingJob", ns, last)
    return retraining_status(isvc, plan, last_run, seen.versions, rollout)


def _was_blocked_by_source(isvc: Body) -> bool:
    """The last status already said a trigger waits for a missing source (its Event was sent)."""
    cond = get((isvc.get("status") or {}).get("conditions"), "Retraining") or {}
    return cond.get("reason") == triggers.Reason.SOURCE_NOT_FOUND


# --- status (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What the status is computed from: this pass's decisions and the Deployments they left."""

    rollout: Rollout
    versions: Mapping[str, Body]
    stable: Body | None
    canary: Body | None  # the canary Deployment
    metrics: Body  # status.metrics from `monitoring`
    retrained: Retrained | None = None  # None: no spec.retraining
    fetch_failure: str | None = None  # `artifact_fetch_failure` of the served or desired version
    source: Cond | None = None  # MetricsAvailable (only with spec.monitoring.prometheusUrl)


def traffic(facts: Facts) -> list[dict[str, Any]]:
    """status.traffic: the served version's share (by replicas), and the canary's while it runs."""
    serving, status = facts.rollout.serving, facts.rollout.canary
    if not serving:
        return []
    replicas, _, _ = readiness(facts.stable)
    c_replicas, _, _ = readiness(facts.canary)
    stable_percent = round(100 * replicas / max(replicas + c_replicas, 1))
    if (status or {}).get("mode") == "shadow":  # the challenger answers no user
        stable_percent = 100
    out = [{"modelVersion": serving, "percent": stable_percent, "replicas": replicas}]
    if facts.canary is not None and status and status.get("phase") == "Progressing":
        out.append(
            {"modelVersion": status["modelVersion"], "percent": 100 - stable_percent, "replicas": c_replicas}
        )
    return out


def _drifted(spec: InferenceServiceSpec, metrics: Body) -> list[Cond]:
    if spec.retraining is None or metrics.get("drift") is None:
        return []
    threshold = spec.monitoring.drift.threshold
    above = float(metrics["drift"]) > threshold
    reason = "DriftAboveThreshold" if above else "DriftBelowThreshold"
    return [Cond("Drifted", tf(above), reason, f"drift {metrics['drift']} vs threshold {threshold}")]


SHADOW_VERDICT_STATUS: Final[Mapping[str, Literal["True", "False", "Unknown"]]] = {
    "Better": "True",
    "NotWorse": "True",
    "Worse": "False",
    "Inconclusive": "Unknown",
}


def _shadow_verdict(canary_status: Body | None) -> list[Cond]:
    """ShadowVerdict: True (Better, NotWorse), False (Worse) or Unknown (Inconclusive), while a
    shadow analysis has a verdict, until the next canary starts."""
    verdict = (canary_status or {}).get("verdict")
    if verdict is None or (canary_status or {}).get("mode") != "shadow":  # split: status.canary only
        return []
    message = str((canary_status or {}).get("reason") or "")
    return [Cond("ShadowVerdict", SHADOW_VERDICT_STATUS[verdict], str(verdict), message)]


def compute_status(isvc: Body, spec: InferenceServiceSpec, facts: Facts, now: str) -> dict[str, Any]:
    """The whole status from the facts of this pass (pure)."""
    old = isvc.get("status") or {}
    generation = int(isvc["metadata"].get("generation") or 1)
    rollout, retrained = facts.rollout, facts.retrained
    choice, desired, serving, canary_status = rollout.choice, rollout.desired, rollout.serving, rollout.canary
    metrics = dict(facts.metrics)
    if retrained is not None and (metrics or retrained.drift_breaches):
        metrics["driftBreaches"] = retrained.drift_breaches
    replicas, ready_replicas, rolled_out = readiness(facts.stable)
    ready = bool(serving) and rolled_out and (ready_replicas >= 1 or spec.replicas == 0)
    problems = [choice.message] if choice.name is None else []
    fetch_failed = facts.fetch_failure if not rolled_out else None
    problems += [p for p in (rollout.problem, retrained.problem if retrained else None, fetch_failed) if p]
    message = "; ".join(problems) or (f"serving {serving}" if serving else "no version to serve yet")
    reason = "Serving" if ready else ("NoServableVersion" if not serving else "RollingOut")
    conds = [
        Cond("VersionResolved", tf(choice.name is not None), str(choice.reason), choice.message),
        Cond(
            "RolledOut",
            tf(rolled_out and desired == serving),
            "RolledOut" if rolled_out else (FETCH_FAILED if fetch_failed else "Progressing"),
            fetch_failed or f"{ready_replicas}/{replicas} ready",
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
        *kstatus(
            Cond(READY, tf(ready), reason, message),
            in_progress=bool(desired and desired != serving) or not rolled_out,
            message=message,
        ),
        *_drifted(spec, metrics),
        *_shadow_verdict(canary_status),
        *([facts.source] if facts.source is not None else []),
    ]
    if retrained is not None and retrained.problem and not retrained.status.get("activeJobs"):
        conds.append(Cond("Retraining", "False", triggers.Reason.SOURCE_NOT_FOUND, retrained.problem))
    elif retrained is not None:
        running_, why, what = triggers.retraining_condition(retrained.status)
        conds.append(Cond("Retraining", tf(running_), why, what))
    serving_mv = facts.versions.get(serving or "")
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge(old.get("conditions"), conds, generation, now),
        "url": build.url(isvc),
        "grpcAddress": build.grpc_address(isvc, spec),
        "modelVersion": serving,
        "version": int(serving_mv["spec"]["version"]) if serving_mv else None,
        "desiredModelVersion": choice.name,
        "replicas": replicas,
        "readyReplicas": ready_replicas,
        "selector": build.pod_selector(isvc["metadata"]["name"]),
        "traffic": traffic(facts) or None,
        "canary": canary_status,
        "metrics": metrics or None,
        "retraining": retrained.status if retrained else None,
        "message": message,
    }
    return {k: v for k, v in status.items() if v is not None}


# --- the pass ---------------------------------------------------------------------------------


async def reconcile(ctx: Context, isvc: Body) -> bool:
    """One pass (see the module docstring). Returns True only for a spec that does not parse."""
    ns = isvc["metadata"]["namespace"]
    try:
        spec = InferenceServiceSpec.model_validate(isvc["spec"])
    except ValidationError as e:
        await ctx.write_invalid_spec(isvc, str(e))
        return True
    if refused := tenancy.refused(spec, ctx.settings):
        # No Deployment is applied with what the policy refuses; one already running keeps
        # serving what it was allowed to.
        await ctx.write_invalid_spec(isvc, "; ".join(refused), tenancy.NOT_PERMITTED)
        return True
    now_dt = ctx.clock()
    now = format_time(now_dt)
    seen = await observe(ctx, isvc, spec)
    rollout = decide_rollout(isvc, spec, seen, ctx.settings, now)
    if spec.monitoring.prometheus_url:
        result = await measure_prometheus(ctx, isvc, spec, rollout, seen=seen, now=now_dt)
    else:
        result = await measure_pods(ctx, isvc, spec, rollout, seen=seen, now=now_dt)
    rollout, monitored = result.rollout, result.monitored
    pods = result.pods if result.pods is not None else await _stuck_pods(ctx, isvc, rollout, seen)
    children = service_steps(isvc, spec, seen.hpa_left, seen.shadow_left) + access_steps(
        isvc, spec, ctx.settings, seen.policy_left
    )
    deployments = await act(ctx, isvc, children + rollout.steps, seen)
    retrained = None
    if spec.retraining is not None:
        retrained = await retrain(ctx, isvc, spec, seen, rollout, scraped=monitored.scraped, now=now_dt)
    fetch_failure = artifact_fetch_failure(pods, {rollout.serving, rollout.desired})
    facts = Facts(
        rollout,
        seen.versions,
        deployments["stable"],
        deployments["canary"],
        monitored.metrics,
        retrained,
        fetch_failure=fetch_failure,
        source=result.source,
    )
    old = isvc.get("status") or {}
    status = compute_status(isvc, spec, facts, now)
    if fetch_failure and _rolled_out_reason(status) == FETCH_FAILED != _rolled_out_reason(old):
        await ctx.event(isvc, FETCH_FAILED, fetch_failure, warning=True)  # once per transition
    await ctx.write_status(isvc, status)
    # The versions whose stage or retention depends on this status get a pass, after the write,
    # so the pass reads the new status from the store.
    before, after = versions_named(old), versions_named(status)
    if before != after:
        for mv_name in before | after:
            ctx.kick("ModelVersion", ns, mv_name)
    return False


def _rolled_out_reason(status: Body) -> str | None:
    return (get(status.get("conditions"), "RolledOut") or {}).get("reason")


async def _stuck_pods(ctx: Context, isvc: Body, rollout: Rollout, seen: Observed) -> Sequence[Body]:
    """Without a pod scrape (prometheusUrl), pods are listed only while a Deployment is not
    rolled out, which is when a serving pod's artifact fetch can have failed."""
    deploys = [d for d in (seen.stable, seen.canary) if d is not None]
    if rollout.desired is None or (deploys and all(readiness(d)[2] for d in deploys)):
        return []
    return await ctx.kube.list(
        "Pod", isvc["metadata"]["namespace"], {LABEL_INFERENCE_SERVICE: isvc["metadata"]["name"]}
    )


def _pace(
    ctx: Context, isvc: Body, spec: InferenceServiceSpec, rollout: Rollout, now: dt.datetime
) -> tuple[Body, bool]:
    """(status.metrics as they stand, whether this pass reads every pod's metrics: `scrape_due`)."""
    old_metrics = (isvc.get("status") or {}).get("metrics") or {}
    key = (isvc["metadata"]["namespace"], isvc["metadata"]["name"])
    return old_metrics, scrape_due(spec, rollout.serving, old_metrics, ctx.scrapes.scraped_at.get(key), now)


async def measure_pods(
    ctx: Context,
    isvc: Body,
    spec: InferenceServiceSpec,
    rollout: Rollout,
    *,
    seen: Observed,
    now: dt.datetime,
) -> Measured:
    """Scrape the pods a decision needs (the canary's while it is analysed, every running pod's
    when the interval is due), decide the canary, and compute status.metrics."""
    ns, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
    memory = ctx.scrapes
    old_metrics, due = _pace(ctx, isvc, spec, rollout, now)
    # Pods are read only when something is (to be) served: scraping and canaries need them.
    pods = await ctx.kube.list("Pod", ns, {LABEL_INFERENCE_SERVICE: name}) if rollout.desired else []
    canary_pods = running(pods, "canary") if rollout.analyse else []
    # Shadow mode: the champion's pods count the paired outcomes; split mode: the stable track's
    # pods count their own labelled rows (issue #22).
    champions = running(pods, "stable") if rollout.analyse else []
    wanted = {p["metadata"]["name"]: p for p in [*canary_pods, *champions, *(running(pods) if due else [])]}
    samples = await scrape_pods(memory.scraper, list(wanted.values()))
    if rollout.analyse:
        key, stable_key = (ns, name, "canary"), (ns, name, "stable")
        previous = None if rollout.restarted else memory.totals.get(key)
        _, memory.totals[key] = scrape.aggregate(_of(samples, canary_pods), previous)
        stable = [s for s in _of(samples, champions) if rollout.serving in s.versions]
        previous = None if rollout.restarted else memory.totals.get(stable_key)
        memory.totals[stable_key] = scrape.track_totals(stable, previous)
        stats = scrape.canary_stats(memory.totals[key], memory.totals[stable_key])
        shadowing = bool(champions) and build.shadowing(spec)
        counts = scrape.shadow_counts(_of(samples, champions), str(rollout.desired)) if shadowing else None
        rollout = canary_step(
            isvc, spec, rollout, stats, versions=seen.versions, settings=ctx.settings, now=now, counts=counts
        )
    monitored = monitoring(old_metrics, None, None, format_time(now))
    if due:
        memory.scraped_at[(ns, name)] = now
        monitored = monitoring(
            old_metrics, _of(samples, running(pods)), memory.totals.get((ns, name, "all")), format_time(now)
        )
        if monitored.totals is not None:
            memory.totals[(ns, name, "all")] = monitored.totals
    return Measured(rollout, monitored, pods=pods)


async def measure_prometheus(
    ctx: Context,
    isvc: Body,
    spec: InferenceServiceSpec,
    rollout: Rollout,
    *,
    seen: Observed,
    now: dt.datetime,
) -> Measured:
    """The same measurements from one PromQL query to spec.monitoring.prometheusUrl (no pod is
    listed or scraped); a failed query holds the decisions (`from_prometheus`)."""
    ns, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
    memory = ctx.scrapes
    old_metrics, due = _pace(ctx, isvc, spec, rollout, now)
    min_window = ctx.settings.prometheus_min_window_seconds
    expr = prometheus_query(isvc, spec, rollout, due=due, min_window=min_window, now=now)
    if expr is None:
        return Measured(rollout, Monitoring(dict(old_metrics)), carried_source(isvc, spec))
    if due:
        memory.scraped_at[(ns, name)] = now
    answer: Sequence[promql.Sample] | prometheus.QueryFailed
    try:
        answer = await memory.prometheus.query(str(spec.monitoring.prometheus_url), expr)
    except prometheus.QueryFailed as e:
        answer = e
    result = from_prometheus(
        isvc,
        spec,
        rollout,
        answer,
        due=due,
        previous=memory.totals.get((ns, name, "all")),
        versions=seen.versions,
        settings=ctx.settings,
        now=now,
    )
    if result.monitored.totals is not None:
        memory.totals[(ns, name, "all")] = result.monitored.totals
    return result


def _of(samples: Mapping[str, scrape.PodSample], pods: Sequence[Body]) -> list[scrape.PodSample]:
    return [samples[p["metadata"]["name"]] for p in pods if p["metadata"]["name"] in samples]


def versions_named(status: Body) -> set[str]:
    """The ModelVersions an InferenceService status serves, rolls out or routes traffic to."""
    named = {status.get("modelVersion"), status.get("desiredModelVersion")}
    named |= {t.get("modelVersion") for t in status.get("traffic") or []}
    return {str(n) for n in named if n}


def forget(ctx: Context, namespace: str, name: str) -> None:
    """Drop what this process remembers of a deleted InferenceService (scrape totals, children)."""
    ctx.scrapes.forget(namespace, name)
    children = {build.deployment_name(name, "stable"), build.deployment_name(name, "canary")}
    ctx.forget_children(namespace, {name, build.shadow_service_name(name), *children})


def interval(isvc: Body) -> float | None:
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
