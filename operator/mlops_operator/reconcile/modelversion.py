"""Reconcile a ModelVersion: verify the artifact, check gates, derive stage, enforce retention.

The spec is immutable (CEL), so verification runs once per object: a Job named
`<mv>-verify`. A version number another ModelVersion of the same model already holds
(older by creation time) makes this one Failed/DuplicateVersion. Retention deletes the
oldest versions beyond `settings.retention_keep`, never one that is served or pinned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from mlops_contract.api.common import ANNOTATION_APPROVED_BY, LABEL_COMPONENT, LABEL_MODEL_VERSION
from mlops_contract.api.modelversion import ModelVersionSpec
from mlops_operator.build import modelversion as build
from mlops_operator.build.trainingjob import CONTAINER, EXIT_VERIFY_FAILED
from mlops_operator.reconcile.context import Context
from mlops_operator.reconcile.pods import failure_message, job_condition, last_failure, results, succeeded
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


async def reconcile(ctx: Context, mv: Mapping[str, Any]) -> bool:
    meta = mv["metadata"]
    ns, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation") or 1)
    old = mv.get("status") or {}
    now = ctx.now()
    try:
        spec = ModelVersionSpec.model_validate(mv["spec"])
    except ValidationError as e:
        await ctx.write_invalid_spec(mv, str(e), phase="Failed")
        return True

    siblings = await ctx.of_model("ModelVersion", ns, spec.model)
    services = await ctx.of_model("InferenceService", ns, spec.model)
    status: dict[str, Any] = {"observedGeneration": generation}
    verified: str = "Unknown"
    verify_reason, verify_message = "Pending", "verification not started"
    duplicate = duplicate_of(mv, spec, siblings)
    if duplicate:
        verified, verify_reason = "False", "DuplicateVersion"
        verify_message = f"version {spec.version} of model {spec.model} is already registered as {duplicate}"
    elif is_true(old.get("conditions"), "ArtifactVerified"):
        verified, verify_reason, verify_message = "True", "Verified", "artifact verified"
        status["verifiedAt"] = old.get("verifiedAt")
        status["verificationJob"] = old.get("verificationJob")
        status["servingRuntime"] = old.get("servingRuntime")
    elif (recorded := verification_failed(old)) is not None:
        # Settled: the failure was read from the pods once; a resync reads nothing again.
        verified, verify_reason = "False", str(recorded.get("reason"))
        verify_message = str(recorded.get("message") or "")
        status["verificationJob"] = old.get("verificationJob")
    else:
        job = await ctx.kube.get("Job", ns, build.verify_job_name(name))
        if job is None:
            job, created = await ctx.kube.create(build.verification_job(mv, spec, ctx.settings))
            if created:
                await ctx.event(mv, "VerificationStarted", f"Created Job {build.verify_job_name(name)}")
        status["verificationJob"] = build.verify_job_name(name)

        selector = {LABEL_MODEL_VERSION: name, LABEL_COMPONENT: build.COMPONENT}
        if job_condition(job, "Complete"):
            verified, verify_reason, verify_message = (
                "True",
                "Verified",
                "sha256 matched; the model loaded and predicted",
            )
            status["verifiedAt"] = now
            ok = succeeded(await results(ctx.kube, ns, selector, CONTAINER))
            runtime = ok[-1].result.get("runtime") if ok and ok[-1].result else None
            status["servingRuntime"] = runtime if runtime in ("arrays", "sklearn") else None
            await ctx.event(
                mv,
                "Verified",
                f"Artifact {spec.artifact.uri} verified"
                + (f" by {ok[-1].pod}" if ok else "")
                + (f"; the server will run it with runtime {runtime}" if runtime else ""),
            )
        elif job_condition(job, "Failed"):
            failure = last_failure(await results(ctx.kube, ns, selector, CONTAINER))
            verified = "False"
            verify_reason = (
                "VerificationFailed"
                if failure and failure.exit_code == EXIT_VERIFY_FAILED
                else "VerificationError"
            )
            verify_message = failure_message(
                failure, str((job_condition(job, "Failed") or {}).get("message") or "verification Job failed")
            )
            if old.get("phase") != "Failed":
                await ctx.event(mv, verify_reason, verify_message, warning=True)
        else:
            verify_reason, verify_message = "Verifying", f"Job {build.verify_job_name(name)} is running"

    gates_ok, gates_message = gates_result(spec)
    stage_name, served_by = stage(name, spec, siblings, services)
    phase = {"True": "Verified", "False": "Failed"}.get(verified, "Verifying")
    ready = verified == "True" and gates_ok
    ready_reason = "Servable" if ready else (verify_reason if verified != "True" else "GatesFailed")
    ready_message = (
        "verified and gates passed" if ready else (verify_message if verified != "True" else gates_message)
    )
    conds = [
        Cond("ArtifactVerified", verified, verify_reason, verify_message),  # type: ignore[arg-type]  # Unknown/True/False strings
        Cond("GatesPassed", tf(gates_ok), "Passed" if gates_ok else "BelowThreshold", gates_message),
        *kstatus(
            Cond(READY, tf(ready), ready_reason, ready_message),
            in_progress=verified == "Unknown",
            stalled_reason=verify_reason if verified == "False" else None,
            message=verify_message,
        ),
    ]
    approved_by = (meta.get("annotations") or {}).get(ANNOTATION_APPROVED_BY)
    if approved_by and approved_by != old.get("approvedBy"):
        await ctx.event(mv, "Approved", f"Promotion approved by {approved_by}")
    score = (spec.metrics or {}).get(spec.primary_metric) if spec.primary_metric else None
    status.update(
        {
            "phase": phase,
            "conditions": merge(old.get("conditions"), conds, generation, now),
            "stage": stage_name,
            "servedBy": served_by or None,
            "score": score,
            "approvedBy": approved_by,
            "message": ready_message,
        }
    )
    if old.get("stage") and old.get("stage") != stage_name:
        await ctx.event(mv, "StageChanged", f"Stage {old.get('stage')} -> {stage_name}")
    await ctx.write_status(mv, {k: v for k, v in status.items() if v is not None})

    for victim in retention_victims(siblings, services, ctx.settings.retention_keep):
        if await ctx.kube.delete("ModelVersion", ns, victim):
            await ctx.event(
                mv,
                "Retired",
                f"Deleted ModelVersion {victim}: {spec.model} keeps its newest {ctx.settings.retention_keep} versions",
            )
    return phase != "Verifying"
