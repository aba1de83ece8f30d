"""Which ModelVersion an InferenceService should serve, from its spec and the model's versions.

`resolve` is pure and level-triggered: the same spec, versions, served name and rollback set
always give the same `Resolution`, so calling it on every reconcile changes nothing until an
input changes.

Rules:
- Pinned (`spec.version`): that version when its phase is Verified, else `name=None` with
  VersionNotFound / VersionFailed / VersionNotVerified / VersionRolledBack. A pin overrides
  gates, policy and approval (it is an explicit human choice).
- Policy: candidates are Verified versions whose GatesPassed condition is True, never one in
  `rolled_back`, and under manual promotion only those carrying the mlops.dev/approved-by
  annotation. `latest` picks the highest spec.version; `best` the best value of the policy
  metric (default: the primary metric of the newest candidate that names one), highest or
  lowest per `estimators.HIGHER_IS_BETTER` (unknown metrics: higher is better), ties to the
  newer version; versions without a value for that metric are not ranked.
- The incumbent: a chosen version replaces the served one only if its metric is better by at
  least `minImprovement` (when both have a value; with no values to compare, it replaces);
  otherwise the served one stays with reason NotBetter (not in shadow mode, spec.canary.mode
  shadow: there the candidate's live verdict decides, issue #22). Under `latest` an older candidate never
  displaces a newer served version. A served version that no longer exists or is not Verified
  is always replaced (by nothing, if there is no candidate). A served version that is merely no
  longer a candidate (gates failed, approval removed) stays until something replaces it.
- Manual promotion: when the version auto promotion would pick lacks approval, the message
  names it, and the reason is AwaitingApproval whenever the result is not a new version.
- `name=None` means "nothing servable is chosen": the caller keeps whatever runs and reports
  the reason; it never means "delete the Deployment".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from mlops_contract.api.common import ANNOTATION_APPROVED_BY
from mlops_contract.api.inferenceservice import InferenceServiceSpec, Policy
from mlops_contract.estimators import HIGHER_IS_BETTER
from mlops_operator.status import conditions

# Float noise must not turn "better by exactly minImprovement" into "not better".
EPSILON: Final = 1e-9

ModelVersion = Mapping[str, Any]


class Reason(StrEnum):
    PINNED = "Pinned"
    VERSION_NOT_FOUND = "VersionNotFound"
    VERSION_NOT_VERIFIED = "VersionNotVerified"
    VERSION_FAILED = "VersionFailed"
    VERSION_ROLLED_BACK = "VersionRolledBack"
    LATEST = "LatestVersion"
    BEST = "BestVersion"
    NOT_BETTER = "NotBetter"
    AWAITING_APPROVAL = "AwaitingApproval"
    NO_CANDIDATE = "NoCandidate"


@dataclass(frozen=True)
class Resolution:
    """The version to serve (`name`, `version` = its spec.version) or None, and why.

    `reason` is a CamelCase condition reason; `message` is for humans.
    """

    name: str | None
    reason: Reason
    message: str
    version: int | None = None


def name_of(mv: ModelVersion) -> str:
    return str(mv["metadata"]["name"])


def version_of(mv: ModelVersion) -> int:
    return int(mv.get("spec", {}).get("version", 0))


def phase_of(mv: ModelVersion) -> str | None:
    phase = (mv.get("status") or {}).get("phase")
    return str(phase) if phase is not None else None


def is_verified(mv: ModelVersion) -> bool:
    return phase_of(mv) == "Verified"


def condition_true(mv: ModelVersion, type_: str) -> bool:
    return conditions.is_true((mv.get("status") or {}).get("conditions"), type_)


def gates_passed(mv: ModelVersion) -> bool:
    return condition_true(mv, "GatesPassed")


def is_approved(mv: ModelVersion) -> bool:
    annotations = mv.get("metadata", {}).get("annotations") or {}
    return bool(str(annotations.get(ANNOTATION_APPROVED_BY, "")).strip())


def metric_value(mv: ModelVersion, metric: str | None) -> float | None:
    if metric is None:
        return None
    value = (mv.get("spec", {}).get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


def higher_is_better(metric: str) -> bool:
    return HIGHER_IS_BETTER.get(metric, True)


def _label(mv: ModelVersion) -> str:
    return f"{name_of(mv)} (v{version_of(mv)})"


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _newest_first(mvs: Sequence[ModelVersion]) -> list[ModelVersion]:
    return sorted(mvs, key=lambda mv: (version_of(mv), name_of(mv)), reverse=True)


def resolve(
    spec: InferenceServiceSpec,
    modelversions: Sequence[ModelVersion],
    serving: str | None,
    rolled_back: Collection[str] = frozenset(),
) -> Resolution:
    """Choose the ModelVersion to serve.

    `modelversions`: ModelVersion bodies (others' models and ones being deleted are ignored);
    `serving`: the name currently served (status.modelVersion), None at first;
    `rolled_back`: names a canary rolled back; the policy never picks them again.
    """
    versions = [
        mv
        for mv in modelversions
        if mv.get("spec", {}).get("model") == spec.model
        and not mv.get("metadata", {}).get("deletionTimestamp")
    ]
    if spec.version is not None:
        return _pinned(spec.version, versions, rolled_back)
    shadow = spec.canary is not None and spec.canary.mode == "shadow"
    return _policy(spec.policy or Policy(), versions, serving, rolled_back, shadow=shadow)


def _pinned(version: int, versions: Sequence[ModelVersion], rolled_back: Collection[str]) -> Resolution:
    matches = [mv for mv in versions if version_of(mv) == version]
    if not matches:
        return Resolution(None, Reason.VERSION_NOT_FOUND, f"No ModelVersion has version {version}.")
    # Version numbers are unique per model; should two claim one, prefer a Verified one, then by name.
    mv = max(matches, key=lambda m: (is_verified(m), name_of(m)))
    name = name_of(mv)
    if not is_verified(mv):
        phase = phase_of(mv) or "Pending"
        if phase == "Failed":
            detail = (mv.get("status") or {}).get("message")
            suffix = f": {detail}" if detail else "."
            return Resolution(None, Reason.VERSION_FAILED, f"Pinned {_label(mv)} failed verification{suffix}")
        return Resolution(
            None, Reason.VERSION_NOT_VERIFIED, f"Pinned {_label(mv)} is {phase}, not Verified yet."
        )
    if name in rolled_back:
        return Resolution(
            None,
            Reason.VERSION_ROLLED_BACK,
            f"Pinned {_label(mv)} was rolled back by its canary; pin another version.",
        )
    return Resolution(name, Reason.PINNED, f"Serving pinned {_label(mv)}.", version_of(mv))


def _default_metric(versions: Sequence[ModelVersion]) -> str | None:
    for mv in _newest_first(versions):
        primary = mv.get("spec", {}).get("primaryMetric")
        if primary:
            return str(primary)
    return None


def _pick(select: str, mvs: Sequence[ModelVersion], metric: str | None) -> ModelVersion | None:
    if select == "latest":
        return _newest_first(mvs)[0] if mvs else None
    if metric is None:
        return None
    sign = 1.0 if higher_is_better(metric) else -1.0
    ranked = [
        (sign * v, version_of(mv), name_of(mv), mv)
        for mv in mvs
        if (v := metric_value(mv, metric)) is not None
    ]
    return max(ranked, key=lambda r: r[:3])[3] if ranked else None


def _policy(
    policy: Policy,
    versions: Sequence[ModelVersion],
    serving: str | None,
    rolled_back: Collection[str],
    *,
    shadow: bool = False,
) -> Resolution:
    eligible = [mv for mv in versions if is_verified(mv) and gates_passed(mv)]
    fresh = [mv for mv in eligible if name_of(mv) not in rolled_back]
    manual = policy.promotion == "manual"
    candidates = [mv for mv in fresh if not manual or is_approved(mv)]
    metric = policy.metric or _default_metric(fresh or versions)
    select_reason = Reason.LATEST if policy.select == "latest" else Reason.BEST

    choice = _pick(policy.select, candidates, metric)
    auto_choice = _pick(policy.select, fresh, metric)
    unfiltered = _pick(policy.select, eligible, metric)

    by_name = {name_of(mv): mv for mv in versions}
    served = by_name.get(serving) if serving else None
    if served is not None and not is_verified(served):
        served = None
    chosen = name_of(choice) if choice is not None else None

    notes: list[str] = []
    if serving and served is None:
        mv = by_name.get(serving)
        gone = "no longer exists" if mv is None else f"is {phase_of(mv) or 'Pending'}, not Verified"
        notes.append(f"served {serving} {gone}")
    if unfiltered is not None and name_of(unfiltered) in rolled_back:
        notes.append(f"{_label(unfiltered)} was rolled back by its canary and is not chosen automatically")
    awaiting = (
        manual
        and auto_choice is not None
        and not is_approved(auto_choice)
        and name_of(auto_choice) not in (chosen, serving)
    )
    if awaiting and auto_choice is not None:
        notes.append(f"{_label(auto_choice)} awaits approval (annotation {ANNOTATION_APPROVED_BY})")

    def result(mv: ModelVersion, reason: Reason, lead: str) -> Resolution:
        return Resolution(name_of(mv), reason, "; ".join([lead, *notes]) + ".", version_of(mv))

    if choice is None:
        why = "no Verified version passes its gates"
        if candidates and policy.select == "best":
            why = f"no candidate has a value for metric {metric or '(none named)'}"
        elif fresh and manual:
            why = "no Verified version passing its gates is approved"
        reason = Reason.AWAITING_APPROVAL if awaiting else Reason.NO_CANDIDATE
        if served is not None:
            return result(served, reason, f"Keeping {_label(served)}: {why}")
        return Resolution(None, reason, "; ".join([f"Nothing to serve: {why}", *notes]) + ".")

    if served is not None and chosen != serving:
        if policy.select == "latest" and version_of(choice) < version_of(served):
            # latest only moves forward: an older candidate never displaces a newer served version.
            reason = Reason.AWAITING_APPROVAL if awaiting else Reason.LATEST
            return result(served, reason, f"Keeping {_label(served)}: newer than every candidate")
        # Shadow mode (issue #22): live labelled traffic judges the candidate against the served
        # version on the same requests, so the offline comparison does not hold it back.
        verdict = None if shadow else _compare(choice, served, metric, policy.min_improvement)
        if verdict is not None:
            return result(served, Reason.NOT_BETTER, f"Keeping {_label(served)}: {verdict}")

    if chosen == serving:
        reason = Reason.AWAITING_APPROVAL if awaiting else select_reason
        return result(choice, reason, f"Serving {_label(choice)}, the {policy.select} candidate")
    lead = f"Chose {_label(choice)}, the {policy.select} candidate"
    value = metric_value(choice, metric)
    if policy.select == "best" and value is not None:
        lead += f" by {metric} {_fmt(value)}"
    return result(choice, select_reason, lead)


def _compare(
    candidate: ModelVersion, served: ModelVersion, metric: str | None, min_improvement: float
) -> str | None:
    """None when `candidate` may replace `served`; else why not (with both values)."""
    new = metric_value(candidate, metric)
    old, on = baseline_value(candidate, served, metric), "on the same held-out rows"
    if old is None:
        # No like-for-like score: each version's metric on its own held-out rows.
        old, on = metric_value(served, metric), "each on its own held-out rows"
    if metric is None or new is None or old is None:
        return None  # nothing to compare: gates were the guard
    improvement = new - old if higher_is_better(metric) else old - new
    if improvement + EPSILON >= min_improvement:
        return None
    return (
        f"{_label(candidate)} {metric} {_fmt(new)} is not better than {name_of(served)}'s {_fmt(old)} "
        f"({on}) by at least minImprovement {_fmt(min_improvement)}"
    )


def baseline_value(candidate: ModelVersion, served: ModelVersion, metric: str | None) -> float | None:
    """The served version's `metric` as scored on the candidate's held-out rows, when the
    candidate's training run scored it (spec.baseline names the served version)."""
    baseline = (candidate.get("spec") or {}).get("baseline") or {}
    if metric is None or baseline.get("modelVersion") != name_of(served):
        return None
    value = (baseline.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None
