"""Reading results the trainer leaves in its pods' termination messages."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class PodResult:
    pod: str
    phase: str
    exit_code: int | None
    result: dict[str, Any] | None
    text: str
    index: int | None


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
    )


def succeeded(results: Iterable[PodResult]) -> list[PodResult]:
    return [r for r in results if r.phase == "Succeeded" and r.result and r.result.get("ok")]


def last_failure(results: Iterable[PodResult]) -> PodResult | None:
    failed = [r for r in results if r.phase == "Failed"]
    return failed[-1] if failed else None


def failure_message(result: PodResult | None, fallback: str) -> str:
    if result is None:
        return fallback
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
