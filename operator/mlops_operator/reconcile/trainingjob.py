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

from mlops_contract.api.common import API_VERSION, LABEL_INFERENCE_SERVICE, LABEL_TRAINING_JOB, LABEL_VERSION
from mlops_contract.api.trainingjob import TrainingJobSpec, trial_count
from mlops_contract.checks import check_spec
from mlops_contract.estimators import ESTIMATORS, HIGHER_IS_BETTER
from mlops_operator.build import trainingjob as build
from mlops_operator.build.common import labels, pvc_claims
from mlops_operator.reconcile.context import Context
from mlops_operator.reconcile.pods import (
    PodResult,
    failure_message,
    job_condition,
    last_failure,
    results,
    succeeded,
)
from mlops_operator.status.conditions import READY, Cond, get, kstatus, merge, tf

TERMINAL: Final = ("Succeeded", "Failed")
MAX_VERSION_ATTEMPTS: Final = 5


def _fail(reason: str, message: str) -> dict[str, Any]:
    return {"phase": "Failed", "reason": reason, "message": message}


async def _pods(ctx: Context, ns: str, tj: str, step: str) -> list[PodResult]:
    return await results(ctx.kube, ns, {LABEL_TRAINING_JOB: tj, build.LABEL_STEP: step}, build.CONTAINER)


def best_trial(results: list[PodResult]) -> PodResult | None:
    """The successful trial with the best score; scores keep their metric's sign (rmse: lower is better)."""
    ok = [r for r in succeeded(results) if isinstance((r.result or {}).get("score"), (int, float))]
    if not ok:
        return None

    def key(r: PodResult) -> tuple[float, int]:
        result = r.result or {}
        sign = 1.0 if HIGHER_IS_BETTER.get(str(result.get("metric")), True) else -1.0
        return (sign * float(result["score"]), -(r.index or 0))

    return max(ok, key=key)


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
            mv = model_version_manifest(tj, spec, result, version, ctx.settings.trainer_image)
            _, created = await ctx.kube.create(mv)
            if created:
                return mv["metadata"]["name"], True
            version += 1  # that name is taken (a user's version): take the next number
        raise RuntimeError(f"could not find a free version number for model {spec.model}")


def model_version_name(model: str, version: int) -> str:
    return f"{model}-v{version}"


def model_version_manifest(
    tj: Mapping[str, Any], spec: TrainingJobSpec, result: Mapping[str, Any], version: int, default_image: str
) -> dict[str, Any]:
    """The ModelVersion for a successful run. Not owned by the TrainingJob: it outlives it."""
    name = tj["metadata"]["name"]
    mv_spec: dict[str, Any] = {
        "model": spec.model,
        "version": version,
        "artifact": {"uri": result["artifactUri"], "format": "skops", "sha256": result["sha256"]},
        "source": {
            "trainingJob": name,
            "dataUri": spec.data.source.uri,
            "trainerImage": spec.image or default_image,
            "estimator": spec.estimator.class_name,
        },
    }
    if result.get("dataDigest"):
        mv_spec["source"]["dataDigest"] = result["dataDigest"]
    if isinstance(result.get("params"), dict):
        mv_spec["source"]["params"] = result["params"]
    if isinstance(result.get("metrics"), dict):
        mv_spec["metrics"] = {
            k: float(v) for k, v in result["metrics"].items() if isinstance(v, (int, float))
        }
    if result.get("primaryMetric"):
        mv_spec["primaryMetric"] = result["primaryMetric"]
    baseline = result.get("baseline")
    if (
        isinstance(baseline, dict)
        and baseline.get("modelVersion")
        and isinstance(baseline.get("metrics"), dict)
    ):
        mv_spec["baseline"] = {
            "modelVersion": str(baseline["modelVersion"]),
            "metrics": {k: float(v) for k, v in baseline["metrics"].items() if isinstance(v, (int, float))},
        }
    if spec.evaluation.gates:
        mv_spec["gates"] = [g.to_dict() for g in spec.evaluation.gates]
    if isinstance(result.get("signature"), dict):
        mv_spec["signature"] = result["signature"]
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": {
            "name": model_version_name(spec.model, version),
            "namespace": tj["metadata"]["namespace"],
            "labels": labels("model", model_version_name(spec.model, version), spec.model)
            | {LABEL_VERSION: str(version), LABEL_TRAINING_JOB: name},
        },
        "spec": mv_spec,
    }


async def missing_claims(ctx: Context, ns: str, spec: TrainingJobSpec) -> list[str]:
    uris = [spec.data.source.uri, *(s.uri for s in spec.data.extra_sources or []), spec.output.uri]
    return [c for c in pvc_claims(uris) if await ctx.kube.get("PersistentVolumeClaim", ns, c) is None]


