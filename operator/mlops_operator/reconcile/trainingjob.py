"""Reconcile a TrainingJob: validate → (tuning Indexed Job →) training Job → ModelVersion.

Level-triggered and restart-safe: every pass re-reads the children, creates only what is
missing (deterministic names, 409 is success), and writes status only when it changed.
The ModelVersion is found by its `mlops.dev/training-job` label before one is created, so
a restart between creating it and recording it in status creates no second one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from mlops_contract.api.common import LABEL_INFERENCE_SERVICE, LABEL_TRAINING_JOB
from mlops_contract.api.trainingjob import TrainingJobSpec, trial_count
from mlops_contract.checks import check_spec
from mlops_contract.estimators import ESTIMATORS
from mlops_operator import tenancy
from mlops_operator.build import modelversion as mv_build
from mlops_operator.build import trainingjob as build
from mlops_operator.reconcile import storage
from mlops_operator.reconcile.context import Context
from mlops_operator.reconcile.pods import (
    PodResult,
    failure_message,
    failure_reason,
    job_condition,
    last_failure,
    pod_result,
    results,
    succeeded,
)
from mlops_operator.reconcile.trials import best_record, record_trials
from mlops_operator.status import numbers
from mlops_operator.status.conditions import READY, Cond, kstatus, merge, tf

TERMINAL: Final = ("Succeeded", "Failed")
MAX_VERSION_ATTEMPTS: Final = 5


def _fail(reason: str, message: str) -> dict[str, Any]:
    return {"phase": "Failed", "reason": reason, "message": message}


async def _pods(ctx: Context, ns: str, tj: str, step: str) -> list[PodResult]:
    return await results(ctx.kube, ns, {LABEL_TRAINING_JOB: tj, build.LABEL_STEP: step}, build.CONTAINER)


async def _ensure_model_version(
    ctx: Context, tj: Mapping[str, Any], spec: TrainingJobSpec, result: Mapping[str, Any]
) -> tuple[str, bool]:
    """Find or create this run's ModelVersion -> (name, created)."""
    meta = tj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    # Read from the API server, not the store: a watch that lags must never let one run
    # register its model twice.
    existing = await ctx.kube.list("ModelVersion", ns, {LABEL_TRAINING_JOB: name}, fresh=True)
    if existing:
        return existing[0]["metadata"]["name"], False
    async with ctx.model_lock(ns, spec.model):
        existing = await ctx.kube.list("ModelVersion", ns, {LABEL_TRAINING_JOB: name}, fresh=True)
        if existing:
            return existing[0]["metadata"]["name"], False
        versions = [
            int(m["spec"].get("version", 0)) for m in await ctx.of_model("ModelVersion", ns, spec.model)
        ]
        version = max(versions, default=0) + 1
        for _ in range(MAX_VERSION_ATTEMPTS):
            mv = mv_build.model_version_manifest(tj, spec, result, version, ctx.settings.trainer_image)
            _, created = await ctx.kube.create(mv)
            if created:
                return mv["metadata"]["name"], True
            version += 1  # that name is taken (a user's version): take the next number
        raise RuntimeError(f"could not find a free version number for model {spec.model}")


def tuning_outcome(spec: TrainingJobSpec, trials: int, recorded: list[dict[str, Any]]) -> dict[str, Any]:
    """Facts of a completed tuning Job (pure): the best recorded trial's params, or why none is picked.

    A best is picked only from a complete set of scored trials, or from at least
    `tuning.minTrials` of them (issue #19: a trial stopped by an eviction used to leave a hole
    the best was silently picked around). `recorded` are the trials in status (reconcile/trials.py),
    so a finished trial whose pod a drain deleted still counts (issue #23)."""
    assert spec.tuning is not None
    scored = {int(t["index"]): t for t in recorded}
    facts: dict[str, Any] = {"trialsCompleted": len(scored)}
    required = spec.tuning.min_trials or trials
    if len(scored) < min(required, trials):
        missing = sorted(set(range(trials)) - set(scored))
        shown = ", ".join(map(str, missing[:20])) + (" …" if len(missing) > 20 else "")
        allowed = (
            f"spec.tuning.minTrials is {spec.tuning.min_trials}"
            if spec.tuning.min_trials
            else ("set spec.tuning.minTrials to accept fewer")
        )
        return facts | _fail(
            "IncompleteTuning",
            f"{len(scored)} of {trials} trials reported a score (missing: {shown}); {allowed}",
        )
    best = best_record(scored.values())
    if best is None:
        return facts | _fail("TuningFailed", "no trial reported a score")
    return facts | {"bestParams": dict(best.get("params") or {}), "bestTrial": int(best["index"])}


