"""Tuning trials recorded in the TrainingJob's status as they finish (issue #23).

A trial's score first exists only in its pod's termination message. A node drain deletes
finished pods too, and an Indexed Job never runs a completed index again, so the status is the
only durable place for it: every pass merges the trials its pods report into `status.trials`,
and a recorded trial is never dropped or rewritten (restart-safe: the record is read back from
the status the last pass wrote). The best is picked from the records. All pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mlops_contract.estimators import HIGHER_IS_BETTER
from mlops_contract.timeutil import parse_time
from mlops_operator.reconcile.pods import PodResult, succeeded


def trial_record(result: PodResult) -> dict[str, Any] | None:
    """What status keeps of a finished trial: index, params, score, metric, duration, pod; None
    for a pod without a scored result or an index."""
    reported = result.result or {}
    score = reported.get("score")
    if result.index is None or isinstance(score, bool) or not isinstance(score, (int, float)):
        return None
    record: dict[str, Any] = {
        "index": result.index,
        "params": dict(reported.get("params") or {}),
        "score": float(score),
        "metric": str(reported.get("metric") or ""),
        "pod": result.pod,
    }
    started, finished = parse_time(result.started_at), parse_time(result.finished_at)
    if started is not None and finished is not None and finished >= started:
        record["durationSeconds"] = int((finished - started).total_seconds())
    return record


def record_trials(
    recorded: Iterable[Mapping[str, Any]] | None, results: Iterable[PodResult]
) -> list[dict[str, Any]]:
    """The recorded trials plus those the pods report that are not recorded yet, by index.

    A recorded trial wins over a pod of the same index (the record is what a past pass acted on);
    of several pods of one index, the last one with a score."""
    out: dict[int, dict[str, Any]] = {}
    for r in succeeded(results):
        record = trial_record(r)
        if record is not None:
            out[record["index"]] = record
    for kept in recorded or []:
        index = kept.get("index")
        if isinstance(index, int) and isinstance(kept.get("score"), (int, float)):
            out[index] = dict(kept)
    return [out[i] for i in sorted(out)]


def best_record(trials: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The trial with the best score; scores keep their metric's sign (rmse: lower is better);
    of equal scores the lowest index."""
    trials = list(trials)
    if not trials:
        return None

    def key(t: Mapping[str, Any]) -> tuple[float, int]:
        sign = 1.0 if HIGHER_IS_BETTER.get(str(t.get("metric")), True) else -1.0
        return (sign * float(t["score"]), -int(t["index"]))

    return max(trials, key=key)
