"""Reconcile a ModelVersion: verify the artifact, check gates, derive stage, enforce retention.

The spec is immutable (CEL), so verification runs once per object: a Job named
`<mv>-verify`. A version number another ModelVersion of the same model already holds
(older by creation time) makes this one Failed/DuplicateVersion. Retention deletes the
oldest versions beyond `settings.retention_keep`, never one that is served or pinned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from mlops_contract.api.common import ANNOTATION_APPROVED_BY, LABEL_COMPONENT, LABEL_MODEL_VERSION
from mlops_contract.api.modelversion import ModelVersionSpec
from mlops_operator.build import modelversion as build
from mlops_operator.build.trainingjob import CONTAINER, EXIT_VERIFY_FAILED
from mlops_operator.reconcile import storage
from mlops_operator.reconcile.context import Context
from mlops_operator.reconcile.pods import PodResult, failure_message, job_condition, last_failure, succeeded
from mlops_operator.reconcile.pods import results as pod_results
from mlops_operator.status import numbers
from mlops_operator.status.conditions import READY, Cond, get, is_true, kstatus, merge, tf

VERIFICATION_FAILURES = ("VerificationFailed", "VerificationError")


def verification_failed(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ArtifactVerified condition if the status already records a failed verification
    (final: the spec is immutable), else None."""
    cond = get(status.get("conditions"), "ArtifactVerified") or {}
    failed = cond.get("status") == "False" and cond.get("reason") in VERIFICATION_FAILURES
    return cond if failed else None


def gates_result(spec: ModelVersionSpec) -> tuple[bool, str]:
    """(passed, message): every gate must hold on a recorded metric."""
    failed = []
    metrics = spec.metrics or {}
    for gate in spec.gates or []:
        value = metrics.get(gate.metric)
        if value is None:
            failed.append(f"{gate.metric} was not measured")
        elif not gate.holds(value):
            failed.append(f"{gate.metric} {value:.4g} is not {gate.op} {gate.threshold:g}")
    if failed:
        return False, "; ".join(failed)
    return True, f"{len(spec.gates or [])} gate(s) passed"


def _created(mv: Mapping[str, Any]) -> tuple[str, str]:
    return (mv["metadata"].get("creationTimestamp") or "", mv["metadata"]["name"])


def duplicate_of(mv: Mapping[str, Any], spec: ModelVersionSpec, siblings: list[dict[str, Any]]) -> str | None:
    """The older ModelVersion holding the same (model, version), if any."""
    older = [
        s
        for s in siblings
        if s["metadata"]["name"] != mv["metadata"]["name"]
        and s["spec"].get("version") == spec.version
        and _created(s) < _created(mv)
    ]
    return min(older, key=_created)["metadata"]["name"] if older else None


def stage(
    name: str, spec: ModelVersionSpec, siblings: list[dict[str, Any]], services: list[dict[str, Any]]
) -> tuple[str, list[str]]:
    """(stage, servedBy): Production if served; Archived if a newer version of the model is served; else Candidate."""
    served_by = sorted(
        s["metadata"]["name"]
        for s in services
        if s["spec"].get("model") == spec.model
        and name
        in {(s.get("status") or {}).get("modelVersion")}
        | {t.get("modelVersion") for t in (s.get("status") or {}).get("traffic") or []}
    )
    if served_by:
        return "Production", served_by
    served_names = {
        (s.get("status") or {}).get("modelVersion") for s in services if s["spec"].get("model") == spec.model
    }
    newer_served = any(
        m["metadata"]["name"] in served_names and int(m["spec"].get("version", 0)) > spec.version
        for m in siblings
    )
    return ("Archived" if newer_served else "Candidate"), []


def retention_victims(siblings: list[dict[str, Any]], services: list[dict[str, Any]], keep: int) -> list[str]:
    """ModelVersions of one model to delete: beyond the newest `keep`, not served, not pinned, not in progress."""
    model = siblings[0]["spec"]["model"] if siblings else None
    protected: set[str | None] = set()
    pinned_versions: set[int] = set()
    for s in services:
        if s["spec"].get("model") != model:
            continue
        st = s.get("status") or {}
        protected |= {st.get("modelVersion"), st.get("desiredModelVersion")} | {
            t.get("modelVersion") for t in st.get("traffic") or []
        }
        if s["spec"].get("version") is not None:
            pinned_versions.add(int(s["spec"]["version"]))
    ordered = sorted(siblings, key=lambda m: int(m["spec"].get("version", 0)), reverse=True)
    victims = []
    for m in ordered[keep:]:
        name = m["metadata"]["name"]
        phase = (m.get("status") or {}).get("phase")
        if (
            name in protected
            or int(m["spec"].get("version", 0)) in pinned_versions
            or phase not in ("Verified", "Failed")
        ):
            continue
        victims.append(name)
    return victims