async def _check(ctx: Context, tj: Mapping[str, Any], spec: TrainingJobSpec) -> dict[str, Any] | None:
    """Facts that stop the run before any pod (invalid spec, missing storage), else None."""
    status = tj.get("status") or {}
    if refused := tenancy.refused(spec, ctx.settings):
        return _fail(tenancy.NOT_PERMITTED, "; ".join(refused))
    problems = check_spec(spec)
    if problems:
        return _fail("InvalidSpec", "; ".join(problems))
    if not status.get("jobName") and not status.get("tuningJobName"):
        ns = tj["metadata"]["namespace"]
        missing = await storage.missing_claims(ctx.kube, ns, build.storage_uris(spec))
        if missing:
            # A pod would only sit unschedulable: wait for the storage instead of launching it.
            return {
                "phase": "Pending",
                "reason": storage.STORAGE_NOT_FOUND,
                "message": storage.missing_message(missing, ns),
            }
    return None


def prepared_ref(facts: Mapping[str, Any]) -> dict[str, str] | None:
    """The prepare step's output as the trainer's config names it (pure)."""
    uri, sha256 = facts.get("preparedUri"), facts.get("preparedSha256")
    return {"uri": str(uri), "sha256": str(sha256)} if uri and sha256 else None


def prepared_facts(results: list[PodResult]) -> dict[str, Any]:
    """Facts of a finished prepare Job (pure): where the data went and its manifest's sha256."""
    done = [r.result for r in succeeded(results) if r.result]
    result = done[-1] if done else {}
    uri, sha256 = result.get("preparedUri"), result.get("sha256")
    if not isinstance(uri, str) or not isinstance(sha256, str):
        return _fail("NoResult", "the prepare pod finished without naming the prepared data")
    return {"preparedUri": uri, "preparedSha256": sha256, "dataDigest": result.get("dataDigest")}


async def _prepare(ctx: Context, tj: Mapping[str, Any], spec: TrainingJobSpec) -> dict[str, Any]:
    """Run the prepare Job once; its facts, with `preparedUri`/`preparedSha256` once done.

    Recorded in status the first time they are seen, so a deleted prepare pod loses nothing."""
    old = tj.get("status") or {}
    if prepared_ref(old):
        return {k: old[k] for k in ("preparedUri", "preparedSha256", "dataDigest") if old.get(k)}
    ns, name = tj["metadata"]["namespace"], tj["metadata"]["name"]
    job = await ctx.kube.get("Job", ns, build.prepare_job_name(name))
    if job is None:
        job, created = await ctx.kube.create(build.preparing_job(tj, spec, ctx.settings))
        if created:
            await ctx.event(tj, "PrepareStarted", f"Created Job {build.prepare_job_name(name)}")
    facts: dict[str, Any] = {"startTime": (job.get("status") or {}).get("startTime") or old.get("startTime")}
    if (failed := job_condition(job, "Failed")) is not None:
        failure = last_failure(await _pods(ctx, ns, name, "prepare"))
        message = failure_message(failure, str(failed.get("message") or "prepare Job failed"))
        return facts | _fail(failure_reason(failure, "PrepareFailed"), message)
    if not job_condition(job, "Complete"):
        return facts | {"phase": "Running", "reason": "Preparing", "message": "preparing the data"}
    return facts | prepared_facts(await _pods(ctx, ns, name, "prepare"))


