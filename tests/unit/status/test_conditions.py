"""Conditions keep their transition time unless their status flips; the status patch writes
exactly what changed (and nothing when nothing did)."""

from __future__ import annotations

from typing import Any

import pytest

from mlops_operator.status.conditions import Cond, merge, status_patch

PATCHES: list[tuple[str, dict[str, Any] | None, dict[str, Any], dict[str, Any] | None]] = [
    ("unchanged", {"phase": "Running"}, {"phase": "Running"}, None),
    ("changed-scalar", {"phase": "Running"}, {"phase": "Succeeded"}, {"phase": "Succeeded"}),
    ("removed-key", {"phase": "Running", "message": "x"}, {"phase": "Running"}, {"message": None}),
    ("kopf-key-kept", {"kopf": {"progress": {}}}, {}, None),
    ("from-nothing", None, {"phase": "Pending"}, {"phase": "Pending"}),
    (
        "nested-change",
        {"canary": {"phase": "Progressing", "requests": 1}},
        {"canary": {"phase": "Promoted", "requests": 1}},
        {"canary": {"phase": "Promoted"}},
    ),
    (
        "nested-removed",
        {"canary": {"phase": "Progressing", "reason": "r"}},
        {"canary": {"phase": "Progressing"}},
        {"canary": {"reason": None}},
    ),
    # The server drops nulls: a nested null that is already absent is no change, and above all
    # must not turn into deleting the whole nested object.
    (
        "nested-null-already-absent",
        {"canary": {"phase": "Progressing"}},
        {"canary": {"phase": "Progressing", "errorRate": None}},
        None,
    ),
    (
        "list-replaced-whole",
        {"traffic": [{"percent": 100}]},
        {"traffic": [{"percent": 50}, {"percent": 50}]},
        {"traffic": [{"percent": 50}, {"percent": 50}]},
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), [c[1:] for c in PATCHES], ids=[c[0] for c in PATCHES])
def test_status_patch(
    old: dict[str, Any] | None, new: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    assert status_patch(old, new) == expected


def test_transition_time_moves_only_when_status_flips() -> None:
    first = merge(None, [Cond("Ready", "False", "Pending")], 1, "t1")
    same = merge(first, [Cond("Ready", "False", "StillPending", "m")], 2, "t2")
    flipped = merge(same, [Cond("Ready", "True", "Done")], 2, "t3")
    assert first[0]["lastTransitionTime"] == "t1"
    assert same[0]["lastTransitionTime"] == "t1"
    assert (same[0]["reason"], same[0]["observedGeneration"]) == ("StillPending", 2)
    assert flipped[0]["lastTransitionTime"] == "t3"


def _conds(ready: tuple[str, str], stalled: str = "False") -> list[dict[str, str]]:
    return [
        {"type": "Ready", "status": ready[0], "reason": ready[1], "message": f"{ready[1]} says why"},
        {"type": "Stalled", "status": stalled, "reason": "x"},
    ]


FAILURES = {
    "a stall is reported": (
        None,
        _conds(("False", "InvalidSpec"), "True"),
        ("InvalidSpec", "InvalidSpec says why"),
    ),
    "a wait only the user can end is reported": (
        _conds(("Unknown", "Pending")),
        _conds(("False", "StorageNotFound")),
        ("StorageNotFound", "StorageNotFound says why"),
    ),
    "once per transition, not per pass": (
        _conds(("False", "StorageNotFound")),
        _conds(("False", "StorageNotFound")),
        None,
    ),
    "a new failure reason is reported again": (
        _conds(("False", "StorageNotFound")),
        _conds(("False", "DuplicateVersion"), "True"),
        ("DuplicateVersion", "DuplicateVersion says why"),
    ),
    "progress is not a failure": (None, _conds(("False", "Training")), None),
    "ready is not a failure": (_conds(("False", "InvalidSpec"), "True"), _conds(("True", "Servable")), None),
}


@pytest.mark.parametrize(("old", "new", "expected"), FAILURES.values(), ids=FAILURES.keys())
def test_failure_to_report(old: Any, new: Any, expected: Any) -> None:
    from mlops_operator.status.conditions import failure_to_report

    assert failure_to_report(old, new) == expected