@dataclass(frozen=True)
class Verification:
    """Where verification stands: ArtifactVerified's status, reason and message, plus the status
    fields it sets (verificationJob, verifiedAt, servingRuntime)."""

    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)


def settled(old: Mapping[str, Any], duplicate: str | None, spec: ModelVersionSpec) -> Verification | None:
    """A verification decided before (or without) looking at any Job (pure); None: look."""
    if duplicate:
        message = f"version {spec.version} of model {spec.model} is already registered as {duplicate}"
        return Verification("False", "DuplicateVersion", message)
    if is_true(old.get("conditions"), "ArtifactVerified"):
        kept = {k: old.get(k) for k in ("verifiedAt", "verificationJob", "servingRuntime")}
        return Verification("True", "Verified", "artifact verified", kept)
    if (recorded := verification_failed(old)) is not None:
        # Settled: the failure was read from the pods once; a resync reads nothing again.
        return Verification(
            "False",
            str(recorded.get("reason")),
            str(recorded.get("message") or ""),
            {"verificationJob": old.get("verificationJob")},
        )
    return None


def job_verification(
    job_name: str, job: Mapping[str, Any], results: list[PodResult], now: str
) -> Verification:
    """Where the verification Job `job` stands, from its conditions and its pods' results (pure)."""
    fields: dict[str, Any] = {"verificationJob": job_name}
    if job_condition(job, "Complete"):
        ok = succeeded(results)
        runtime = ok[-1].result.get("runtime") if ok and ok[-1].result else None
        fields |= {"verifiedAt": now, "servingRuntime": runtime if runtime in ("arrays", "sklearn") else None}
        return Verification("True", "Verified", "sha256 matched; the model loaded and predicted", fields)
    if (failed := job_condition(job, "Failed")) is not None:
        failure = last_failure(results)
        reason = (
            "VerificationFailed"
            if failure and failure.exit_code == EXIT_VERIFY_FAILED
            else "VerificationError"
        )
        message = failure_message(failure, str(failed.get("message") or "verification Job failed"))
        return Verification("False", reason, message, fields)
    return Verification("Unknown", "Verifying", f"Job {job_name} is running", fields)


async def verify(ctx: Context, mv: Mapping[str, Any], spec: ModelVersionSpec) -> Verification:
    """Observe and act: wait for the artifact's claim, create the verification Job once, read it."""
    ns, name = mv["metadata"]["namespace"], mv["metadata"]["name"]
    job_name = build.verify_job_name(name)
    job = await ctx.kube.get("Job", ns, job_name)
    if job is None:
        missing = await storage.missing_claims(ctx.kube, ns, build.storage_uris(spec))
        if missing:
            # The pod would sit unschedulable until its deadline hid the cause (issue #19).
            return Verification("Unknown", storage.STORAGE_NOT_FOUND, storage.missing_message(missing, ns))
        job, created = await ctx.kube.create(build.verification_job(mv, spec, ctx.settings))
        if created:
            await ctx.event(mv, "VerificationStarted", f"Created Job {job_name}")
    selector = {LABEL_MODEL_VERSION: name, LABEL_COMPONENT: build.COMPONENT}
    results = await pod_results(ctx.kube, ns, selector, CONTAINER) if _finished(job) else []
    result = job_verification(job_name, job, results, ctx.now())
    if result.status == "True":
        ok = succeeded(results)
        runtime = result.fields.get("servingRuntime")
        await ctx.event(
            mv,
            "Verified",
            f"Artifact {spec.artifact.uri} verified"
            + (f" by {ok[-1].pod}" if ok else "")
            + (f"; the server will run it with runtime {runtime}" if runtime else ""),
        )
    return result


def _finished(job: Mapping[str, Any]) -> bool:
    return job_condition(job, "Complete") is not None or job_condition(job, "Failed") is not None


