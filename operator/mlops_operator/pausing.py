"""kopf's peering pause, made visible to the operator's own work queue.

kopf pauses a replica when a peer with a higher priority is alive: it closes that replica's
watch streams and stops its daemons. The operator runs its passes from its own queue
(reconcile/controller.py), which must stop too, or two replicas would act at once. kopf
keeps the pause toggle internal; it hands it to its orchestrator together with the run's
settings object, which the startup handler also receives. `install()` wraps the
orchestrator to note the toggle per settings object, and `toggle_for(settings)` returns it.
kopf is pinned (pyproject.toml) and tests/unit/operator/test_pausing.py fails if the hook
stops seeing the toggle; the peering cluster test proves the behaviour.
"""

from __future__ import annotations

import functools
from typing import Any

from kopf._core.reactor import orchestration

_TOGGLES: dict[int, Any] = {}


def install() -> None:
    """Wrap kopf's orchestrator once (idempotent)."""
    original = orchestration.orchestrator
    if getattr(original, "_mlops_pause_hook", False):
        return

    @functools.wraps(original)
    def orchestrator(*args: Any, settings: Any, operator_paused: Any, **kwargs: Any) -> Any:
        _TOGGLES[id(settings)] = operator_paused
        return original(*args, settings=settings, operator_paused=operator_paused, **kwargs)

    orchestrator._mlops_pause_hook = True  # type: ignore[attr-defined]
    orchestration.orchestrator = orchestrator


def toggle_for(settings: Any) -> Any | None:
    """kopf's pause toggle of the run that owns `settings` (None before that run started)."""
    return _TOGGLES.get(id(settings))


def forget(settings: Any) -> None:
    _TOGGLES.pop(id(settings), None)