async def observe_and_act(ctx: Context, tj: Mapping[str, Any], spec: TrainingJobSpec) -> dict[str, Any]:
    """Create what is missing; return the facts the status is computed from."""
    meta = tj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    status = tj.get("status") or {}
    facts: dict[str, Any] = {}

    problems = check_spec(spec)
    if problems:
        return _fail("InvalidSpec", "; ".join(problems))
    if not status.get("jobName") and not status.get("tuningJobName"):
        missing = await missing_claims(ctx, ns, spec)
        if missing:
            # A pod would only sit unschedulable: wait for the storage instead of launching it.
            return {
                "phase": "Pending",
                "reason": "StorageNotFound",
                "message": f"PersistentVolumeClaim {', '.join(missing)} not found in {ns}",
            }

    params: dict[str, Any] | None = None
    if spec.tuning:
        trials = trial_count(spec.tuning)
        facts.update(trialsTotal=trials, tuningJobName=build.tune_job_name(name))
        tune = await ctx.kube.get("Job", ns, build.tune_job_name(name))
        if tune is None:
            tune, created = await ctx.kube.create(build.tuning_job(tj, spec, ctx.settings, trials))
            if created:
                await ctx.event(
                    tj, "TuningStarted", f"Created Job {build.tune_job_name(name)} with {trials} trials"
                )
        facts["startTime"] = (tune.get("status") or {}).get("startTime") or status.get("startTime")
        done = int((tune.get("status") or {}).get("succeeded") or 0)
        facts["trialsCompleted"] = min(done, trials)
        if job_condition(tune, "Failed"):
            results = await _pods(ctx, ns, name, "tune")
            cond = job_condition(tune, "Failed") or {}
            return facts | _fail(
                "TuningFailed",
                failure_message(last_failure(results), str(cond.get("message") or "tuning Job failed")),
            )
        if not job_condition(tune, "Complete"):
            return facts | {
                "phase": "Running",
                "reason": "Tuning",
                "message": f"{facts['trialsCompleted']}/{trials} trials done",
            }
        best = best_trial(await _pods(ctx, ns, name, "tune"))
        if best is None or best.result is None:
            return facts | _fail("TuningFailed", "no trial reported a score")
        params = dict(best.result.get("params") or {})
        facts["bestParams"] = params

    job = await ctx.kube.get("Job", ns, build.train_job_name(name))
    if job is None:
        job, created = await ctx.kube.create(build.training_job(tj, spec, ctx.settings, params))
        if created:
            await ctx.event(tj, "TrainingStarted", f"Created Job {build.train_job_name(name)}")
    facts["jobName"] = build.train_job_name(name)
    facts.setdefault("startTime", (job.get("status") or {}).get("startTime") or status.get("startTime"))
    if job_condition(job, "Failed"):
        cond = job_condition(job, "Failed") or {}
        failure = last_failure(await _pods(ctx, ns, name, "train"))
        reason = (
            "BadInput"
            if failure and failure.exit_code == build.EXIT_BAD_INPUT
            else str(cond.get("reason") or "TrainingFailed")
        )
        return facts | _fail(
            reason, failure_message(failure, str(cond.get("message") or "training Job failed"))
        )
    if not job_condition(job, "Complete"):
        return facts | {"phase": "Running", "reason": "Training", "message": "training"}

    done_pods = succeeded(await _pods(ctx, ns, name, "train"))
    if not done_pods or not done_pods[-1].result:
        return facts | _fail("NoResult", "the training pod finished without a result")
    result = done_pods[-1].result
    facts["completionTime"] = (job.get("status") or {}).get("completionTime")
    mv_name, created = await _ensure_model_version(ctx, tj, spec, result)
    if created:
        await ctx.event(tj, "ModelRegistered", f"Created ModelVersion {mv_name}")
    metrics = {k: float(v) for k, v in (result.get("metrics") or {}).items() if isinstance(v, (int, float))}
    primary = result.get("primaryMetric")
    return facts | {
        "phase": "Succeeded",
        "reason": "ModelRegistered",
        "message": f"ModelVersion {mv_name} registered",
        "modelVersion": mv_name,
        "metrics": metrics,
        "primaryMetric": primary,
        "score": metrics.get(str(primary)) if primary else None,
        "gatesPassed": result.get("gatesPassed"),
        "artifactUri": result.get("artifactUri"),
        "artifactSha256": result.get("sha256"),
        "dataDigest": result.get("dataDigest"),
    }


def compute_status(tj: Mapping[str, Any], facts: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The whole status from the facts of this pass (pure)."""
    old = tj.get("status") or {}
    generation = int(tj["metadata"].get("generation") or 1)
    phase = facts.get("phase", "Pending")
    reason = str(facts.get("reason") or phase)
    message = str(facts.get("message") or "")
    trained = phase == "Succeeded"
    conds = [
        Cond(
            "Validated",
            tf(reason != "InvalidSpec"),
            "Invalid" if reason == "InvalidSpec" else "Valid",
            message if reason == "InvalidSpec" else "",
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
        "gatesPassed",
        "artifactUri",
        "artifactSha256",
        "dataDigest",
        "modelVersion",
    ):
        if facts.get(key) is not None:
            status[key] = facts[key]
    if phase in TERMINAL and "completionTime" not in status:
        status["completionTime"] = old.get("completionTime") or now
    return {k: v for k, v in status.items() if v is not None}


STORAGE_RECHECK_SECONDS: Final = 15.0


def interval(tj: Mapping[str, Any]) -> float | None:
    """A TrainingJob waiting for its PersistentVolumeClaim looks again every 15 s (nothing wakes
    it when the claim appears); otherwise only events and the resync bring passes."""
    ready = get((tj.get("status") or {}).get("conditions"), READY) or {}
    return STORAGE_RECHECK_SECONDS if ready.get("reason") == "StorageNotFound" else None


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
    if new.get("phase") != old.get("phase"):
        phase = new["phase"]
        if phase == "Failed":
            await ctx.event(tj, str(facts.get("reason")), f"Failed: {facts.get('message')}", warning=True)
        elif phase == "Succeeded":
            await ctx.event(tj, "Succeeded", str(facts.get("message")))
        isvc = (tj["metadata"].get("labels") or {}).get(LABEL_INFERENCE_SERVICE)
        if isvc and phase in TERMINAL:  # a retraining run: its InferenceService's alert counts it
            ctx.metrics.retraining_done(tj["metadata"]["namespace"], isvc, phase.lower())
    await ctx.write_status(tj, new)
    return new.get("phase") in TERMINAL