async def _tune(
    ctx: Context, tj: Mapping[str, Any], spec: TrainingJobSpec, prepared: Mapping[str, str] | None
) -> dict[str, Any]:
    """Run the tuning Job; its facts, with `bestParams` once a best is picked."""
    assert spec.tuning is not None
    ns, name = tj["metadata"]["namespace"], tj["metadata"]["name"]
    trials = trial_count(spec.tuning)
    facts: dict[str, Any] = {"trialsTotal": trials, "tuningJobName": build.tune_job_name(name)}
    tune = await ctx.kube.get("Job", ns, build.tune_job_name(name))
    if tune is None:
        tune, created = await ctx.kube.create(build.tuning_job(tj, spec, ctx.settings, trials, prepared))
        if created:
            await ctx.event(
                tj, "TuningStarted", f"Created Job {build.tune_job_name(name)} with {trials} trials"
            )
    job_status = tune.get("status") or {}
    old = tj.get("status") or {}
    facts["startTime"] = job_status.get("startTime") or old.get("startTime")
    pods = await _pods(ctx, ns, name, "tune")
    # Every finished trial goes into status as soon as it is seen (its pod may not outlive a
    # drain): the pods listed now, and those the pod watch saw finish (maybe deleted since).
    seen = [pod_result(p, build.CONTAINER) for p in ctx.seen_trial_pods(ns, name)]
    facts["trials"] = record_trials(old.get("trials"), seen + pods)
    facts["trialsCompleted"] = len(facts["trials"])
    if (failed := job_condition(tune, "Failed")) is not None:
        message = str(failed.get("message") or "tuning Job failed")
        failure = last_failure(pods)
        return facts | _fail(failure_reason(failure, "TuningFailed"), failure_message(failure, message))
    # Every trial recorded: the refit starts now, not when the Job controller marks the Job
    # Complete after its last pod's finalizer is gone (a few seconds later, issue #23).
    if not job_condition(tune, "Complete") and facts["trialsCompleted"] < trials:
        done = f"{facts['trialsCompleted']}/{trials} trials done"
        return facts | {"phase": "Running", "reason": "Tuning", "message": done}
    return facts | tuning_outcome(spec, trials, facts["trials"])


async def _train(
    ctx: Context,
    tj: Mapping[str, Any],
    spec: TrainingJobSpec,
    params: Mapping[str, Any] | None,
    prepared: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], Mapping[str, Any] | None]:
    """Run the training Job -> (its facts, the trainer's result once it succeeded)."""
    ns, name = tj["metadata"]["namespace"], tj["metadata"]["name"]
    job = await ctx.kube.get("Job", ns, build.train_job_name(name))
    if job is None:
        job, created = await ctx.kube.create(build.training_job(tj, spec, ctx.settings, params, prepared))
        if created:
            await ctx.event(tj, "TrainingStarted", f"Created Job {build.train_job_name(name)}")
    job_status = job.get("status") or {}
    facts: dict[str, Any] = {
        "jobName": build.train_job_name(name),
        "startTime": job_status.get("startTime") or (tj.get("status") or {}).get("startTime"),
    }
    if (failed := job_condition(job, "Failed")) is not None:
        failure = last_failure(await _pods(ctx, ns, name, "train"))
        reason = failure_reason(failure, str(failed.get("reason") or "TrainingFailed"))
        message = failure_message(failure, str(failed.get("message") or "training Job failed"))
        return facts | _fail(reason, message), None
    if not job_condition(job, "Complete"):
        return facts | {"phase": "Running", "reason": "Training", "message": "training"}, None
    done_pods = succeeded(await _pods(ctx, ns, name, "train"))
    if not done_pods or not done_pods[-1].result:
        return facts | _fail("NoResult", "the training pod finished without a result"), None
    return facts | {"completionTime": job_status.get("completionTime")}, done_pods[-1].result


