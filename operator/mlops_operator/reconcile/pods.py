"""Reading results the trainer leaves in its pods' termination messages."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mlops_operator.build.trainingjob import EXIT_BAD_INPUT


@dataclass(frozen=True)
class PodResult:
    pod: str
    phase: str
    exit_code: int | None
    result: dict[str, Any] | None
    text: str
    index: int | None
    # The kubelet's reason for the container's end (OOMKilled, Error, Completed) and its memory limit.
    reason: str | None = None
    memory_limit: str | None = None
    # When the container ran (RFC 3339, from its terminated state): a trial's duration.
    started_at: str | None = None
    finished_at: str | None = None


class Lister(Protocol):
    async def list(
        self, kind: str, namespace: str, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]: ...


async def results(
    kube: Lister, namespace: str, selector: Mapping[str, str], container: str
) -> list[PodResult]:
    """What the pods matching `selector` report, oldest first."""
    pods = await kube.list("Pod", namespace, selector)
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
    return [pod_result(p, container) for p in pods]


def pod_result(pod: Mapping[str, Any], container: str) -> PodResult:
    status = pod.get("status") or {}
    limit = None
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
    terminated: Mapping[str, Any] = {}
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == container:
            terminated = (
                (cs.get("state") or {}).get("terminated")
                or (cs.get("lastState") or {}).get("terminated")
                or {}
            )
    text = str(terminated.get("message") or "").strip()
    parsed: dict[str, Any] | None = None
    if text.startswith("{"):
        try:
            value = json.loads(text)
            parsed = value if isinstance(value, dict) else None
        except ValueError:
            parsed = None
    annotations = pod["metadata"].get("annotations") or {}
    index = annotations.get("batch.kubernetes.io/job-completion-index")
    return PodResult(
        pod=pod["metadata"]["name"],
        phase=str(status.get("phase") or "Unknown"),
        exit_code=terminated.get("exitCode"),
        result=parsed,
        text=text,
        index=int(index) if index is not None and str(index).isdigit() else None,
        reason=terminated.get("reason"),
        memory_limit=None if limit is None else str(limit),
        started_at=terminated.get("startedAt"),
        finished_at=terminated.get("finishedAt"),
    )


def succeeded(results: Iterable[PodResult]) -> list[PodResult]:
    return [r for r in results if r.phase == "Succeeded" and r.result and r.result.get("ok")]


def last_failure(results: Iterable[PodResult]) -> PodResult | None:
    failed = [r for r in results if r.phase == "Failed"]
    return failed[-1] if failed else None


def oom_killed(result: PodResult | None) -> bool:
    """The kernel killed the container for exceeding its memory limit (issue #23)."""
    return result is not None and result.reason == "OOMKilled"


def failure_reason(result: PodResult | None, fallback: str) -> str:
    """OOMKilled when the last failed pod was; for the trainer's exit code 2 its result's reason
    (BadInput, or InsufficientMemory from the memory pre-flight, issue #23); else `fallback`."""
    if oom_killed(result):
        return "OOMKilled"
    if result is not None and result.exit_code == EXIT_BAD_INPUT:
        reason = (result.result or {}).get("reason")
        return reason if isinstance(reason, str) and reason.isalnum() else "BadInput"
    return fallback


def failure_message(result: PodResult | None, fallback: str) -> str:
    if result is None:
        return fallback
    if oom_killed(result):
        limit = f"its memory limit ({result.memory_limit})" if result.memory_limit else "the memory it had"
        return (
            f"pod {result.pod} was OOMKilled: the trainer needed more than {limit}; raise "
            "spec.resources.limits.memory (the trainer's log names the data size it loaded)"
        )
    if result.result and result.result.get("message"):
        return str(result.result["message"])
    if result.text:
        return result.text[-1000:]
    return f"{fallback} (pod {result.pod} exit code {result.exit_code})"


def job_condition(job: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            found: Mapping[str, Any] = cond
            return found
    return None