def compute_status(
    mv: Mapping[str, Any],
    spec: ModelVersionSpec,
    verification: Verification,
    placement: tuple[str, list[str]],
    now: str,
) -> dict[str, Any]:
    """The whole status from the verification, the gates and the stage (pure)."""
    meta = mv["metadata"]
    old = mv.get("status") or {}
    generation = int(meta.get("generation") or 1)
    v = verification
    gates_ok, gates_message = gates_result(spec)
    if v.status == "True":
        phase = "Verified"
    elif v.status == "False":
        phase = "Failed"
    else:
        phase = "Pending" if v.reason == storage.STORAGE_NOT_FOUND else "Verifying"
    ready = v.status == "True" and gates_ok
    ready_reason = "Servable" if ready else (v.reason if v.status != "True" else "GatesFailed")
    ready_message = (
        "verified and gates passed" if ready else (v.message if v.status != "True" else gates_message)
    )
    conds = [
        Cond("ArtifactVerified", v.status, v.reason, v.message),  # type: ignore[arg-type]  # Unknown/True/False strings
        Cond("GatesPassed", tf(gates_ok), "Passed" if gates_ok else "BelowThreshold", gates_message),
        *kstatus(
            Cond(READY, tf(ready), ready_reason, ready_message),
            in_progress=v.status == "Unknown",
            stalled_reason=v.reason if v.status == "False" else None,
            message=v.message,
        ),
    ]
    stage_name, served_by = placement
    status = {
        **v.fields,
        "observedGeneration": generation,
        "phase": phase,
        "conditions": merge(old.get("conditions"), conds, generation, now),
        "stage": stage_name,
        "servedBy": served_by or None,
        "score": numbers.score((spec.metrics or {}).get(spec.primary_metric))
        if spec.primary_metric
        else None,
        "approvedBy": (meta.get("annotations") or {}).get(ANNOTATION_APPROVED_BY),
        "message": ready_message,
    }
    return {k: v for k, v in status.items() if v is not None}


async def retire(
    ctx: Context,
    mv: Mapping[str, Any],
    spec: ModelVersionSpec,
    siblings: list[dict[str, Any]],
    services: list[dict[str, Any]],
) -> None:
    """Delete the model's versions beyond the newest `retention_keep` that nothing serves or pins;
    an s3:// artifact the operator's run wrote goes too, by a purge Job created first (the Job
    outlives the ModelVersion; build.purge_job says why a Job)."""
    ns = mv["metadata"]["namespace"]
    keep = ctx.settings.retention_keep
    by_name = {m["metadata"]["name"]: m for m in siblings}
    for victim in retention_victims(siblings, services, keep):
        purge = await _purge_artifact(ctx, by_name[victim])
        if await ctx.kube.delete("ModelVersion", ns, victim):
            also = f"; its artifact is deleted by Job {purge}" if purge else ""
            await ctx.event(
                mv,
                "Retired",
                f"Deleted ModelVersion {victim}: {spec.model} keeps its newest {keep} versions{also}",
            )


async def _purge_artifact(ctx: Context, victim: Mapping[str, Any]) -> str | None:
    """Create the purge Job of `victim`'s artifact when retention may delete it; -> its name."""
    try:
        spec = ModelVersionSpec.model_validate(victim["spec"])
    except ValidationError:
        return None
    if not build.purgeable(spec, victim["metadata"]["namespace"]):
        return None
    job, _ = await ctx.kube.create(build.purge_job(victim, spec, ctx.settings))
    return str(job["metadata"]["name"])


def interval(mv: Mapping[str, Any]) -> float | None:
    """A ModelVersion waiting for its artifact's claim looks again (reconcile/storage.py)."""
    return storage.interval(mv)


async def reconcile(ctx: Context, mv: Mapping[str, Any]) -> bool:
    """One pass: observe the model's versions and services, verify, write status, retire."""
    meta = mv["metadata"]
    ns, name = meta["namespace"], meta["name"]
    old = mv.get("status") or {}
    try:
        spec = ModelVersionSpec.model_validate(mv["spec"])
    except ValidationError as e:
        await ctx.write_invalid_spec(mv, str(e), phase="Failed")
        return True
    siblings = await ctx.of_model("ModelVersion", ns, spec.model)
    services = await ctx.of_model("InferenceService", ns, spec.model)
    verification = settled(old, duplicate_of(mv, spec, siblings), spec) or await verify(ctx, mv, spec)
    status = compute_status(mv, spec, verification, stage(name, spec, siblings, services), ctx.now())
    await ctx.report_failure(mv, status)
    approved_by = status.get("approvedBy")
    if approved_by and approved_by != old.get("approvedBy"):
        await ctx.event(mv, "Approved", f"Promotion approved by {approved_by}")
    if old.get("stage") and old.get("stage") != status["stage"]:
        await ctx.event(mv, "StageChanged", f"Stage {old.get('stage')} -> {status['stage']}")
    await ctx.write_status(mv, status)
    await retire(ctx, mv, spec, siblings, services)
    return status["phase"] in ("Verified", "Failed")
