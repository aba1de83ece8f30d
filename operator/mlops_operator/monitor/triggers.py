"""When to retrain: the retraining triggers of an InferenceService, as a pure state machine.

`evaluate(retraining, state, metrics, annotations, now, isvc_name=...)` returns a decision and
the next `TriggerState`; the caller persists the state in status (see `TriggerState.from_status`
and `retraining_status`) and, when the decision fires, creates the TrainingJob named
`decision.job_name` (built by build.retraining.retraining_job). Names are deterministic, so if
the status write is lost the retry recreates the same name and AlreadyExists (409) means done.

Triggers (a run created for one trigger also settles every other pending one):
- manual: the mlops.dev/retrain annotation holds a value other than `last_manual`.
- drift: `consecutive` scrapes in a row with metrics.drift above the threshold; one at or below
  resets the count. Pass `metrics=None` when there was no new scrape since the last call: the
  count then stays as it is (counting the same scrape twice would fire early).
- accuracy: metrics.labelled_samples >= minSamples and metrics.accuracy < min (level-triggered).
- estimatedAccuracy: metrics.estimated_accuracy < min (level-triggered; the servers report the
  confidence-based estimate once their drift window holds 50 rows, issue #22).
- schedule: once per cron slot (monitor.cron, UTC). The first evaluation only records the
  current slot, so creating or enabling a service never fires a slot from the past; a slot
  fires when it is later than `last_schedule`.

Blocks, checked in this order, stop a pending trigger from firing without consuming it (it fires
when the block lifts): retraining disabled, cooldownSeconds since `last_triggered_at` not yet
passed, `len(active_jobs) >= maxConcurrent`, the run's source missing (`unavailable`). The reason
names the block.
`active_jobs` is the caller's to keep current (drop runs that finished); firing appends the new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Literal

from mlops_contract.api.common import ANNOTATION_RETRAIN
from mlops_contract.api.inferenceservice import Metrics, Retraining, RetrainingStatus
from mlops_contract.timeutil import format_time, parse_time
from mlops_operator.monitor import cron
from mlops_operator.status import conditions

Trigger = Literal["drift", "accuracy", "estimatedAccuracy", "schedule", "manual"]

# TrainingJob names are at most 50 characters (its CRD's CEL rule).
TRAININGJOB_NAME_MAX: Final = 50


class Reason(StrEnum):
    MANUAL = "ManualRequest"
    DRIFT = "DriftDetected"
    ACCURACY = "AccuracyBelowMinimum"
    ESTIMATED_ACCURACY = "EstimatedAccuracyBelowMinimum"
    SCHEDULE = "ScheduleDue"
    NOT_CONFIGURED = "NotConfigured"
    DISABLED = "Disabled"
    COOLDOWN = "CoolingDown"
    MAX_CONCURRENT = "MaxConcurrent"
    SOURCE_NOT_FOUND = "SourceNotFound"
    NO_TRIGGER = "NoTrigger"


@dataclass(frozen=True)
class TriggerState:
    """Bookkeeping carried from one evaluation to the next (persisted in status)."""

    drift_breaches: int = 0
    last_triggered_at: datetime | None = None
    active_jobs: tuple[str, ...] = ()
    last_manual: str | None = None
    last_schedule: str | None = None
    count: int = 0

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> TriggerState:
        """Read from an InferenceService status (camelCase): status.retraining and status.metrics.driftBreaches."""
        status = status or {}
        retraining = RetrainingStatus.model_validate(status.get("retraining") or {})
        metrics = Metrics.model_validate(status.get("metrics") or {})
        return cls(
            drift_breaches=metrics.drift_breaches or 0,
            last_triggered_at=parse_time(retraining.last_triggered_at),
            active_jobs=tuple(retraining.active_jobs or ()),
            last_manual=retraining.last_manual,
            last_schedule=retraining.last_schedule,
            count=retraining.count or 0,
        )


@dataclass(frozen=True)
class TriggerDecision:
    """Whether to create a retraining run now, for which trigger, and why (or why not).

    `pending` lists every trigger that wants a run (fired or blocked); `job_name` is set when firing.
    """

    fire: bool
    trigger: Trigger | None
    reason: Reason
    message: str
    job_name: str | None = None
    pending: tuple[Trigger, ...] = ()


def retraining_job_name(isvc_name: str, count: int) -> str:
    """`<isvc>-retrain-<count>`, at most 50 characters (a hash keeps shortened names unique)."""
    suffix = f"retrain-{count}"
    name = f"{isvc_name}-{suffix}"
    if len(name) <= TRAININGJOB_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{isvc_name[: TRAININGJOB_NAME_MAX - len(suffix) - 10]}-{digest}-{suffix}"


def _block(retraining: Retraining, state: TriggerState, now: datetime) -> tuple[Reason, str] | None:
    if not retraining.enabled:
        return Reason.DISABLED, "retraining is disabled (spec.retraining.enabled: false)"
    if state.last_triggered_at is not None and retraining.cooldown_seconds > 0:
        until = state.last_triggered_at + timedelta(seconds=retraining.cooldown_seconds)
        if now < until:
            return (
                Reason.COOLDOWN,
                f"cooling down until {format_time(until)} (cooldownSeconds {retraining.cooldown_seconds})",
            )
    if len(state.active_jobs) >= retraining.max_concurrent:
        running = ", ".join(state.active_jobs)
        return (
            Reason.MAX_CONCURRENT,
            f"{len(state.active_jobs)} run(s) active ({running}), maxConcurrent {retraining.max_concurrent}",
        )
    return None


def evaluate(
    retraining: Retraining | None,
    state: TriggerState,
    metrics: Mapping[str, Any] | None,
    annotations: Mapping[str, str] | None,
    now: datetime,
    *,
    isvc_name: str,
    unavailable: str | None = None,
) -> tuple[TriggerDecision, TriggerState]:
    """Decide whether a retraining run starts now; see the module docstring for the rules.

    `unavailable`: why no run could be built now (spec.retraining.fromTrainingJob missing): a
    block like the others, checked last, so a pending trigger waits unconsumed and is not
    counted (issue #19: a trigger that cannot act is not a run).

    `metrics`: this scrape's metrics (snake_case or camelCase keys), or None when no new scrape.
    `now` must be timezone-aware.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if retraining is None:
        return (
            TriggerDecision(False, None, Reason.NOT_CONFIGURED, "No spec.retraining."),
            replace(state, drift_breaches=0),
        )
    triggers = retraining.triggers
    observed = Metrics.model_validate(dict(metrics)) if metrics is not None else None

    breaches = state.drift_breaches
    if triggers.drift is None:
        breaches = 0
    elif observed is not None and observed.drift is not None:
        breaches = breaches + 1 if observed.drift > triggers.drift.threshold else 0

    pending: list[tuple[Trigger, Reason, str]] = []
    notes: list[str] = []
    manual = (annotations or {}).get(ANNOTATION_RETRAIN)
    if manual and manual != state.last_manual:
        pending.append(("manual", Reason.MANUAL, f"annotation {ANNOTATION_RETRAIN}={manual!r}"))

    if triggers.drift is not None:
        if breaches >= triggers.drift.consecutive:
            pending.append(
                (
                    "drift",
                    Reason.DRIFT,
                    f"drift above {triggers.drift.threshold:g} for {breaches} consecutive scrapes",
                )
            )
        elif breaches:
            notes.append(
                f"drift above {triggers.drift.threshold:g} for {breaches}/{triggers.drift.consecutive} scrapes"
            )

    accuracy = triggers.accuracy
    if accuracy is not None and observed is not None and observed.accuracy is not None:
        samples = observed.labelled_samples or 0
        if samples >= accuracy.min_samples and observed.accuracy < accuracy.min:
            pending.append(
                (
                    "accuracy",
                    Reason.ACCURACY,
                    f"accuracy {observed.accuracy:.3g} below {accuracy.min:g} on {samples} labelled samples",
                )
            )

    estimate = triggers.estimated_accuracy
    estimated = observed.estimated_accuracy if observed is not None else None
    if estimate is not None and estimated is not None and estimated < estimate.min:
        pending.append(
            (
                "estimatedAccuracy",
                Reason.ESTIMATED_ACCURACY,
                f"estimated accuracy {estimated:.3g} below {estimate.min:g} (before labels)",
            )
        )

    last_schedule = state.last_schedule
    slot_text: str | None = None
    if triggers.schedule:
        try:
            slot = cron.previous_fire(triggers.schedule, now)
        except cron.CronError as e:
            notes.append(f"schedule ignored: {e}")
        else:
            slot_text = format_time(slot)
            last = parse_time(state.last_schedule)
            if last is None:
                last_schedule = slot_text  # first sight: remember the slot, never fire a past one
            elif slot > last:
                pending.append(
                    ("schedule", Reason.SCHEDULE, f"schedule {triggers.schedule!r} slot {slot_text}")
                )

    current = replace(state, drift_breaches=breaches, last_schedule=last_schedule)
    kinds = tuple(kind for kind, _, _ in pending)
    if not pending:
        if not retraining.enabled:
            return TriggerDecision(False, None, Reason.DISABLED, "Retraining is disabled."), current
        detail = "; ".join(notes) if notes else "no trigger fired"
        return TriggerDecision(False, None, Reason.NO_TRIGGER, detail[0].upper() + detail[1:] + "."), current

    details = "; ".join(d for _, _, d in pending)
    blocked = _block(retraining, current, now)
    if blocked is None and unavailable:
        blocked = Reason.SOURCE_NOT_FOUND, unavailable
    if blocked is not None:
        reason, why = blocked
        return TriggerDecision(False, None, reason, f"Pending ({details}) but {why}.", pending=kinds), current

    trigger, reason, _ = pending[0]
    count = state.count + 1
    job = retraining_job_name(isvc_name, count)
    fired = replace(
        current,
        drift_breaches=0,
        last_triggered_at=now,
        active_jobs=(*current.active_jobs, job),
        count=count,
        last_manual=manual if "manual" in kinds else state.last_manual,
        last_schedule=slot_text if "schedule" in kinds else last_schedule,
    )
    message = f"Retraining run {job} for {details}."
    return TriggerDecision(True, trigger, reason, message, job_name=job, pending=kinds), fired


def retraining_status(
    previous: Mapping[str, Any] | None, state: TriggerState, decision: TriggerDecision
) -> dict[str, Any]:
    """status.retraining (camelCase) after `evaluate`.

    Keeps the previous fields the triggers do not own (lastOutcome, and lastTrigger/lastReason
    until the next run), writes the bookkeeping from `state`, and records the trigger and its
    message when the decision fired. status.metrics.driftBreaches is `state.drift_breaches`.
    """
    out = RetrainingStatus.model_validate(dict(previous or {})).to_dict()
    out.update(
        {
            "count": state.count,
            "activeJobs": list(state.active_jobs),
        }
    )
    for key, value in (
        ("lastTriggeredAt", format_time(state.last_triggered_at) if state.last_triggered_at else None),
        ("lastManual", state.last_manual),
        ("lastSchedule", state.last_schedule),
    ):
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    if decision.fire:
        out["lastTrigger"] = decision.trigger
        out["lastReason"] = decision.message
    return out


def _condition(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any]:
    return conditions.get(status.get("conditions"), ctype) or {}


def run_outcome(
    job: str,
    training_job: Mapping[str, Any] | None,
    model_version: Mapping[str, Any] | None,
    *,
    serving: str | None,
    canary: str | None,
    resolution: str,
) -> str | None:
    """status.retraining.lastOutcome: what became of the last retraining run `job`.

    `training_job` and `model_version` are the run's TrainingJob and the ModelVersion it produced
    (None when absent); `serving` and `canary` the versions now on the stable and canary tracks;
    `resolution` the version-resolution message (why the served version stays, when it does).
    None when the TrainingJob is gone (the previous outcome is kept).
    """
    if training_job is None:
        return None
    status = training_job.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Failed":
        failed = _condition(status, "Stalled") or _condition(status, "Ready")
        return f"{job} failed: {failed.get('message') or 'see its conditions'}"
    if phase != "Succeeded":
        return f"{job} is {phase}"
    mv = status.get("modelVersion")
    if not mv:
        return f"{job} succeeded; its ModelVersion is being created"
    if mv == serving:
        return f"{job} produced {mv}, now serving"
    if mv == canary:
        return f"{job} produced {mv}, in canary analysis"
    mv_status = (model_version or {}).get("status") or {}
    mv_phase = mv_status.get("phase")
    if mv_phase == "Failed":
        reason = mv_status.get("message") or _condition(mv_status, "ArtifactVerified").get("message")
        return f"{job} produced {mv}, which failed verification: {reason or 'see its conditions'}"
    if mv_phase != "Verified":
        return f"{job} produced {mv}, awaiting verification"
    gates = _condition(mv_status, "GatesPassed")
    if gates.get("status") == "False":
        return f"{job} produced {mv}, which did not pass its gates: {gates.get('message') or ''}".rstrip(": ")
    return f"{job} produced {mv}, not rolled out: {resolution}"


def retraining_condition(retraining: Mapping[str, Any] | None) -> tuple[bool, str, str]:
    """The InferenceService's Retraining condition from status.retraining: (status, reason, message).

    True while a retraining run is active (reason: its trigger); False when idle (reason
    NoRunYet or LastRunFinished, message: the last run's outcome).
    """
    r = retraining or {}
    active = list(r.get("activeJobs") or [])
    if active:
        trigger = str(r.get("lastTrigger") or "unknown")
        reason = f"{trigger[:1].upper()}{trigger[1:]}Trigger"
        return True, reason, f"{', '.join(active)} running: {r.get('lastReason') or 'retraining'}"
    if not r.get("count"):
        return False, "NoRunYet", "no retraining run so far"
    return False, "LastRunFinished", str(r.get("lastOutcome") or f"{r.get('count')} run(s) so far")
