"""The private parts of kopf the operator uses, held to the pinned minor (issue #16).

`kube.AsyncKube` sends through `kopf._cogs.clients.api.request` and catches
`kopf._cogs.clients.errors.APIError`; `pausing` wraps `kopf._core.reactor.orchestration.orchestrator`.
kopf makes no promise about them, so pyproject.toml pins kopf to one minor and this test fails
loudly, naming what moved, before a kopf upgrade can break the operator at run time.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

from kopf._cogs.clients import api, errors
from kopf._core.reactor import orchestration

PINNED_MINOR = (1, 45)


def test_kopf_is_the_pinned_minor() -> None:
    installed = tuple(int(p) for p in version("kopf").split(".")[:2])
    assert installed == PINNED_MINOR, (
        f"kopf {version('kopf')} is installed; kube.py and pausing.py were written against {PINNED_MINOR}: "
        "check kopf's private modules, then move the pin and this test together"
    )


def test_the_request_function_takes_what_asynckube_passes() -> None:
    params = inspect.signature(api.request).parameters
    assert list(params)[:2] == ["method", "url"], list(params)
    for name in ("settings", "payload", "headers", "backoffs", "logger"):
        assert name in params, f"kopf._cogs.clients.api.request lost its {name!r} parameter"
    assert inspect.iscoroutinefunction(api.request)


def test_api_errors_carry_the_status_asynckube_reads() -> None:
    assert issubclass(errors.APINotFoundError, errors.APIError)
    error = errors.APINotFoundError({"message": "gone"}, status=404, headers={})
    assert error.status == 404


def test_the_orchestrator_takes_the_pause_toggle() -> None:
    params = inspect.signature(orchestration.orchestrator).parameters
    assert {"settings", "operator_paused"} <= set(params), list(params)