def registered_facts(mv_name: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """Facts of a run whose ModelVersion `mv_name` is registered, from the trainer's result (pure)."""
    metrics = {k: float(v) for k, v in (result.get("metrics") or {}).items() if isinstance(v, (int, float))}
    primary = result.get("primaryMetric")
    notes = [str(n) for n in result.get("notes") or [] if isinstance(n, str)]
    return {
        "phase": "Succeeded",
        "reason": "ModelRegistered",
        "message": "; ".join([f"ModelVersion {mv_name} registered", *notes]),
        "modelVersion": mv_name,
        "metrics": metrics,
        "primaryMetric": primary,
        "score": numbers.score(metrics.get(str(primary))) if primary else None,
        "gatesPassed": result.get("gatesPassed"),
        "artifactUri": result.get("artifactUri"),
        "artifactSha256": result.get("sha256"),
        "dataDigest": result.get("dataDigest"),
    }


async def observe_and_act(ctx: Context, tj: Mapping[str, Any], spec: TrainingJobSpec) -> dict[str, Any]:
    """Create what is missing; return the facts the status is computed from."""
    stop = await _check(ctx, tj, spec)
    if stop is not None:
        return stop
    facts: dict[str, Any] = {}
    if spec.tuning:  # prepared once, read by every trial and the final fit (issue #23)
        facts = await _prepare(ctx, tj, spec)
        if facts.get("phase"):
            return facts
        facts |= await _tune(ctx, tj, spec, prepared_ref(facts))
        if "bestParams" not in facts:
            return facts
    trained, result = await _train(ctx, tj, spec, facts.get("bestParams"), prepared_ref(facts))
    facts |= {k: v for k, v in trained.items() if k != "startTime" or not facts.get("startTime")}
    if result is None:
        return facts
    mv_name, created = await _ensure_model_version(ctx, tj, spec, result)
    if created:
        await ctx.event(tj, "ModelRegistered", f"Created ModelVersion {mv_name}")
    return facts | registered_facts(mv_name, result)


def compute_status(tj: Mapping[str, Any], facts: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The whole status from the facts of this pass (pure)."""
    old = tj.get("status") or {}
    generation = int(tj["metadata"].get("generation") or 1)
    phase = facts.get("phase", "Pending")
    reason = str(facts.get("reason") or phase)
    message = str(facts.get("message") or "")
    trained = phase == "Succeeded"
    invalid = reason in ("InvalidSpec", tenancy.NOT_PERMITTED)
    conds = [
        Cond(
            "Validated",
            tf(not invalid),
            ("NotPermitted" if reason == tenancy.NOT_PERMITTED else "Invalid") if invalid else "Valid",
            message if invalid else "",
        ),
        Cond(
            "Trained", "True" if trained else ("False" if phase == "Failed" else "Unknown"), reason, message
        ),
        Cond(
            "ModelRegistered",
            tf(bool(facts.get("modelVersion"))),
            "Registered" if facts.get("modelVersion") else reason,
            message if facts.get("modelVersion") else "",
        ),
        *kstatus(
            Cond(READY, tf(trained), reason, message),
            in_progress=phase in ("Pending", "Running"),
            stalled_reason=reason if phase == "Failed" else None,
            message=message,
        ),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": generation,
        "conditions": merge(old.get("conditions"), conds, generation, now),
        "message": message or None,
    }
    if facts.get("trialsTotal"):
        status["progress"] = f"{facts.get('trialsCompleted', 0)}/{facts['trialsTotal']}"
    for key in (
        "jobName",
        "tuningJobName",
        "startTime",
        "completionTime",
        "trialsCompleted",
        "trialsTotal",
        "metrics",
        "primaryMetric",
        "score",
        "bestParams",
        "bestTrial",
        "trials",
        "gatesPassed",
        "artifactUri",
        "artifactSha256",
        "dataDigest",
        "preparedUri",
        "preparedSha256",
        "modelVersion",
    ):
        if facts.get(key) is not None:
            status[key] = facts[key]
    if phase in TERMINAL and "completionTime" not in status:
        status["completionTime"] = old.get("completionTime") or now
    return {k: v for k, v in status.items() if v is not None}


def interval(tj: Mapping[str, Any]) -> float | None:
    """A TrainingJob waiting for its PersistentVolumeClaim looks again (reconcile/storage.py)."""
    return storage.interval(tj)


async def reconcile(ctx: Context, tj: Mapping[str, Any]) -> bool:
    """One pass. Returns True when the TrainingJob is finished (nothing more will happen)."""
    old = tj.get("status") or {}
    generation = int(tj["metadata"].get("generation") or 1)
    if old.get("phase") in TERMINAL and old.get("observedGeneration") == generation:
        return True
    try:
        spec = TrainingJobSpec.model_validate(tj["spec"])
    except ValidationError as e:
        facts: dict[str, Any] = _fail("InvalidSpec", str(e))
    else:
        if spec.estimator.class_name not in ESTIMATORS:  # the schema's enum already refuses it
            facts = _fail("InvalidSpec", f"estimator {spec.estimator.class_name} is not allowed")
        else:
            facts = await observe_and_act(ctx, tj, spec)
    new = compute_status(tj, facts, ctx.now())
    await ctx.report_failure(tj, new)
    phase = new.get("phase")
    if phase != old.get("phase"):
        if phase == "Succeeded":
            await ctx.event(tj, "Succeeded", str(facts.get("message")))
        isvc = (tj["metadata"].get("labels") or {}).get(LABEL_INFERENCE_SERVICE)
        if isvc and phase in TERMINAL:  # a retraining run: its InferenceService's alert counts it
            ctx.metrics.retraining_done(tj["metadata"]["namespace"], isvc, str(phase).lower())
    await ctx.write_status(tj, new)
    # Recorded in status now: the watch's copies of those pods can go.
    recorded = None if phase in TERMINAL else [str(t.get("pod")) for t in new.get("trials") or []]
    ctx.forget_trial_pods(tj["metadata"]["namespace"], tj["metadata"]["name"], recorded)
    return new.get("phase") in TERMINAL
